"""The numpy model of the accelerator's layer operations, bit-exact under docs/numerics.md.

Every arithmetic operation goes through :mod:`ef_train_hdl.model.fp` (``fmul``, ``fadd``,
``tree_sum``) in exactly the order the contract fixes, so the model computes what the PE array
computes. The loops run over reduction steps (channel groups x kernel taps) and stride phases;
each step is one vectorised operation over whole tensors. The long chains of the weight update
run as in-place float32 additions with a flush after each (:func:`_sequential`).

Layouts: activations ``x[b, c, h, w]``, conv weights ``w[m, n, ky, kx]``, FC ``x[b, n]`` and
``w[m, n]`` (an FC layer is a 1x1 convolution of one image whose pixels are the batch).
"""

from __future__ import annotations

import numpy as np

from ..config import ACC_LOOP_LATENCY
from .fp import (MIN_NORMAL, as_f32, bits, canonicalize, fadd, fmul, fmul_bf16, fsub, ftz,
                 tree_sum)
from .. import layout

__all__ = ["interleave_fp", "interleave_bp", "interleave_wu", "conv_fp", "conv_bp", "conv_wu",
           "bias_grad", "fc_fp", "fc_bp", "fc_wu", "relu_fp", "relu_bp", "maxpool_fp",
           "maxpool_bp", "sgd", "flatten_hw", "unflatten_hw"]


def _pow2ceil(v):
    return 1 << max(0, (int(v) - 1).bit_length())


def _clamp(p, cfg):
    return min(max(p, 1), cfg.acc_interleave)


