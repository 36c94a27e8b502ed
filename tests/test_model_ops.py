"""ef_train_hdl.model.ops against two independent references.

- Bit for bit against ``tests/contract_scalar.py``, a scalar loop-by-loop transcription of
  docs/numerics.md, on tiny random shapes with signed zeros, huge and tiny magnitudes
  (overflow to inf, products that underflow and flush, subnormal operands) and a few inf/NaN.
- Within float tolerance against ``ef_train_hdl.model.ref64`` (float64, straight from the
  math) on realistic data, which catches index/flip/stride mistakes shared by both readings.
"""

import zlib

import numpy as np
import pytest

import contract_scalar as cs
from ef_train_hdl.config import preset
from ef_train_hdl.model import ops, ref64
from ef_train_hdl.model import fp
from ef_train_hdl.model.fp import bits

TINY = preset("tiny")
CONFIGS = {
    "tiny": TINY,
    "tm2tn4": TINY.replace(tm=2, tn=4),
    "tm4tn2": TINY.replace(tm=4, tn=2),
    "bf16": TINY.replace(mult_format="bf16"),
}


def special_data(rng, shape, specials=True):
    """Random float32 with a sprinkling of -0/+0, huge, tiny, subnormal, inf and NaN values."""
    x = rng.standard_normal(shape).astype(np.float32)
    if not specials:
        return x
    flat = x.reshape(-1)
    kinds = rng.integers(0, 40, flat.size)
    pick = {
        0: np.float32(-0.0), 1: np.float32(0.0),
        2: np.float32(3e19), 3: np.float32(-2e19),        # products of two overflow
        4: np.float32(1.5e-20), 5: np.float32(-3e-20),    # products underflow and flush
        6: np.float32(1e-40),                             # subnormal operand (read as 0)
        7: np.float32(1.17549435e-38),                    # smallest normal
    }
    for k, v in pick.items():
        flat[kinds == k] = v
    return x


def add_nonfinite(rng, x, count=1):
    flat = x.reshape(-1)
    for v in [np.inf, -np.inf, np.nan][:count] if count <= 3 else [np.nan] * count:
        flat[rng.integers(flat.size)] = v
    return x


def assert_bits(actual, expected):
    actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
    assert actual.shape == expected.shape
    a, e = bits(actual), bits(expected)
    bad = np.argwhere(a != e)
    assert bad.size == 0, (
        f"{len(bad)} of {a.size} elements differ; first at {tuple(bad[0])}: "
        f"ops {actual[tuple(bad[0])]!r} ({a[tuple(bad[0])]:#010x}) vs contract "
        f"{expected[tuple(bad[0])]!r} ({e[tuple(bad[0])]:#010x})")


# -- interleave rules -----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 100])
@pytest.mark.parametrize("s", [1, 2])
def test_interleave_rules(size, s):
    cfg = TINY
    assert ops.interleave_fp(size, cfg) == cs.p_fp(size, cfg)
    assert ops.interleave_bp(size, s, cfg) == cs.p_bp(size, s, cfg)
    if size <= 11:
        assert ops.interleave_wu(size, cfg) == cs.p_wu(size, cfg)


# -- convolution, bit for bit against the scalar contract -----------------------------------------

# (k, stride, pad, n, m, h, w, batch)
CONV_CASES = [
    (1, 1, 0, 3, 3, 3, 4, 1),      # 1x1: P_FP > 1, WU P = 8
    (1, 2, 0, 2, 3, 5, 5, 1),
    (2, 1, 0, 2, 2, 4, 3, 2),
    (2, 2, 1, 3, 2, 5, 4, 1),
    (3, 1, 1, 3, 5, 4, 4, 1),      # channel counts not multiples of tn
    (3, 2, 1, 4, 4, 5, 5, 1),
    (3, 2, 2, 2, 2, 4, 6, 1),
    (3, 1, 0, 4, 2, 5, 3, 1),
    (5, 1, 2, 2, 2, 5, 5, 1),
    (5, 2, 2, 3, 2, 7, 6, 1),
    (3, 2, 0, 1, 1, 2, 9, 1),      # stride 2 with K-s odd phases, one output row
]


def _conv_ids(case):
    k, s, p, n, m, h, w, b = case
    return f"k{k}s{s}p{p}-n{n}m{m}-{h}x{w}-b{b}"


