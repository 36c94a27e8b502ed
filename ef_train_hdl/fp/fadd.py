"""Pipelined binary32 adder of the PE array.

The adder trees (FP/BP), the accumulators (all phases) and the SGD unit are built from it.
"""

from amaranth.hdl import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ef_train_hdl.config import FADD_LATENCY


class FAdd(wiring.Component):
    """Binary32 adder, round to nearest even, flush-to-zero (docs/numerics.md section 1).

    Latency :data:`~ef_train_hdl.config.FADD_LATENCY` (5) cycles; throughput one sum per cycle;
    no back-pressure and no enable (see :class:`~ef_train_hdl.fp.FMul`). Subtraction is addition
    with the sign bit of ``b`` inverted by the caller.

    Stages: (1) classify, order the operands by magnitude, exponent difference; (2) align the
    smaller significand with guard, round and sticky bits; (3) add or subtract; (4) leading-zero
    count and normalising shift; (5) round to nearest even, flush, pack.

    Members
    -------
    a, b : In(32)
        Operands, binary32 bit patterns.
    i_valid : In(1)
        ``a`` and ``b`` hold an operation this cycle.
    result : Out(32)
        The sum of the operands given ``latency`` cycles earlier.
    o_valid : Out(1)
        ``i_valid`` delayed by ``latency`` cycles.
    """

    a: In(32)
    b: In(32)
    i_valid: In(1)
    result: Out(32)
    o_valid: Out(1)

    def __init__(self):
        #: Cycles from operands to sum.
        self.latency = FADD_LATENCY
        super().__init__()

    def elaborate(self, platform):
        m = Module()

        # -- stage 1: classify, order by magnitude ----------------------------------------
        def unpack(x):
            e = x[23:31]
            f = x[0:23]
            return e, f, e == 0, (e == 0xFF) & (f == 0), (e == 0xFF) & (f != 0)

        ea, fa, za, ia, na = unpack(self.a)
        eb, fb, zb, ib, nb = unpack(self.b)
        # Subnormals read as zero: their magnitude for the ordering is zero too.
        mag_a = Mux(za, 0, self.a[0:31])
        mag_b = Mux(zb, 0, self.b[0:31])
        swap = mag_b > mag_a

        s1 = dict(valid=Signal(), nan=Signal(), inf=Signal(), inf_sign=Signal(),
                  both_zero=Signal(), zero_sign=Signal(), sign=Signal(), sub=Signal(),
                  exp=Signal(8), sig_big=Signal(24), sig_small=Signal(24), diff=Signal(8),
                  small_zero=Signal())
        big_e = Mux(swap, eb, ea)
        small_e = Mux(swap, ea, eb)
        m.d.sync += [
            s1["valid"].eq(self.i_valid),
            s1["nan"].eq(na | nb | (ia & ib & (self.a[31] != self.b[31]))),
            s1["inf"].eq(ia | ib),
            s1["inf_sign"].eq(Mux(ia, self.a[31], self.b[31])),
            s1["both_zero"].eq(za & zb),
            s1["zero_sign"].eq(self.a[31] & self.b[31]),
            s1["sign"].eq(Mux(swap, self.b[31], self.a[31])),
            s1["sub"].eq(self.a[31] ^ self.b[31]),
            s1["exp"].eq(big_e),
            s1["sig_big"].eq(Cat(Mux(swap, fb, fa), 1)),
            s1["sig_small"].eq(Mux(Mux(swap, za, zb), 0, Cat(Mux(swap, fa, fb), 1))),
            s1["diff"].eq(big_e - small_e),
        ]

        # -- stage 2: align the smaller operand (3 extra bits: guard, round, sticky) ------
        s2 = dict(valid=Signal(), nan=Signal(), inf=Signal(), inf_sign=Signal(),
                  both_zero=Signal(), zero_sign=Signal(), sign=Signal(), sub=Signal(),
                  exp=Signal(8), big=Signal(27), small=Signal(27))
        wide = Signal(24 + 27)
        m.d.comb += wide.eq(Cat(C(0, 27), s1["sig_small"]) >> Mux(s1["diff"] > 27, 27, s1["diff"]))
        # wide[24:51] is (sig << 3) >> diff; what falls below bit 24 folds into the sticky bit
        aligned = Cat(wide[0:25] != 0, wide[25:51])
        for key in ("valid", "nan", "inf", "inf_sign", "both_zero", "zero_sign", "sign",
                    "sub", "exp"):
            m.d.sync += s2[key].eq(s1[key])
        m.d.sync += [
            s2["big"].eq(Cat(C(0, 3), s1["sig_big"])),
            s2["small"].eq(aligned),
        ]

        # -- stage 3: add or subtract (|big| >= |small|, so the difference is not negative)
        s3 = dict(valid=Signal(), nan=Signal(), inf=Signal(), inf_sign=Signal(),
                  both_zero=Signal(), zero_sign=Signal(), sign=Signal(),
                  exp=Signal(8), sum=Signal(28))
        for key in ("valid", "nan", "inf", "inf_sign", "both_zero", "zero_sign", "sign", "exp"):
            m.d.sync += s3[key].eq(s2[key])
        m.d.sync += s3["sum"].eq(Mux(s2["sub"], s2["big"] - s2["small"], s2["big"] + s2["small"]))

        # -- stage 4: normalise ---------------------------------------------------------------
        s4 = dict(valid=Signal(), nan=Signal(), inf=Signal(), inf_sign=Signal(),
                  both_zero=Signal(), zero_sign=Signal(), sign=Signal(),
                  exp=Signal(signed(10)), mant=Signal(27), exact_zero=Signal())
        total = s3["sum"]
        lzc = Signal(range(28))
        # leading zeros of total[0:27] (bit 26 is the hidden-bit position)
        with m.If(total[0:27] == 0):
            m.d.comb += lzc.eq(27)
        for i in range(27):
            with m.If(total[26 - i] & (total[27 - i:27] == 0 if i else 1)):
                m.d.comb += lzc.eq(i)
        shifted_left = Signal(27)
        m.d.comb += shifted_left.eq((total[0:27] << lzc)[0:27])
        shifted_right = Cat(total[1] | total[0], total[2:28])
        for key in ("valid", "nan", "inf", "inf_sign", "both_zero", "zero_sign", "sign"):
            m.d.sync += s4[key].eq(s3[key])
        m.d.sync += [
            s4["exact_zero"].eq(total == 0),
            s4["exp"].eq(Mux(total[27], s3["exp"] + 1, s3["exp"] - lzc)),
            s4["mant"].eq(Mux(total[27], shifted_right, shifted_left)),
        ]

        # -- stage 5: round to nearest even, flush, pack --------------------------------------
        mant = s4["mant"]
        round_up = mant[2] & (mant[1] | mant[0] | mant[3])
        rounded = Signal(25)
        m.d.comb += rounded.eq(mant[3:27] + round_up)
        exp_r = Signal(signed(11))
        m.d.comb += exp_r.eq(s4["exp"] + rounded[24])
        frac = Mux(rounded[24], rounded[1:24], rounded[0:23])
        result = Signal(32)
        with m.If(s4["nan"]):
            m.d.comb += result.eq(0x7FC00000)
        with m.Elif(s4["inf"]):
            m.d.comb += result.eq(Cat(C(0, 23), C(0xFF, 8), s4["inf_sign"]))
        with m.Elif(s4["both_zero"]):
            m.d.comb += result.eq(Cat(C(0, 31), s4["zero_sign"]))
        with m.Elif(s4["exact_zero"]):
            m.d.comb += result.eq(0)  # exact cancellation: +0 under round to nearest
        with m.Elif(s4["exp"] <= 0):
            # Sums of normals are multiples of 2**-149: a tiny one is exact, then flushed.
            m.d.comb += result.eq(Cat(C(0, 31), s4["sign"]))
        with m.Elif(exp_r >= 0xFF):
            m.d.comb += result.eq(Cat(C(0, 23), C(0xFF, 8), s4["sign"]))
        with m.Else():
            m.d.comb += result.eq(Cat(frac, exp_r[0:8], s4["sign"]))
        m.d.sync += [self.result.eq(result), self.o_valid.eq(s4["valid"])]
        return m
