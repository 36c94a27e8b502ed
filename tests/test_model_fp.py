"""The FP reference against plain numpy float32, so that it cannot drift from IEEE.

Where the contract and IEEE agree — normal operands and normal results — the reference must be
exactly numpy's float32 arithmetic; where they differ (subnormals, NaN payloads) the contract's
own rules are checked directly.
"""

import numpy as np
import pytest

from ef_train_hdl.model import fp
from ef_train_hdl.model.fp_vectors import random_pairs, special_pairs


def _normal(x):
    x = np.abs(fp.as_f32(x))
    return np.isfinite(x) & (x >= fp.MIN_NORMAL)


@pytest.mark.parametrize("op, reference, plain", [
    ("mul", fp.fmul, np.multiply),
    ("add", fp.fadd, np.add),
])
def test_agrees_with_numpy_float32_on_normal_numbers(op, reference, plain):
    a, b = random_pairs(op, 50_000, seed=3)
    a, b = fp.from_bits(a), fp.from_bits(b)
    with np.errstate(all="ignore"):
        expected = plain(a, b).astype(np.float32)
    keep = _normal(a) & _normal(b) & _normal(expected)
    assert keep.sum() > 30_000
    assert (fp.bits(reference(a, b))[keep] == fp.bits(expected)[keep]).all()


def test_subnormal_operands_read_as_signed_zero():
    tiny = fp.from_bits(np.array([0x00000001, 0x807FFFFF], dtype=np.uint32))
    one = np.float32(1.0)
    assert list(fp.bits(fp.fmul(tiny, one))) == [0x00000000, 0x80000000]
    # 1 + subnormal is exactly 1 (the subnormal is zero)
    assert list(fp.bits(fp.fadd(tiny, one))) == [0x3F800000, 0x3F800000]
    # inf * subnormal is inf * 0: invalid
    assert fp.bits(fp.fmul(np.float32(np.inf), tiny[0])) == 0x7FC00000


def test_subnormal_results_flush_after_rounding():
    # 2**-63 * (2**-63 * (1 - 2**-24)) is exactly 2**-126 - 2**-150: IEEE rounds it (a tie) to
    # the smallest normal, which the contract keeps.
    a = np.float32(2.0 ** -63)
    b = np.float32(2.0 ** -63 * (1 - 2.0 ** -24))
    assert fp.bits(fp.fmul(a, b)) == 0x00800000
    # just below the window: subnormal after rounding, flushed with its sign
    c = np.float32(2.0 ** -63 * (1 - 2.0 ** -22))
    assert fp.bits(fp.fmul(a, c)) == 0x00000000
    assert fp.bits(fp.fmul(-a, c)) == 0x80000000
    # a difference of normals that is subnormal flushes to zero of its sign
    x = fp.from_bits(np.uint32(0x00800001))
    y = fp.from_bits(np.uint32(0x00800000))
    assert fp.bits(fp.fsub(y, x)) == 0x80000000
    assert fp.bits(fp.fsub(x, y)) == 0x00000000


def test_every_nan_is_canonical():
    a, b = special_pairs()
    for op in (fp.fmul, fp.fadd, fp.fmul_bf16):
        r = op(fp.from_bits(a), fp.from_bits(b))
        nan = np.isnan(r)
        assert nan.any()
        assert (fp.bits(r)[nan] == 0x7FC00000).all()
    assert fp.bits(fp.fadd(np.float32(np.inf), np.float32(-np.inf))) == 0x7FC00000


def test_cancellation_and_signed_zeros():
    x = np.float32(1.2345)
    assert fp.bits(fp.fadd(x, -x)) == 0x00000000
    assert fp.bits(fp.fadd(np.float32(-0.0), np.float32(-0.0))) == 0x80000000
    assert fp.bits(fp.fadd(np.float32(-0.0), np.float32(0.0))) == 0x00000000
    assert fp.bits(fp.fmul(np.float32(-0.0), np.float32(3.0))) == 0x80000000


def test_overflow_gives_infinity():
    big = np.float32(3e38)
    assert fp.bits(fp.fmul(big, np.float32(2.0))) == 0x7F800000
    assert fp.bits(fp.fadd(-big, -big)) == 0xFF800000


def test_bf16_truncates_operands():
    a = fp.from_bits(np.uint32(0x3F80FFFF))  # 1.0078..., truncated to 1.0 in bfloat16
    assert fp.bits(fp.fmul_bf16(a, np.float32(1.0))) == 0x3F800000
    # a NaN whose payload lies only in the dropped bits stays NaN (not infinity)
    nan = fp.from_bits(np.uint32(0x7F800001))
    assert fp.bits(fp.fmul_bf16(nan, np.float32(1.0))) == 0x7FC00000


def test_tree_sum_pairs_neighbours():
    x = np.array([1e8, -1e8, 1.0, 1.0], dtype=np.float32)
    # ((1e8 + -1e8) + (1 + 1)) = 2, where a left-to-right sum gives 2 as well but
    # [1e8, 1, -1e8, 1] separates the pairings:
    assert fp.tree_sum(x) == np.float32(2.0)
    y = np.array([1e8, 1.0, -1e8, 1.0], dtype=np.float32)
    assert fp.tree_sum(y) == np.float32(0.0)
    with pytest.raises(ValueError, match="power-of-two length, not 3"):
        fp.tree_sum(np.ones(3, dtype=np.float32))