@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_ids)
def test_conv_bit_exact(case, cfg_name):
    cfg = CONFIGS[cfg_name]
    k, s, p, n, m, h, w, b = case
    rng = np.random.default_rng(zlib.crc32(repr((case, cfg_name)).encode()))
    x = special_data(rng, (b, n, h, w))
    wt = special_data(rng, (m, n, k, k))
    bias = special_data(rng, (m,))
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    g_z = special_data(rng, (b, m, ho, wo))
    assert_bits(ops.conv_fp(x, wt, bias, s, p, cfg), cs.conv_fp(x, wt, bias, s, p, cfg))
    assert_bits(ops.conv_fp(x, wt, None, s, p, cfg), cs.conv_fp(x, wt, None, s, p, cfg))
    assert_bits(ops.conv_bp(g_z, wt, (h, w), s, p, cfg), cs.conv_bp(g_z, wt, (h, w), s, p, cfg))
    assert_bits(ops.conv_wu(g_z, x, k, s, p, cfg), cs.conv_wu(g_z, x, k, s, p, cfg))
    assert_bits(ops.bias_grad(g_z, cfg), cs.bias_grad(g_z, cfg))


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (2, 2, 0), (1, 1, 0)])
def test_conv_nonfinite(k, s, p):
    """inf and NaN inputs: inf*0 at padding, inf-inf in the tree, canonical NaN out."""
    cfg = TINY
    rng = np.random.default_rng(7 + k)
    x = add_nonfinite(rng, special_data(rng, (1, 3, 4, 4)), 3)
    wt = add_nonfinite(rng, special_data(rng, (3, 3, k, k)), 2)
    ho = (4 + 2 * p - k) // s + 1
    g_z = add_nonfinite(rng, special_data(rng, (1, 3, ho, ho)), 3)
    bias = np.array([np.inf, np.nan, 1.0], np.float32)
    assert_bits(ops.conv_fp(x, wt, bias, s, p, cfg), cs.conv_fp(x, wt, bias, s, p, cfg))
    assert_bits(ops.conv_bp(g_z, wt, (4, 4), s, p, cfg), cs.conv_bp(g_z, wt, (4, 4), s, p, cfg))
    assert_bits(ops.conv_wu(g_z, x, k, s, p, cfg), cs.conv_wu(g_z, x, k, s, p, cfg))
    assert_bits(ops.bias_grad(g_z, cfg), cs.bias_grad(g_z, cfg))


def test_conv_bp_kernel_smaller_than_stride():
    """K < s: pixels with no tap at all are +0."""
    cfg = TINY
    rng = np.random.default_rng(3)
    g_z = special_data(rng, (1, 3, 3, 3))
    wt = special_data(rng, (3, 2, 1, 1))
    got = ops.conv_bp(g_z, wt, (6, 5), 2, 0, cfg)
    assert_bits(got, cs.conv_bp(g_z, wt, (6, 5), 2, 0, cfg))
    assert np.all(bits(got[:, :, 1::2, :]) == 0) and np.all(bits(got[:, :, :, 1::2]) == 0)


def test_exact_cancellation_and_negative_zero():
    """The tree sums -0 + -0 to -0, but the accumulators start at +0, so the result is +0;
    with the bias -0 and P = 1 it stays -0. x + (-x) = +0."""
    cfg = TINY
    x = np.full((1, 2, 1, 1), -0.0, np.float32)
    w = np.ones((1, 2, 1, 1), np.float32)
    assert_bits(ops.conv_fp(x, w, None, 1, 0, cfg), cs.conv_fp(x, w, None, 1, 0, cfg))
    assert bits(ops.conv_fp(x, w, None, 1, 0, cfg))[0, 0, 0, 0] == 0
    x8 = np.full((1, 2, 1, 8), -0.0, np.float32)                 # Wo = 8: P_FP = 1
    z = ops.conv_fp(x8, w, np.float32([-0.0]), 1, 0, cfg)
    assert_bits(z, cs.conv_fp(x8, w, np.float32([-0.0]), 1, 0, cfg))
    assert np.all(bits(z) == 0x80000000)
    x = np.array([1.5, -1.5], np.float32).reshape(1, 2, 1, 1)
    assert bits(ops.conv_fp(x, w, None, 1, 0, cfg))[0, 0, 0, 0] == 0


