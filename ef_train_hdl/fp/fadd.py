"""Pipelined binary32 adder of the PE array.

The adder trees (FP/BP), the accumulators (all phases) and the SGD unit are built from it.
"""

from amaranth.hdl import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ef_train_hdl.config import FADD_LATENCY


class FAdd(wiring.Component):
    """Binary32 adder, round to nearest even, flush-to-zero (docs/numerics.md section 1).

    Latency :data:`~ef_train_hdl.config.FADD_LATENCY` (7) cycles; throughput one sum per cycle;
    no back-pressure and no enable (see :class:`~ef_train_hdl.fp.FMul`). Subtraction is addition
    with the sign bit of ``b`` inverted by the caller.

    Stages, each a few LUT levels deep so that the unit is not what limits the clock:
    (1) per-operand flags, order the operands by magnitude, both exponent differences;
    (2) combine the flags into NaN/infinity, swap, cap the shift; (3) align the smaller significand; (4) fold the shifted-out bits into a sticky bit,
    add or subtract; (5) leading-zero count; (6) normalising shift, exponent and its range
    flags; (7) round to nearest even, flush, pack.

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

        def stage(prev, **signals):
            """Register ``signals`` (name: value) plus every field of ``prev`` not overridden."""
            out = {}
            for name, value in {**{k: v for k, v in prev.items() if k not in signals},
                                **signals}.items():
                reg = Signal.like(value, name=f"{name}_s{stage.n}") if isinstance(value, Signal) \
                    else Signal(Value.cast(value).shape(), name=f"{name}_s{stage.n}")
                m.d.sync += reg.eq(value)
                out[name] = reg
            stage.n += 1
            return out
        stage.n = 1

        a, b = self.a, self.b
        ea, eb = a[23:31], b[23:31]
        fa, fb = a[0:23], b[0:23]
        za, zb = ea == 0, eb == 0

        # 1: classify; order by magnitude. Raw magnitudes order correctly even with
        #    subnormals: a subnormal (read as zero) is below every normal, and two of them
        #    make a zero sum whichever way round.
        #    Only per-operand flags here: combining them beside the magnitude comparison
        #    made this stage one of the deepest; stage 2 has the slack.
        s = stage({},
            valid=self.i_valid,
            ones_a=ea == 0xFF, ones_b=eb == 0xFF,
            frac0_a=fa == 0, frac0_b=fb == 0,
            both_zero=za & zb,
            zero_sign=a[31] & b[31],
            swap=b[0:31] > a[0:31],
            diff_ab=ea - eb,
            diff_ba=eb - ea,
            sub=a[31] ^ b[31],
            a=a, b=b, za=za, zb=zb)

        # 2: swap; the shift amount, capped where everything falls into the sticky bit
        big = Mux(s["swap"], s["b"], s["a"])
        small = Mux(s["swap"], s["a"], s["b"])
        small_zero = Mux(s["swap"], s["za"], s["zb"])
        diff = Mux(s["swap"], s["diff_ba"], s["diff_ab"])[0:8]
        ia, ib = s["ones_a"] & s["frac0_a"], s["ones_b"] & s["frac0_b"]
        na, nb = s["ones_a"] & ~s["frac0_a"], s["ones_b"] & ~s["frac0_b"]
        s = stage({k: s[k] for k in ("valid", "both_zero", "zero_sign", "sub")},
            nan=na | nb | (ia & ib & s["sub"]),
            inf=ia | ib,
            inf_sign=Mux(ia, s["a"][31], s["b"][31]),
            sign=big[31],
            exp=big[23:31],
            sig_big=Cat(big[0:23], 1),
            sig_small=Mux(small_zero, 0, Cat(small[0:23], 1)),
            shift=Mux(diff > 27, 27, diff)[0:5])

        # 3: align the smaller significand (three guard bits below it); the bits that fall
        #    out below the guards only matter as the sticky bit: whether any of the
        #    ``shift - 3`` lowest bits of the significand is set (a mask, not a wider shift)
        aligned = Signal(27)
        m.d.comb += aligned.eq(Cat(C(0, 3), s["sig_small"]) >> s["shift"])
        lost = Signal(24)
        for i in range(24):
            m.d.comb += lost[i].eq(s["sig_small"][i] & (s["shift"] > i + 3))
        s = stage({k: v for k, v in s.items() if k not in ("sig_small", "shift")},
            small_hi=aligned, small_lo=lost != 0)

        # 4: add or subtract (|big| >= |small|, so the difference is not negative); guard,
        #    round and sticky bits below the significand
        small27 = Cat(s["small_hi"][0] | s["small_lo"], s["small_hi"][1:27])
        big27 = Cat(C(0, 3), s["sig_big"])
        # One adder for both: big - small = big + ~small + 1 (the inverted operand and the
        # carry-in come out of the LUTs in front of the carry chain).
        inv = s["sub"].replicate(27)
        s = stage({k: v for k, v in s.items()
                   if k not in ("small_hi", "small_lo", "sig_big", "sub")},
            sum=(big27 + (small27 ^ inv) + s["sub"])[0:28] ^ Cat(C(0, 27), s["sub"]))

        # 5: leading zeros of the sum below the carry bit; the exponent's neighbours
        e = s["exp"]
        s = stage(s, lzc=_leading_zeros(m, s["sum"][0:27]),
                  exp_plus1=e + 1, exp_plus2=e + 2,
                  e_ge_253=e >= 253, e_ge_254=e >= 254, e_eq_254=e == 254)

        # 6: normalise: one right shift on a carry, else left by the leading zeros. The
        #    exponent for both outcomes of the rounding carry, and its range flags from
        #    comparisons of the stage-5 values alone (no compare after a subtraction).
        total, e, lzc = s["sum"], s["exp"], s["lzc"]
        carry = total[27]
        s = stage({k: v for k, v in s.items()
                   if k not in ("sum", "lzc", "exp", "exp_plus1", "exp_plus2",
                                "e_ge_253", "e_ge_254", "e_eq_254")},
            exact_zero=total == 0,
            mant=Mux(carry, Cat(total[1] | total[0], total[2:28]), (total[0:27] << lzc)[0:27]),
            exp=Mux(carry, s["exp_plus1"], e - lzc)[0:8],
            exp_plus1=Mux(carry, s["exp_plus2"], s["exp_plus1"] - lzc)[0:8],
            tiny=~carry & (lzc >= e),
            huge=carry & s["e_ge_254"],
            huge_plus1=Mux(carry, s["e_ge_253"], (lzc == 0) & s["e_eq_254"]))

        # 7: round to nearest even, flush, pack. A carry out of the rounding leaves the
        #    fraction all zeros, so the fraction is the low 23 bits either way.
        mant = s["mant"]
        round_up = mant[2] & (mant[1] | mant[0] | mant[3])
        rounded = Signal(25)
        m.d.comb += rounded.eq(mant[3:27] + round_up)
        carry = rounded[24]
        sign = s["sign"]
        result = Signal(32)
        with m.If(s["nan"]):
            m.d.comb += result.eq(0x7FC00000)
        with m.Elif(s["inf"]):
            m.d.comb += result.eq(Cat(C(0, 23), C(0xFF, 8), s["inf_sign"]))
        with m.Elif(s["both_zero"]):
            m.d.comb += result.eq(Cat(C(0, 31), s["zero_sign"]))
        with m.Elif(s["exact_zero"]):
            m.d.comb += result.eq(0)  # exact cancellation: +0 under round to nearest
        with m.Elif(s["tiny"]):
            # Sums of normals are multiples of 2**-149: a tiny one is exact, then flushed.
            m.d.comb += result.eq(Cat(C(0, 31), sign))
        with m.Elif(Mux(carry, s["huge_plus1"], s["huge"])):
            m.d.comb += result.eq(Cat(C(0, 23), C(0xFF, 8), sign))
        with m.Else():
            m.d.comb += result.eq(Cat(rounded[0:23], Mux(carry, s["exp_plus1"], s["exp"]), sign))
        m.d.sync += [self.result.eq(result), self.o_valid.eq(s["valid"])]
        return m


def _leading_zeros(m, value):
    """Leading zeros of ``value`` (meaningless if it is zero) as a two-level tree: a priority
    encoder within each 8-bit group, and one that picks the first non-zero group, so the count
    is a few LUT levels deep instead of a chain as long as the word."""
    width = len(value)
    padded = Cat(C(0, -width % 8), value)           # zeros below: leading zeros unchanged
    groups = [padded[i:i + 8] for i in range(len(padded) - 8, -1, -8)]   # most significant first
    count = Signal(range(len(padded) + 1))
    m.d.comb += count.eq(len(padded))
    for index in reversed(range(len(groups))):      # the last assignment wins: the first group
        group = groups[index]
        in_group = Signal(3)
        for bit in range(8):                        # the last assignment wins: the highest bit
            with m.If(group[bit]):
                m.d.comb += in_group.eq(7 - bit)
        with m.If(group != 0):
            m.d.comb += count.eq(index * 8 + in_group)
    # No clamp to ``width``: only a zero ``value`` counts past it, and the adder never uses the
    # count of a zero sum (it packs +0 or the flushed sign), so the compare would be depth
    # for nothing.
    result = Signal(range(width + 1))
    m.d.comb += result.eq(count)
    return result
