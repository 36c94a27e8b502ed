"""A literal, loop-by-loop transcription of docs/numerics.md, for tiny shapes.

Every output element is a Python loop over the terms in the documented order; every operation
is one scalar ``fp.fmul`` / ``fp.fadd`` on ``np.float32`` values; the adder tree, the
P-partial interleave, the channel-group padding, the zero padding and BP's stride-phase tap
rule are written out as the contract states them, without vectorisation or index tricks, so
that ``ef_train_hdl.model.ops`` (vectorised) can be checked against it bit for bit. It is slow
(tens of microseconds per operation): use it on tiny shapes only.

Names follow the contract: ``L`` the adder latency, ``A`` the accumulator interleave.
"""

import math

import numpy as np

from ef_train_hdl.config import ACC_LOOP_LATENCY
from ef_train_hdl.model import fp

ZERO = np.float32(0.0)


def _u32(v):
    return int(np.asarray(v, dtype=np.float32).view(np.uint32))


def _f32(u):
    return np.array(u, dtype=np.uint32).view(np.float32)[()]


# -- section 1: scalar arithmetic ---------------------------------------------------------------

def fmul(a, b):
    return np.float32(fp.fmul(np.float32(a), np.float32(b)))


def fadd(a, b):
    return np.float32(fp.fadd(np.float32(a), np.float32(b)))


def fsub(a, b):
    # fadd with the sign bit of b inverted
    return fadd(a, _f32(_u32(b) ^ 0x80000000))


def _bf16_operand(a):
    u = _u32(a)
    if (u & 0x7F800000) == 0:          # zero or subnormal: read as zero of the same sign
        return _f32(u & 0x80000000)
    if (u & 0x7F800000) == 0x7F800000 and (u & 0x007FFFFF):
        return np.float32(a)           # a NaN stays NaN even if its payload is in the low half
    return _f32(u & 0xFFFF0000)


def fmul_bf16(a, b):
    return fmul(_bf16_operand(a), _bf16_operand(b))


def multiplier(cfg):
    return fmul_bf16 if cfg.mult_format == "bf16" else fmul


# -- sections 3 and 4: adder tree and interleaved accumulation ----------------------------------