# -- FC --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("b,n,m", [(1, 5, 3), (2, 4, 3), (3, 7, 5), (9, 3, 2)])
def test_fc_bit_exact(b, n, m, cfg_name):
    cfg = CONFIGS[cfg_name]
    rng = np.random.default_rng(b * 100 + n * 10 + m)
    x = special_data(rng, (b, n))
    w = special_data(rng, (m, n))
    bias = special_data(rng, (m,))
    g_y = special_data(rng, (b, m))
    assert_bits(ops.fc_fp(x, w, bias, cfg), cs.fc_fp(x, w, bias, cfg))
    assert_bits(ops.fc_fp(x, w, None, cfg), cs.fc_fp(x, w, None, cfg))
    assert_bits(ops.fc_bp(g_y, w, cfg), cs.fc_bp(g_y, w, cfg))
    assert_bits(ops.fc_wu(g_y, x, cfg), cs.fc_wu(g_y, x, cfg))


def test_fc_nonfinite():
    cfg = TINY
    rng = np.random.default_rng(11)
    x = add_nonfinite(rng, special_data(rng, (3, 6)), 3)
    w = add_nonfinite(rng, special_data(rng, (4, 6)), 3)
    g_y = add_nonfinite(rng, special_data(rng, (3, 4)), 3)
    assert_bits(ops.fc_fp(x, w, None, cfg), cs.fc_fp(x, w, None, cfg))
    assert_bits(ops.fc_bp(g_y, w, cfg), cs.fc_bp(g_y, w, cfg))
    assert_bits(ops.fc_wu(g_y, x, cfg), cs.fc_wu(g_y, x, cfg))


def test_bf16_operands_truncated_and_nan_kept():
    """bf16: operands truncated (not rounded) to their top 16 bits; a NaN whose payload is
    only in the low half stays NaN (truncating its bits would give inf)."""
    cfg = CONFIGS["bf16"]
    one_plus = np.uint32(0x3F80FFFF).view(np.float32)    # rounds to 1.0078125, truncates to 1
    low_nan = np.uint32(0x7F800001).view(np.float32)
    x = np.array([[one_plus, 2.0], [low_nan, 1.0]], np.float32)
    w = np.array([[one_plus, 0.0], [0.0, 1.0]], np.float32)
    y = ops.fc_fp(x, w, None, cfg)
    assert_bits(y, cs.fc_fp(x, w, None, cfg))
    assert y[0, 0] == np.float32(1.0)
    assert bits(y)[1, 0] == 0x7FC00000 and bits(y)[1, 1] == 0x7FC00000


# -- element-wise units ------------------------------------------------------------------------------

def test_relu_bit_exact():
    rng = np.random.default_rng(5)
    x = add_nonfinite(rng, special_data(rng, (2, 3, 5, 5)), 3)
    x.reshape(-1)[:4] = np.array([0x7FC00001, 0xFFC00000, 0x80000000, 0x7F800001],
                                 np.uint32).view(np.float32)
    y = ops.relu_fp(x)
    assert_bits(y, cs.relu_fp(x))
    g = special_data(rng, x.shape)
    assert_bits(ops.relu_bp(g, y), cs.relu_bp(g, y))
    assert_bits(ops.relu_bp(g, x), cs.relu_bp(g, x))   # -0 in y masks, NaN passes


@pytest.mark.parametrize("h,w", [(4, 4), (5, 5), (4, 7), (1, 3), (6, 2)])
def test_maxpool_bit_exact(h, w):
    rng = np.random.default_rng(h * 10 + w)
    x = rng.integers(-2, 3, (2, 3, h, w)).astype(np.float32)   # many ties
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, 3)] = np.nan
    flat[rng.integers(0, flat.size, 3)] = -0.0
    flat[rng.integers(0, flat.size, 2)] = np.array([0x7FA00000, 0xFFC00001],
                                                   np.uint32).view(np.float32)
    y, idx = ops.maxpool_fp(x)
    y_c, idx_c = cs.maxpool_fp(x)
    assert_bits(y, y_c)
    assert np.array_equal(idx, idx_c)
    g = special_data(rng, y.shape)
    assert_bits(ops.maxpool_bp(g, idx, (h, w)), cs.maxpool_bp(g, idx_c, (h, w)))


