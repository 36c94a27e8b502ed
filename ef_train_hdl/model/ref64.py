"""An independent float64 reference of the layer operations, written straight from the math.

It shares no code with :mod:`ef_train_hdl.model.ops` or :mod:`ef_train_hdl.model.fp`: every
function computes the exact mathematical quantity (convolution as a sum over the padded input,
its true input gradient as a scatter-add of ``w * g_z``, its true weight gradient, ...) in
float64 with numpy's own summation order. It says nothing about rounding; tests compare the
bit-exact model against it within a tolerance scaled to the magnitude of the sums, to catch
index, flip, stride and padding mistakes that a bit-exact transcription of the same reading of
the contract could share.

The function names and signatures are those of :mod:`ef_train_hdl.model.ops`; ``cfg`` is
accepted and ignored (a float64 reference has no tiling, no adder tree and no interleave),
except for :func:`flatten_hw` / :func:`unflatten_hw`, which need ``tn`` for the DRAM order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["conv_fp", "conv_bp", "conv_wu", "bias_grad", "fc_fp", "fc_bp", "fc_wu",
           "relu_fp", "relu_bp", "maxpool_fp", "maxpool_bp", "sgd", "flatten_hw",
           "unflatten_hw"]


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def conv_fp(x, w, bias, stride, pad, cfg=None):
    """``z[b,m,oy,ox] = bias[m] + sum_{n,ky,kx} w[m,n,ky,kx] * xpad[b,n,oy*s+ky,ox*s+kx]``."""
    x, w = _f64(x), _f64(w)
    b, n, h, wd = x.shape
    m, n2, k, k2 = w.shape
    if n2 != n or k2 != k:
        raise ValueError(f"w shape {w.shape} does not fit x shape {x.shape}")
    ho, wo = _out_size(h, k, stride, pad), _out_size(wd, k, stride, pad)
    xp = np.zeros((b, n, h + 2 * pad, wd + 2 * pad))
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    z = np.zeros((b, m, ho, wo))
    for oy in range(ho):
        for ox in range(wo):
            patch = xp[:, :, oy * stride:oy * stride + k, ox * stride:ox * stride + k]
            z[:, :, oy, ox] = np.einsum("bnyx,mnyx->bm", patch, w)
    if bias is not None:
        z += _f64(bias)[None, :, None, None]
    return z


def conv_bp(g_z, w, in_hw, stride, pad, cfg=None):
    """The true gradient of :func:`conv_fp` w.r.t. ``x``: every ``g_z[b,m,oy,ox]`` scatters
    ``w[m,n,ky,kx] * g_z`` to the input pixel it read; reads of the padding are dropped."""
    g_z, w = _f64(g_z), _f64(w)
    b, m, ho, wo = g_z.shape
    _, n, k, _ = w.shape
    h, wd = in_hw
    gp = np.zeros((b, n, h + 2 * pad + stride * k, wd + 2 * pad + stride * k))
    for oy in range(ho):
        for ox in range(wo):
            contrib = np.einsum("bm,mnyx->bnyx", g_z[:, :, oy, ox], w)
            gp[:, :, oy * stride:oy * stride + k, ox * stride:ox * stride + k] += contrib
    return gp[:, :, pad:pad + h, pad:pad + wd].copy()


def conv_wu(g_z, x, k, stride, pad, cfg=None):
    """The true weight gradient: ``dw[m,n,ky,kx] = sum_{b,oy,ox} g_z[b,m,oy,ox] *
    xpad[b,n,oy*s+ky,ox*s+kx]``."""
    g_z, x = _f64(g_z), _f64(x)
    b, m, ho, wo = g_z.shape
    _, n, h, wd = x.shape
    xp = np.zeros((b, n, h + 2 * pad, wd + 2 * pad))
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    dw = np.zeros((m, n, k, k))
    for ky in range(k):
        for kx in range(k):
            xs = xp[:, :, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride]
            dw[:, :, ky, kx] = np.einsum("bmyx,bnyx->mn", g_z, xs)
    return dw


def bias_grad(g_z, cfg=None):
    """``db[m] = sum_{b,oy,ox} g_z[b,m,oy,ox]``."""
    return _f64(g_z).sum(axis=(0, 2, 3))


def fc_fp(x, w, bias, cfg=None):
    """``y[b,m] = bias[m] + sum_n w[m,n] x[b,n]``."""
    y = _f64(x) @ _f64(w).T
    if bias is not None:
        y = y + _f64(bias)[None, :]
    return y


def fc_bp(g_y, w, cfg=None):
    """``g_x[b,n] = sum_m g_y[b,m] w[m,n]``."""
    return _f64(g_y) @ _f64(w)


def fc_wu(g_y, x, cfg=None):
    """``dw[m,n] = sum_b g_y[b,m] x[b,n]``."""
    return _f64(g_y).T @ _f64(x)


def relu_fp(x):
    """``max(x, 0)``."""
    x = _f64(x)
    return np.where(x > 0, x, 0.0)


def relu_bp(g_y, y):
    """``g_y`` where the ReLU output is positive, else 0."""
    return np.where(_f64(y) > 0, _f64(g_y), 0.0)


def maxpool_fp(x):
    """2x2 stride-2 max-pool; ``idx = 2*di + dj`` of the first maximum in scan order
    (odd last row/column dropped)."""
    x = _f64(x)
    b, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    win = x[:, :, :2 * h2, :2 * w2].reshape(b, c, h2, 2, w2, 2)
    win = win.transpose(0, 1, 2, 4, 3, 5).reshape(b, c, h2, w2, 4)
    idx = np.argmax(win, axis=-1)          # argmax returns the first maximum
    y = np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]
    return y, idx.astype(np.uint32)


def maxpool_bp(g_y, idx, in_hw):
    """The gradient goes to the winning element of each window; everything else is 0."""
    g_y = _f64(g_y)
    b, c, h2, w2 = g_y.shape
    out = np.zeros((b, c) + tuple(in_hw))
    for i in range(h2):
        for j in range(w2):
            for bi in range(b):
                for ci in range(c):
                    di, dj = divmod(int(idx[bi, ci, i, j]), 2)
                    out[bi, ci, 2 * i + di, 2 * j + dj] = g_y[bi, ci, i, j]
    return out


def sgd(w, dw, lr, cfg=None, mu=None, v=None):
    """torch.optim.SGD (no dampening, no weight decay, no Nesterov): ``v' = mu*v + dw``,
    ``w' = w - lr*v'``; plain ``w - lr*dw`` without momentum. Returns ``(w', v')``."""
    w, dw = _f64(w), _f64(dw)
    if mu is None:
        return w - lr * dw, None
    v2 = mu * _f64(v) + dw
    return w - lr * v2, v2


def flatten_hw(x, tn):
    """``x[b,c,h,w]`` -> ``x[b, n]`` with ``n = ((c//tn * h_size + h) * w_size + w) * tn +
    c % tn`` (the DRAM order of docs/layout.md), channels padded to a multiple of tn with 0."""
    x = _f64(x)
    b, c, h, w = x.shape
    groups = -(-c // tn)
    xp = np.zeros((b, groups * tn, h, w))
    xp[:, :c] = x
    return xp.reshape(b, groups, tn, h, w).transpose(0, 1, 3, 4, 2).reshape(b, -1)


def unflatten_hw(x2d, c, h, w, tn):
    """Inverse of :func:`flatten_hw`."""
    x2d = _f64(x2d)
    b = x2d.shape[0]
    groups = -(-c // tn)
    x = x2d.reshape(b, groups, h, w, tn).transpose(0, 1, 4, 2, 3).reshape(b, groups * tn, h, w)
    return x[:, :c].copy()