def tree_sum(values):
    level = [np.float32(v) for v in values]
    assert len(level) & (len(level) - 1) == 0 and level
    while len(level) > 1:
        level = [fadd(level[2 * i], level[2 * i + 1]) for i in range(len(level) // 2)]
    return level[0]


def accumulate(terms, p, bias=None):
    acc = [ZERO] * p
    if bias is not None:
        acc[0] = np.float32(bias)
    for q, t in enumerate(terms):
        acc[q % p] = fadd(acc[q % p], t)
    return acc[0] if p == 1 else tree_sum(acc)


def pow2ceil(v):
    p = 1
    while p < v:
        p *= 2
    return p


def A(cfg):
    return pow2ceil(ACC_LOOP_LATENCY)


def clamp(x, cfg):
    return min(max(x, 1), A(cfg))


def p_fp(wo, cfg):
    return clamp(pow2ceil(math.ceil(ACC_LOOP_LATENCY / wo)), cfg)


def p_bp(w, s, cfg):
    return clamp(pow2ceil(math.ceil(ACC_LOOP_LATENCY / max(1, w // s))), cfg)


def p_wu(k, cfg):
    return clamp(pow2ceil(math.ceil(ACC_LOOP_LATENCY / (k * k))), cfg)


# -- section 2: padding -------------------------------------------------------------------------

def _get(a, *idx):
    """``a[idx]``, or +0 when any index is outside ``a`` (zero padding, padding channels)."""
    for i, n in zip(idx, a.shape):
        if not 0 <= i < n:
            return ZERO
    return np.float32(a[idx])


def _groups(c, tn):
    return -(-c // tn)


# -- section 5: forward -------------------------------------------------------------------------

def conv_fp(x, w, bias, s, pad, cfg):
    x, w = np.asarray(x, np.float32), np.asarray(w, np.float32)
    B, N, H, W = x.shape
    M, _, K, _ = w.shape
    Ho, Wo = (H + 2 * pad - K) // s + 1, (W + 2 * pad - K) // s + 1
    tn, mul, P = cfg.tn, multiplier(cfg), p_fp(Wo, cfg)
    z = np.zeros((B, M, Ho, Wo), np.float32)
    for b in range(B):
        for m in range(M):
            for oy in range(Ho):
                for ox in range(Wo):
                    terms = []
                    for g in range(_groups(N, tn)):
                        for ky in range(K):
                            for kx in range(K):
                                lanes = []
                                for j in range(tn):
                                    n = g * tn + j
                                    wv = _get(w, m, n, ky, kx)
                                    # xpad: the padded map, index shifted by pad
                                    xv = _get(x, b, n, oy * s + ky - pad, ox * s + kx - pad)
                                    lanes.append(mul(wv, xv))
                                terms.append(tree_sum(lanes))
                    z[b, m, oy, ox] = accumulate(terms, P, None if bias is None else bias[m])
    return z


def fc_fp(x, w, bias, cfg):
    x, w = np.asarray(x, np.float32), np.asarray(w, np.float32)
    B, N = x.shape
    M = w.shape[0]
    tn, mul, P = cfg.tn, multiplier(cfg), p_fp(B, cfg)   # Wo = batch
    y = np.zeros((B, M), np.float32)
    for b in range(B):
        for m in range(M):
            terms = []
            for g in range(_groups(N, tn)):
                terms.append(tree_sum([mul(_get(w, m, g * tn + j), _get(x, b, g * tn + j))
                                       for j in range(tn)]))
            y[b, m] = accumulate(terms, P, None if bias is None else bias[m])
    return y


# -- section 6: backward ------------------------------------------------------------------------

def conv_bp(g_z, w, in_hw, s, pad, cfg):
    g_z, w = np.asarray(g_z, np.float32), np.asarray(w, np.float32)
    B, M, Ho, Wo = g_z.shape
    _, N, K, _ = w.shape
    H, W = in_hw
    tn, mul, P = cfg.tn, multiplier(cfg), p_bp(W, s, cfg)
    g_x = np.zeros((B, N, H, W), np.float32)
    for b in range(B):
        for n in range(N):
            for y in range(H):
                for x in range(W):
                    terms = []
                    for g in range(_groups(M, tn)):
                        for kyp in range(K):
                            for kxp in range(K):
                                ky, kx = K - 1 - kyp, K - 1 - kxp
                                if (y + pad - ky) % s or (x + pad - kx) % s:
                                    continue            # not an exact division: no term
                                oy, ox = (y + pad - ky) // s, (x + pad - kx) // s
                                lanes = []
                                for j in range(tn):
                                    m = g * tn + j
                                    # outside [0,Ho)x[0,Wo) or a padding channel: data +0
                                    lanes.append(mul(_get(w, m, n, ky, kx),
                                                     _get(g_z, b, m, oy, ox)))
                                terms.append(tree_sum(lanes))
                    g_x[b, n, y, x] = accumulate(terms, P) if terms else ZERO
    return g_x


def fc_bp(g_y, w, cfg):
    g_y, w = np.asarray(g_y, np.float32), np.asarray(w, np.float32)
    B, M = g_y.shape
    N = w.shape[1]
    tn, mul, P = cfg.tn, multiplier(cfg), p_bp(B, 1, cfg)   # W = batch
    g_x = np.zeros((B, N), np.float32)
    for b in range(B):
        for n in range(N):
            terms = [tree_sum([mul(_get(w, g * tn + j, n), _get(g_y, b, g * tn + j))
                               for j in range(tn)]) for g in range(_groups(M, tn))]
            g_x[b, n] = accumulate(terms, P)
    return g_x


# -- section 7: weight update -------------------------------------------------------------------

def conv_wu(g_z, x, K, s, pad, cfg):
    g_z, x = np.asarray(g_z, np.float32), np.asarray(x, np.float32)
    B, M, Ho, Wo = g_z.shape
    N = x.shape[1]
    mul, P = multiplier(cfg), p_wu(K, cfg)
    dw = np.zeros((M, N, K, K), np.float32)
    for m in range(M):
        for n in range(N):
            for ky in range(K):
                for kx in range(K):
                    terms = []
                    for b in range(B):              # t = (b*Ho + oy)*Wo + ox
                        for oy in range(Ho):
                            for ox in range(Wo):
                                terms.append(mul(g_z[b, m, oy, ox],
                                                 _get(x, b, n, oy * s + ky - pad,
                                                      ox * s + kx - pad)))
                    dw[m, n, ky, kx] = accumulate(terms, P)
    return dw


def fc_wu(g_y, x, cfg):
    g_y, x = np.asarray(g_y, np.float32), np.asarray(x, np.float32)
    B, M = g_y.shape
    N = x.shape[1]
    mul, P = multiplier(cfg), p_wu(1, cfg)
    dw = np.zeros((M, N), np.float32)
    for m in range(M):
        for n in range(N):
            dw[m, n] = accumulate([mul(g_y[b, m], x[b, n]) for b in range(B)], P)
    return dw


def bias_grad(g_z, cfg):
    g_z = np.asarray(g_z, np.float32)
    B, M, Ho, Wo = g_z.shape
    db = np.zeros(M, np.float32)
    for m in range(M):
        db[m] = accumulate([g_z[b, m, oy, ox] for b in range(B) for oy in range(Ho)
                            for ox in range(Wo)], A(cfg))
    return db


# -- section 8: element-wise units --------------------------------------------------------------

def relu_fp(x):
    x = np.asarray(x, np.float32)
    out = np.empty_like(x)
    for i in np.ndindex(x.shape):
        out[i] = ZERO if _u32(x[i]) >> 31 else x[i]
    return out


def relu_bp(g_y, y):
    g_y, y = np.asarray(g_y, np.float32), np.asarray(y, np.float32)
    out = np.empty_like(g_y)
    for i in np.ndindex(g_y.shape):
        out[i] = g_y[i] if _u32(y[i]) != 0 else ZERO
    return out


def _greater(xk, v):
    if math.isnan(xk):
        return not math.isnan(v)
    return not math.isnan(v) and float(xk) > float(v)


def maxpool_fp(x):
    x = np.asarray(x, np.float32)
    B, C, H, W = x.shape
    y = np.zeros((B, C, H // 2, W // 2), np.float32)
    idx = np.zeros((B, C, H // 2, W // 2), np.uint32)
    for b in range(B):
        for c in range(C):
            for i in range(H // 2):
                for j in range(W // 2):
                    v, best = x[b, c, 2 * i, 2 * j], 0
                    for k in (1, 2, 3):
                        di, dj = k // 2, k % 2
                        xk = x[b, c, 2 * i + di, 2 * j + dj]
                        if _greater(xk, v):
                            v, best = xk, k
                    y[b, c, i, j] = v
                    idx[b, c, i, j] = best
    return y, idx


def maxpool_bp(g_y, idx, in_hw):
    g_y = np.asarray(g_y, np.float32)
    B, C, H2, W2 = g_y.shape
    H, W = in_hw
    g_x = np.zeros((B, C, H, W), np.float32)
    for b in range(B):
        for c in range(C):
            for yy in range(H):
                for xx in range(W):
                    i, j, di, dj = yy // 2, xx // 2, yy % 2, xx % 2
                    if i < H2 and j < W2 and int(idx[b, c, i, j]) == 2 * di + dj:
                        g_x[b, c, yy, xx] = g_y[b, c, i, j]
    return g_x


# -- section 9: SGD -----------------------------------------------------------------------------

def sgd(w, dw, lr, mu=None, v=None):
    w, dw = np.asarray(w, np.float32), np.asarray(dw, np.float32)
    lr = np.float32(lr)
    w2 = np.empty_like(w)
    if mu is None:
        for i in np.ndindex(w.shape):
            w2[i] = fsub(w[i], fmul(lr, dw[i]))
        return w2, None
    mu, v = np.float32(mu), np.asarray(v, np.float32)
    v2 = np.empty_like(w)
    for i in np.ndindex(w.shape):
        v2[i] = fadd(fmul(mu, v[i]), dw[i])
        w2[i] = fsub(w[i], fmul(lr, v2[i]))
    return w2, v2