def test_maxpool_ties_take_first_and_zero_signs():
    x = np.array([[[[-0.0, 0.0], [0.0, -0.0]]]], np.float32)
    y, idx = ops.maxpool_fp(x)
    assert idx[0, 0, 0, 0] == 0 and bits(y)[0, 0, 0, 0] == 0x80000000
    x = np.array([[[[1.0, np.nan], [np.nan, 5.0]]]], np.float32)
    y, idx = ops.maxpool_fp(x)
    assert idx[0, 0, 0, 0] == 1 and np.isnan(y[0, 0, 0, 0])


# -- SGD ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("momentum", [False, True])
def test_sgd_bit_exact(momentum):
    cfg = TINY
    rng = np.random.default_rng(21)
    w = add_nonfinite(rng, special_data(rng, (4, 3, 3, 3)), 2)
    dw = add_nonfinite(rng, special_data(rng, w.shape), 3)
    v = special_data(rng, w.shape)
    lr, mu = np.float32(0.01), np.float32(0.9)
    if momentum:
        w2, v2 = ops.sgd(w, dw, lr, cfg, mu=mu, v=v)
        w_c, v_c = cs.sgd(w, dw, lr, mu, v)
        assert_bits(v2, v_c)
    else:
        w2, v2 = ops.sgd(w, dw, lr, cfg)
        w_c, _ = cs.sgd(w, dw, lr)
        assert v2 is None
    assert_bits(w2, w_c)


# -- flatten --------------------------------------------------------------------------------------

@pytest.mark.parametrize("c,tn", [(3, 2), (4, 4), (5, 4), (16, 8)])
def test_flatten_matches_ref64(c, tn):
    rng = np.random.default_rng(c)
    x = rng.standard_normal((2, c, 3, 2)).astype(np.float32)
    f = ops.flatten_hw(x, tn)
    assert np.array_equal(f, ref64.flatten_hw(x, tn).astype(np.float32))
    assert np.array_equal(ops.unflatten_hw(f, c, 3, 2, tn), x)


# -- ops against the float64 reference on realistic data -------------------------------------------

def close(actual, exact, magnitude, rtol=1e-4):
    """|actual - exact| <= rtol * (sum of |terms|) element-wise: rounding errors of a sum
    scale with the magnitude of its terms, not of its result."""
    err = np.abs(np.asarray(actual, np.float64) - exact)
    bound = rtol * magnitude + 1e-30
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert np.all(err <= bound), (f"worst at {worst}: {actual[worst]!r} vs {exact[worst]!r} "
                                  f"(bound {bound[worst]:.3g})")


REF_CASES = [
    (1, 1, 0, 5, 3, 6, 6, 2),
    (3, 1, 1, 6, 7, 8, 8, 2),
    (3, 2, 1, 5, 4, 9, 8, 3),
    (5, 1, 2, 3, 6, 10, 10, 1),
    (5, 2, 2, 4, 5, 11, 9, 2),
    (2, 2, 0, 3, 3, 7, 8, 2),
    (1, 2, 0, 3, 4, 6, 5, 1),
]


@pytest.mark.parametrize("cfg_name", ["tiny", "tm2tn4", "tm4tn2"])
@pytest.mark.parametrize("case", REF_CASES, ids=_conv_ids)
def test_conv_against_float64(case, cfg_name):
    cfg = CONFIGS[cfg_name]
    k, s, p, n, m, h, w, b = case
    rng = np.random.default_rng(zlib.crc32(repr((case, cfg_name)).encode()))
    x = rng.standard_normal((b, n, h, w)).astype(np.float32)
    wt = rng.standard_normal((m, n, k, k)).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    g_z = rng.standard_normal((b, m, ho, wo)).astype(np.float32)
    close(ops.conv_fp(x, wt, bias, s, p, cfg), ref64.conv_fp(x, wt, bias, s, p),
          ref64.conv_fp(np.abs(x), np.abs(wt), np.abs(bias), s, p))
    close(ops.conv_bp(g_z, wt, (h, w), s, p, cfg), ref64.conv_bp(g_z, wt, (h, w), s, p),
          ref64.conv_bp(np.abs(g_z), np.abs(wt), (h, w), s, p))
    close(ops.conv_wu(g_z, x, k, s, p, cfg), ref64.conv_wu(g_z, x, k, s, p),
          ref64.conv_wu(np.abs(g_z), np.abs(x), k, s, p))
    close(ops.bias_grad(g_z, cfg), ref64.bias_grad(g_z), ref64.bias_grad(np.abs(g_z)))


