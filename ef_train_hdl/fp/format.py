"""The binary32 word as an Amaranth data layout."""

from amaranth.lib import data

__all__ = ["Float32"]


class Float32(data.Struct):
    """IEEE-754 binary32: 23-bit fraction, 8-bit biased exponent, sign (LSB first)."""

    mantissa: 23
    exponent: 8
    sign: 1
