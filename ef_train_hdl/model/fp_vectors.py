"""Test vectors for the binary32 units: edge values and random pairs where rounding is hard.

Shared by the Amaranth-simulator tests (tests/test_fp.py) and the cocotb + Verilator tests
(sim/fp_units_tb.py), so both check the same operations. All functions return ``uint32`` bit
patterns; the expected results come from :mod:`ef_train_hdl.model.fp`.
"""

import numpy as np

__all__ = ["special_values", "special_pairs", "random_pairs"]


def special_values():
    """Edge values of binary32, both signs: zeros, subnormals, normals at the limits, values
    around 1 and 2 (rounding ties), infinities and NaNs with various payloads."""
    positive = [
        0x00000000,  # +0
        0x00000001,  # smallest subnormal
        0x00400000,  # mid subnormal
        0x007FFFFF,  # largest subnormal
        0x00800000,  # smallest normal
        0x00800001,
        0x00FFFFFF,  # largest of the first normal binade
        0x01000000,
        0x0C800000,  # 2**-102
        0x1F800000,  # 2**-64: squares to 2**-128, below the normals
        0x1F7FFFFF,
        0x20000000,  # 2**-63: squares to 2**-126 exactly
        0x33800000,  # 2**-24: half an ulp of 1.0
        0x33800001,
        0x34000000,  # 2**-23: one ulp of 1.0
        0x3F000000,  # 0.5
        0x3F7FFFFF,  # largest below 1
        0x3F800000,  # 1.0
        0x3F800001,  # 1 + ulp
        0x3FC00000,  # 1.5
        0x3FFFFFFF,  # largest below 2
        0x40000000,  # 2.0
        0x4B000000,  # 2**23
        0x4B000001,
        0x4B800000,  # 2**24: adding 1 ties
        0x5F800000,  # 2**64: squares to 2**128, overflow
        0x5F7FFFFF,
        0x7F000000,  # 2**127
        0x7F7FFFFF,  # largest normal
        0x7F800000,  # +inf
        0x7FC00000,  # canonical quiet NaN
        0x7FC00001,  # quiet NaN with payload
        0x7F800001,  # signalling NaN
        0x7FBFFFFF,  # signalling NaN, full payload
        0x7FFFFFFF,  # quiet NaN, full payload
    ]
    positive = np.array(positive, dtype=np.uint32)
    return np.concatenate([positive, positive | np.uint32(0x80000000)])


def special_pairs():
    """The full cross product of :func:`special_values` as ``(a, b)``."""
    values = special_values()
    a, b = np.meshgrid(values, values, indexing="ij")
    return a.ravel(), b.ravel()


def _fields(sign, exponent, mantissa):
    return ((np.asarray(sign, np.uint32) & 1) << 31
            | (np.clip(exponent, 0, 255).astype(np.uint32) << 23)
            | (np.asarray(mantissa, np.uint32) & 0x7FFFFF))


def random_pairs(op, n, seed=0):
    """At least ``n`` operand pairs for ``op`` (``"mul"`` or ``"add"``) as ``(a, b)``.

    A fifth are uniform bit patterns (whole exponent range, NaNs and subnormals included); the
    rest aim where an adder or multiplier is easy to get wrong:

    - mul: exponents summing near the overflow and underflow limits, products landing in the
      window that rounds up to the smallest normal, significands with long runs of ones (ties
      and carries out of the rounding);
    - add: exponent differences 0..30 (alignment, guard, round, sticky), exact and near
      cancellation (long normalising shifts), results near the smallest normal, carries out of
      the significand and ties.
    """
    if op not in ("mul", "add"):
        raise ValueError(f"op must be 'mul' or 'add', not {op!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, not {n!r}")
    rng = np.random.default_rng(seed)
    k = -(-n // 5)

    def mantissas(count):
        m = rng.integers(0, 1 << 23, count).astype(np.uint32)
        # a third with long runs of ones at the bottom: ties and rounding carries
        ones = (np.uint32(1) << rng.integers(1, 24, count).astype(np.uint32)) - np.uint32(1)
        pick = rng.random(count) < 1 / 3
        return np.where(pick, m | ones, m)

    def signs(count):
        return rng.integers(0, 2, count)

    uniform_a = rng.integers(0, 1 << 32, k, dtype=np.uint64).astype(np.uint32)
    uniform_b = rng.integers(0, 1 << 32, k, dtype=np.uint64).astype(np.uint32)
    parts_a, parts_b = [uniform_a], [uniform_b]

    if op == "mul":
        # exponent sums near overflow (sum - 127 around 254) and underflow (around 0)
        for centre in (254 + 127, 127):
            ea = rng.integers(1, 255, k)
            eb = centre - ea + rng.integers(-3, 3, k)
            parts_a.append(_fields(signs(k), ea, mantissas(k)))
            parts_b.append(_fields(signs(k), np.clip(eb, 1, 254), mantissas(k)))
        # products aimed just below 2**-126: the round-up-to-min-normal window and its edges
        ea = rng.integers(40, 90, k)
        a = _fields(signs(k), ea, mantissas(k))
        a_val = a.view(np.float32).astype(np.float64)
        target = 2.0 ** -126 * (1 - rng.uniform(-2 ** -21, 2 ** -21, k))
        b = (target / np.abs(a_val)).astype(np.float32).view(np.uint32)
        b = (b.astype(np.int64) + rng.integers(-2, 3, k)).astype(np.uint32)
        parts_a.append(a)
        parts_b.append(b | (signs(k).astype(np.uint32) << 31))
        # ordinary magnitudes with hard significands
        parts_a.append(_fields(signs(k), rng.integers(100, 155, k), mantissas(k)))
        parts_b.append(_fields(signs(k), rng.integers(100, 155, k), mantissas(k)))
    else:
        # exponent differences 0..30, both signs: alignment, guard/round/sticky
        ea = rng.integers(1, 255, k)
        eb = np.clip(ea - rng.integers(0, 31, k), 1, 254)
        parts_a.append(_fields(signs(k), ea, mantissas(k)))
        parts_b.append(_fields(signs(k), eb, mantissas(k)))
        # exact and near cancellation: b = -a, give or take a few ulps
        a = _fields(signs(k), rng.integers(1, 255, k), mantissas(k))
        b = (a ^ np.uint32(0x80000000)).astype(np.int64) + rng.integers(-4, 5, k)
        parts_a.append(a)
        parts_b.append(b.astype(np.uint32))
        # results near the smallest normal (sums that would be subnormal get flushed)
        ea = rng.integers(1, 4, k)
        parts_a.append(_fields(signs(k), ea, mantissas(k)))
        parts_b.append(_fields(signs(k), ea + rng.integers(-1, 2, k), mantissas(k)))
        # equal signs, exponents 0..1 apart: carry out of the significand, then a tie or not
        ea = rng.integers(1, 255, k)
        sign = signs(k)
        parts_a.append(_fields(sign, ea, mantissas(k)))
        parts_b.append(_fields(sign, np.clip(ea - rng.integers(0, 2, k), 1, 254), mantissas(k)))
    a = np.concatenate(parts_a)
    b = np.concatenate(parts_b)
    order = rng.permutation(len(a))
    return a[order], b[order]