@pytest.mark.parametrize("b,n,m", [(1, 30, 10), (4, 17, 9), (16, 64, 12)])
def test_fc_against_float64(b, n, m):
    cfg = TINY.replace(tn=4)
    rng = np.random.default_rng(n)
    x = rng.standard_normal((b, n)).astype(np.float32)
    w = rng.standard_normal((m, n)).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    g_y = rng.standard_normal((b, m)).astype(np.float32)
    ax, aw = np.abs(x), np.abs(w)
    close(ops.fc_fp(x, w, bias, cfg), ref64.fc_fp(x, w, bias), ref64.fc_fp(ax, aw, np.abs(bias)))
    close(ops.fc_bp(g_y, w, cfg), ref64.fc_bp(g_y, w), ref64.fc_bp(np.abs(g_y), aw))
    close(ops.fc_wu(g_y, x, cfg), ref64.fc_wu(g_y, x), ref64.fc_wu(np.abs(g_y), ax))


def test_elementwise_against_float64():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    y = ops.relu_fp(x)
    assert np.array_equal(y, ref64.relu_fp(x))
    g = rng.standard_normal(x.shape).astype(np.float32)
    assert np.array_equal(ops.relu_bp(g, y), ref64.relu_bp(g, y))
    yp, idx = ops.maxpool_fp(x)
    yr, idxr = ref64.maxpool_fp(x)
    assert np.array_equal(yp, yr) and np.array_equal(idx, idxr)
    gp = rng.standard_normal(yp.shape).astype(np.float32)
    assert np.array_equal(ops.maxpool_bp(gp, idx, (7, 6)), ref64.maxpool_bp(gp, idxr, (7, 6)))
    w = rng.standard_normal(50).astype(np.float32)
    dw = rng.standard_normal(50).astype(np.float32)
    v = rng.standard_normal(50).astype(np.float32)
    for mu in (None, 0.9):
        w2, v2 = ops.sgd(w, dw, 0.05, TINY, mu=mu, v=None if mu is None else v)
        wr, vr = ref64.sgd(w, dw, np.float32(0.05), mu=None if mu is None else np.float32(mu),
                           v=None if mu is None else v)
        np.testing.assert_allclose(w2, wr, rtol=1e-6, atol=1e-6)
        if mu is not None:
            np.testing.assert_allclose(v2, vr, rtol=1e-6, atol=1e-6)


# -- a bigger sweep (slow) --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("p", [0, 1, 2])
def test_conv_bit_exact_sweep(k, s, p, cfg_name):
    cfg = CONFIGS[cfg_name]
    h, w = 7, 6
    rng = np.random.default_rng(k * 100 + s * 10 + p)
    x = add_nonfinite(rng, special_data(rng, (2, 5, h, w)), 1)
    wt = special_data(rng, (3, 5, k, k))
    bias = special_data(rng, (3,))
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    g_z = special_data(rng, (2, 3, ho, wo))
    assert_bits(ops.conv_fp(x, wt, bias, s, p, cfg), cs.conv_fp(x, wt, bias, s, p, cfg))
    assert_bits(ops.conv_bp(g_z, wt, (h, w), s, p, cfg), cs.conv_bp(g_z, wt, (h, w), s, p, cfg))
    assert_bits(ops.conv_wu(g_z, x, k, s, p, cfg), cs.conv_wu(g_z, x, k, s, p, cfg))


def test_sequential_accumulation_matches_its_definition():
    """The weight update's fast chain (in-place float32 adds, flushed) equals a loop of fadd."""
    rng = np.random.default_rng(2)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-39, -1e-39, 1.1754944e-38,
                        -1.1754942e-38, 3.4e38, -3.4e38, 1.0, -1.0], np.float32)
    for p in (1, 2, 8):
        terms = rng.standard_normal((37, 4, 3)).astype(np.float32) * np.float32(1e-38)
        mask = rng.random(terms.shape) < 0.2
        terms[mask] = rng.choice(special, mask.sum())
        expected = np.zeros((p,) + terms.shape[1:], np.float32)
        for q in range(terms.shape[0]):
            expected[q % p] = fp.fadd(expected[q % p], terms[q])
        expected = expected[0] if p == 1 else fp.tree_sum(expected, axis=0)
        assert (fp.bits(ops._sequential(terms, p)) == fp.bits(expected)).all()

