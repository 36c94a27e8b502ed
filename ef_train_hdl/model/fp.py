"""Vectorised numpy reference of the accelerator's binary32 arithmetic (docs/numerics.md).

Every arithmetic operation of the numpy model goes through :func:`fmul` and :func:`fadd`, so
the model computes what the FP units compute, bit for bit:

- IEEE-754 binary32, each operation rounded once to nearest, ties to even (numpy float32);
- subnormal operands are read as zero of the same sign (denormals-are-zero);
- a subnormal result is flushed to zero of its sign, *after* rounding: a result that rounds
  up to the smallest normal, 2**-126, stays normal (this is plain float32 rounding followed
  by a flush, not rounding with an unbounded exponent);
- infinities follow IEEE; every NaN result is the canonical quiet NaN 0x7FC00000;
- overflow rounds to infinity; exact cancellation gives +0.

The functions take and return ``np.float32`` arrays (scalars are accepted) and never warn.
"""

import numpy as np

__all__ = [
    "CANONICAL_NAN", "MIN_NORMAL", "as_f32", "bits", "from_bits", "ftz", "canonicalize",
    "fmul", "fadd", "fsub", "fmul_bf16", "to_bf16", "tree_sum",
]

#: The one NaN the hardware produces.
CANONICAL_NAN = np.uint32(0x7FC00000)
#: Smallest positive normal binary32, 2**-126.
MIN_NORMAL = np.float32(2.0 ** -126)


def as_f32(x):
    """``x`` as a float32 array (no copy when it already is one)."""
    return np.asarray(x, dtype=np.float32)


def bits(x):
    """The binary32 encodings of ``x`` as uint32."""
    return as_f32(x).view(np.uint32)


def from_bits(u):
    """float32 values with the binary32 encodings ``u``."""
    return np.asarray(u, dtype=np.uint32).view(np.float32)


def ftz(x):
    """``x`` with subnormals replaced by zero of the same sign."""
    u = bits(x)
    subnormal = ((u & 0x7F800000) == 0) & ((u & 0x007FFFFF) != 0)
    return from_bits(np.where(subnormal, u & 0x80000000, u))


def canonicalize(x):
    """``x`` with every NaN replaced by the canonical quiet NaN 0x7FC00000."""
    x = as_f32(x)
    return from_bits(np.where(np.isnan(x), CANONICAL_NAN, x.view(np.uint32)))


def _finish(x):
    return canonicalize(ftz(x))


def fmul(a, b):
    """Product of binary32 ``a`` and ``b`` under the hardware contract."""
    with np.errstate(all="ignore"):
        return _finish(ftz(a) * ftz(b))


def fadd(a, b):
    """Sum of binary32 ``a`` and ``b`` under the hardware contract."""
    with np.errstate(all="ignore"):
        return _finish(ftz(a) + ftz(b))


def fsub(a, b):
    """``a - b``: the adder with the sign of ``b`` inverted (NaN stays NaN)."""
    return fadd(a, from_bits(bits(b) ^ np.uint32(0x80000000)))


def to_bf16(x):
    """``x`` truncated to bfloat16 (top 16 bits of binary32), flushed; NaN stays NaN."""
    x = ftz(x)
    u = bits(x)
    truncated = from_bits(u & np.uint32(0xFFFF0000))
    return np.where(np.isnan(x), x, truncated).astype(np.float32)


def fmul_bf16(a, b):
    """The optional narrow multiplier: bfloat16 operands, exact product, one rounding.

    Two 8-bit significands give an exact 16-bit product, so binary32 multiplication of the
    truncated operands rounds only on overflow or underflow.
    """
    return fmul(to_bf16(a), to_bf16(b))


def tree_sum(x, axis=-1):
    """Sum of ``x`` along ``axis`` by the adder tree's fixed pairing.

    The length along ``axis`` must be a power of two. Level by level, element ``2i`` is added
    to element ``2i + 1`` (left operand first): ``((x0 + x1) + (x2 + x3)) + ...``.
    """
    x = np.moveaxis(as_f32(x), axis, -1)
    n = x.shape[-1]
    if n & (n - 1) or n == 0:
        raise ValueError(f"tree_sum needs a power-of-two length, not {n}")
    while x.shape[-1] > 1:
        x = fadd(x[..., 0::2], x[..., 1::2])
    return x[..., 0]
