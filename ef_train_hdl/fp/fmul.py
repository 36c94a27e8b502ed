"""Pipelined binary32 multiplier of the PE array.

One multiplier sits in every PE; FP, BP and WU share it. Data flow: operands from the PE's
registers -> product -> the lane's adder tree (FP/BP) or the PE's accumulator (WU).
"""

from amaranth.hdl import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ef_train_hdl.config import FMUL_LATENCY, MULT_FORMATS


class FMul(wiring.Component):
    """Binary32 multiplier, round to nearest even, flush-to-zero (docs/numerics.md section 1).

    Latency :data:`~ef_train_hdl.config.FMUL_LATENCY` (4) cycles from ``a``/``b``/``i_valid`` to
    ``result``/``o_valid``; throughput one product per cycle. No back-pressure and no enable:
    every stage advances every cycle, so the unit is a plain shift of registers the user can
    count on (see docs/fp_units.md).

    Stages: (1) classify operands and add exponents, registering the significands (the DSP's
    A/B registers); (2) the 24 x 24 significand product (the DSP's M/P registers: two DSP48E2
    on UltraScale+); (3) one-bit normalisation, guard and sticky; (4) round, flush, pack.

    Parameters
    ----------
    mult_format : str
        ``"fp32"``, or ``"bf16"``: both operands truncated to their top 16 bits, an exact
        8 x 8-bit significand product (no DSP needed), rounded once to binary32.

    Members
    -------
    a, b : In(32)
        Operands, binary32 bit patterns.
    i_valid : In(1)
        ``a`` and ``b`` hold an operation this cycle.
    result : Out(32)
        The product of the operands given ``latency`` cycles earlier.
    o_valid : Out(1)
        ``i_valid`` delayed by ``latency`` cycles.
    """

    a: In(32)
    b: In(32)
    i_valid: In(1)
    result: Out(32)
    o_valid: Out(1)

    def __init__(self, mult_format="fp32"):
        if mult_format not in MULT_FORMATS:
            raise ValueError(f"mult_format must be one of {', '.join(MULT_FORMATS)}, "
                             f"not {mult_format!r}")
        self.mult_format = mult_format
        #: Cycles from operands to product.
        self.latency = FMUL_LATENCY
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        bf16 = self.mult_format == "bf16"

        # -- stage 1: classify, exponent sum, significand operands --------------------------
        def unpack(x):
            e = x[23:31]
            f = x[0:23]
            zero = e == 0
            inf = (e == 0xFF) & (f == 0)
            nan = (e == 0xFF) & (f != 0)
            return e, f, zero, inf, nan

        ea, fa, za, ia, na = unpack(self.a)
        eb, fb, zb, ib, nb = unpack(self.b)

        s1_valid = Signal()
        s1_sign = Signal()
        s1_nan = Signal()
        s1_inf = Signal()
        s1_zero = Signal()
        s1_exp = Signal(signed(11))
        if bf16:
            s1_ma = Signal(8)
            s1_mb = Signal(8)
            m.d.sync += [s1_ma.eq(Cat(fa[16:23], 1)), s1_mb.eq(Cat(fb[16:23], 1))]
        else:
            s1_ma = Signal(24)
            s1_mb = Signal(24)
            m.d.sync += [s1_ma.eq(Cat(fa, 1)), s1_mb.eq(Cat(fb, 1))]
        m.d.sync += [
            s1_valid.eq(self.i_valid),
            s1_sign.eq(self.a[31] ^ self.b[31]),
            s1_nan.eq(na | nb | (ia & zb) | (za & ib)),
            s1_inf.eq(ia | ib),
            s1_zero.eq(za | zb),
            s1_exp.eq(ea + eb - 127),
        ]

        # -- stage 2: significand product (DSP M register) -----------------------------------
        s2_valid = Signal()
        s2_sign = Signal()
        s2_nan = Signal()
        s2_inf = Signal()
        s2_zero = Signal()
        s2_exp = Signal(signed(11))
        s2_prod = Signal(48)
        prod = s1_ma * s1_mb
        if bf16:
            prod = Cat(C(0, 32), prod)
        m.d.sync += [
            s2_valid.eq(s1_valid), s2_sign.eq(s1_sign), s2_nan.eq(s1_nan),
            s2_inf.eq(s1_inf), s2_zero.eq(s1_zero), s2_exp.eq(s1_exp), s2_prod.eq(prod),
        ]

        # -- stage 3: normalise (one bit), guard and sticky; the exponent's range flags for
        #    both outcomes of the rounding carry, so that stage 4 only selects
        s3_valid = Signal()
        s3_sign = Signal()
        s3_nan = Signal()
        s3_inf = Signal()
        s3_zero = Signal()
        s3_mant = Signal(24)
        s3_round = Signal()
        s3_exp = Signal(8)
        s3_exp_plus1 = Signal(8)
        s3_tiny = Signal()           # exponent <= 0 before rounding: flushed ...
        s3_to_min_normal = Signal()  # ... unless it rounds up to 2**-126 on the IEEE grid
        s3_huge = Signal()
        s3_huge_plus1 = Signal()
        top = s2_prod[47]
        mant = Mux(top, s2_prod[24:48], s2_prod[23:47])
        guard = Mux(top, s2_prod[23], s2_prod[22])
        sticky = Mux(top, s2_prod[0:23] != 0, s2_prod[0:22] != 0)
        exp = Signal(signed(11))
        m.d.comb += exp.eq(s2_exp + top)
        m.d.sync += [
            s3_valid.eq(s2_valid), s3_sign.eq(s2_sign), s3_nan.eq(s2_nan),
            s3_inf.eq(s2_inf), s3_zero.eq(s2_zero),
            s3_mant.eq(mant),
            s3_round.eq(guard & (sticky | mant[0])),
            s3_exp.eq(exp[0:8]),
            s3_exp_plus1.eq((exp + 1)[0:8]),
            s3_tiny.eq(exp <= 0),
            # The contract rounds on the gradual-underflow grid, then flushes: an exact value
            # in [2**-126 - 2**-150, 2**-126) rounds up to the smallest normal and is kept.
            # Before rounding that window is exponent 0 with all 24 significand bits set.
            s3_to_min_normal.eq((exp == 0) & (mant == 0xFFFFFF)),
            s3_huge.eq(exp >= 0xFF),
            s3_huge_plus1.eq(exp >= 0xFE),
        ]

        # -- stage 4: round, flush, pack. A carry out of the rounding leaves the fraction all
        #    zeros, so the fraction is the low 23 bits either way.
        rounded = Signal(25)
        m.d.comb += rounded.eq(s3_mant + s3_round)
        carry = rounded[24]
        result = Signal(32)
        with m.If(s3_nan):
            m.d.comb += result.eq(0x7FC00000)
        with m.Elif(s3_inf):
            m.d.comb += result.eq(Cat(C(0, 23), C(0xFF, 8), s3_sign))
        with m.Elif(s3_zero):
            m.d.comb += result.eq(Cat(C(0, 31), s3_sign))
        with m.Elif(s3_to_min_normal):
            m.d.comb += result.eq(Cat(C(0, 23), C(1, 8), s3_sign))
        with m.Elif(s3_tiny):
            m.d.comb += result.eq(Cat(C(0, 31), s3_sign))
        with m.Elif(Mux(carry, s3_huge_plus1, s3_huge)):
            m.d.comb += result.eq(Cat(C(0, 23), C(0xFF, 8), s3_sign))
        with m.Else():
            m.d.comb += result.eq(Cat(rounded[0:23], Mux(carry, s3_exp_plus1, s3_exp), s3_sign))
        m.d.sync += [self.result.eq(result), self.o_valid.eq(s3_valid)]
        return m