def interleave_fp(wo, cfg):
    """P of FP: ``clamp(pow2ceil(ceil(L / Wo)))`` (Wo = batch for FC)."""
    return _clamp(_pow2ceil(-(-ACC_LOOP_LATENCY // wo)), cfg)


def interleave_bp(w, stride, cfg):
    """P of BP: ``clamp(pow2ceil(ceil(L / max(1, W // s))))`` (W = batch for FC)."""
    return _clamp(_pow2ceil(-(-ACC_LOOP_LATENCY // max(1, w // stride))), cfg)


def interleave_wu(k, cfg):
    """P of WU: ``clamp(pow2ceil(ceil(L / (K*K))))``."""
    return _clamp(_pow2ceil(-(-ACC_LOOP_LATENCY // (k * k))), cfg)


def _mul(cfg):
    return fmul_bf16 if cfg.mult_format == "bf16" else fmul


def _finish(acc, p):
    return acc[0] if p == 1 else tree_sum(acc, axis=0)


def _pad_channels(a, axis, tn):
    c = a.shape[axis]
    groups = -(-c // tn)
    if groups * tn == c:
        return a, groups
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, groups * tn - c)
    return np.pad(a, pad), groups


def conv_fp(x, w, bias, stride, pad, cfg):
    """``z[b, m, oy, ox]`` (numerics.md section 5)."""
    x, w = as_f32(x), as_f32(w)
    b_, n, h, wd = x.shape
    m, _, k, _ = w.shape
    tn, mul = cfg.tn, _mul(cfg)
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    p = interleave_fp(wo, cfg)
    xp, groups = _pad_channels(x, 1, tn)
    wp, _ = _pad_channels(w, 1, tn)
    xp = np.pad(xp, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    acc = np.zeros((p, b_, m, ho, wo), np.float32)
    if bias is not None:
        acc[0] = as_f32(bias)[None, :, None, None]
    q = 0
    for g in range(groups):
        for ky in range(k):
            for kx in range(k):
                xs = xp[:, g * tn:(g + 1) * tn, ky:ky + stride * (ho - 1) + 1:stride,
                        kx:kx + stride * (wo - 1) + 1:stride]               # b, j, oy, ox
                ws = wp[:, g * tn:(g + 1) * tn, ky, kx]                      # m, j
                t = tree_sum(mul(ws[None, :, :, None, None], xs[:, None]), axis=2)
                acc[q % p] = fadd(acc[q % p], t)
                q += 1
    return _finish(acc, p)


def conv_bp(g_z, w, in_hw, stride, pad, cfg):
    """``g_x[b, n, y, x]`` (numerics.md section 6): transposed, flipped weights, stride
    phases by index arithmetic."""
    g_z, w = as_f32(g_z), as_f32(w)
    b_, m, ho, wo = g_z.shape
    _, n, k, _ = w.shape
    h, wd = in_hw
    tn, mul, s = cfg.tn, _mul(cfg), stride
    p = interleave_bp(wd, s, cfg)
    gp, groups = _pad_channels(g_z, 1, tn)
    wp, _ = _pad_channels(w, 0, tn)
    # Zero margins so that every exact-but-outside (oy, ox) reads +0.
    lo = k
    hi_y = max(0, (h - 1 + pad) // s - ho + 1)
    hi_x = max(0, (wd - 1 + pad) // s - wo + 1)
    gp = np.pad(gp, ((0, 0), (0, 0), (lo, hi_y), (lo, hi_x)))
    out = np.zeros((b_, n, h, wd), np.float32)
    for ay in range(s):
        ys = np.array([y for y in range(h) if (y + pad) % s == ay], np.int64)
        if len(ys) == 0:
            continue
        for ax in range(s):
            xs = np.array([x for x in range(wd) if (x + pad) % s == ax], np.int64)
            if len(xs) == 0:
                continue
            acc = np.zeros((p, b_, n, len(ys), len(xs)), np.float32)
            q = 0
            for g in range(groups):
                for kyp in range(k):
                    ky = k - 1 - kyp
                    if ky % s != ay % s:
                        continue
                    oy = (ys + pad - ky) // s + lo
                    for kxp in range(k):
                        kx = k - 1 - kxp
                        if kx % s != ax % s:
                            continue
                        ox = (xs + pad - kx) // s + lo
                        d = gp[:, g * tn:(g + 1) * tn][:, :, oy][:, :, :, ox]  # b, j, y, x
                        ws = wp[g * tn:(g + 1) * tn, :, ky, kx]                   # j, n
                        t = tree_sum(mul(ws.T[None, :, :, None, None], d[:, None]), axis=2)
                        acc[q % p] = fadd(acc[q % p], t)
                        q += 1
            out[:, :, ys[:, None], xs[None, :]] = _finish(acc, p)
    return out


def _sequential(terms, p, init=None):
    """Interleaved accumulation of ``terms[q]`` (q in order) into ``p`` partial sums.

    Equal, bit for bit, to ``acc[q % p] = fadd(acc[q % p], terms[q])``: operands are flushed
    once up front (the accumulators are kept flushed), each binary32 sum is flushed right
    after it is rounded, and NaNs, which stay NaN through every later addition, are made
    canonical at the end. This keeps the Python loop to three numpy calls per step.
    """
    terms = ftz(as_f32(terms))
    acc = np.zeros((p,) + terms.shape[1:], np.float32)
    if init is not None:
        acc[0] = ftz(init)
    with np.errstate(all="ignore"):
        for c in range(0, terms.shape[0], p):
            chunk = terms[c:c + p]
            a = acc[:len(chunk)]
            np.add(a, chunk, out=a)
            tiny = np.abs(a) < MIN_NORMAL
            if tiny.any():
                a[tiny] = np.copysign(np.float32(0), a[tiny])
    return _finish(canonicalize(acc), p)


def conv_wu(g_z, x, k, stride, pad, cfg):
    """``dw[m, n, ky, kx]`` (numerics.md section 7): pixels in (b, oy, ox) order."""
    g_z, x = as_f32(g_z), as_f32(x)
    b_, m, ho, wo = g_z.shape
    n = x.shape[1]
    s, mul = stride, _mul(cfg)
    p = interleave_wu(k, cfg)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    # patches[b, oy, ox, n, ky, kx]
    patches = np.empty((b_, ho, wo, n, k, k), np.float32)
    for ky in range(k):
        for kx in range(k):
            patches[..., ky, kx] = xp[:, :, ky:ky + s * (ho - 1) + 1:s,
                                      kx:kx + s * (wo - 1) + 1:s].transpose(0, 2, 3, 1)
    gz = g_z.transpose(0, 2, 3, 1).reshape(-1, m)                      # q, m
    terms = mul(gz[:, :, None, None, None], patches.reshape(-1, 1, n, k, k))
    return _sequential(terms, p)


def bias_grad(g_z, cfg):
    """``db[m]``: the pixels in (b, oy, ox) order, ``P = A`` (numerics.md section 7)."""
    g_z = as_f32(g_z)
    terms = g_z.transpose(0, 2, 3, 1).reshape(-1, g_z.shape[1])
    return _sequential(terms, cfg.acc_interleave)


def fc_fp(x, w, bias, cfg):
    """``y[b, m]`` of an FC layer (a 1x1 convolution whose pixels are the batch)."""
    z = conv_fp(as_f32(x).T[None, :, None, :], as_f32(w)[:, :, None, None], bias, 1, 0, cfg)
    return z[0, :, 0, :].T.copy()


def fc_bp(g_y, w, cfg):
    """``g_x[b, n]`` of an FC layer."""
    b_ = g_y.shape[0]
    gx = conv_bp(as_f32(g_y).T[None, :, None, :], as_f32(w)[:, :, None, None], (1, b_), 1, 0,
                 cfg)
    return gx[0, :, 0, :].T.copy()


def fc_wu(g_y, x, cfg):
    """``dw[m, n]`` of an FC layer."""
    dw = conv_wu(as_f32(g_y).T[None, :, None, :], as_f32(x).T[None, :, None, :], 1, 1, 0, cfg)
    return dw[:, :, 0, 0].copy()


def relu_fp(x):
    """``+0`` where the sign bit is set, else ``x`` (numerics.md section 8)."""
    x = as_f32(x)
    return np.where(bits(x) >> 31 == 1, np.float32(0), x).astype(np.float32)


def relu_bp(g_y, y):
    """``g_y`` where the stored ReLU output is not ``+0``, else ``+0``."""
    return np.where(bits(y) != 0, as_f32(g_y), np.float32(0)).astype(np.float32)


def maxpool_fp(x):
    """2x2/2 max-pool: ``(y, idx)`` with the contract's scan order and NaN rule."""
    x = as_f32(x)
    b_, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    v = x[:, :, 0:2 * h2:2, 0:2 * w2:2].copy()
    idx = np.zeros(v.shape, np.uint32)
    for k in (1, 2, 3):
        di, dj = divmod(k, 2)
        xk = x[:, :, di:2 * h2:2, dj:2 * w2:2]
        with np.errstate(invalid="ignore"):
            take = (np.isnan(xk) & ~np.isnan(v)) | (~np.isnan(xk) & ~np.isnan(v) & (xk > v))
        v = np.where(take, xk, v)
        idx = np.where(take, np.uint32(k), idx)
    return v.astype(np.float32), idx


def maxpool_bp(g_y, idx, in_hw):
    """``g_x`` of the pre-pool map ``in_hw``: the gradient to the winner, ``+0`` elsewhere."""
    g_y = as_f32(g_y)
    b_, c, h2, w2 = g_y.shape
    out = np.zeros((b_, c) + tuple(in_hw), np.float32)
    for k in range(4):
        di, dj = divmod(k, 2)
        out[:, :, di:2 * h2:2, dj:2 * w2:2] = np.where(idx == k, g_y, np.float32(0))
    return out


def sgd(w, dw, lr, cfg, mu=None, v=None):
    """Plain ``w - lr*dw`` or momentum ``v' = mu*v + dw; w - lr*v'`` (numerics.md section 9);
    returns ``(w', v')`` (``v'`` None without momentum)."""
    lr = np.float32(lr)
    if mu is None:
        return fsub(w, fmul(lr, dw)), None
    v2 = fadd(fmul(np.float32(mu), v), dw)
    return fsub(w, fmul(lr, v2)), v2


def flatten_hw(x, tn):
    """``x[b, c, h, w]`` -> ``x[b, n]`` in the DRAM flatten order (padding channels zero)."""
    x = as_f32(x)
    return layout.pack_activations(x, tn).reshape(x.shape[0], -1)


def unflatten_hw(x2d, c, h, w, tn):
    """Inverse of :func:`flatten_hw`."""
    x2d = as_f32(x2d)
    return layout.unpack_activations(x2d.reshape(-1), (x2d.shape[0], c, h, w), tn)
