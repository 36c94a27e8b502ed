"""Tile programs: what the loaders write into the tile buffers and which jobs the tile engine
runs for one tile of a layer and phase — and the result the numpy model expects from it.

This is the host-side reference for the tile-job fields of :mod:`ef_train_hdl.core.job` and
for the bank contents of each phase (the loaders of the whole accelerator implement it):

- FP: IFM bank j holds input channel ``g*Tn + j`` of the rows the tile needs (halo included,
  the padding rows excluded); PE (mi, nj)'s weight bank holds ``w[c*Tm+mi, g*Tn+nj]`` tap by tap
  from word ``g*K*K``; the biases of the chunk sit in bank (mi, 0) after the weights.
- BP: IFM bank j holds output-gradient channel ``g*Tn + j``; PE (r, j)'s weight bank holds the
  **transposed** weight ``w[g*Tn+j, c*Tm+r]`` (the loader's bank choice does the transpose,
  the address generator the flip).
- WU: IFM bank j holds input channel ``g*Tn + j``; OFM bank mi the output gradient of channel
  ``c*Tm + mi``; PE (mi, nj)'s weight bank accumulates ``dw[c*Tm+mi, g*Tn+nj]`` as P partial
  sums per tap from word ``g*K*K*P``.

A program is a list of steps: ``("w", bank, addr, value)``, ``("ifm", half, bank, addr,
value)``, ``("ofm", half, bank, addr, value)``, ``("job", fields)``, ``("wait",)`` (until every
job issued so far is done) and ``("drain", fields)``; ``expected`` is the drained words in
order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import ops
from .fp import as_f32

__all__ = ["TileProgram", "conv_fp_tile", "conv_bp_tile", "conv_wu_tile", "bias_grad_tile",
           "PHASE_CODES"]

PHASE_CODES = {"FP": 0, "BP": 1, "WU": 2}


def _bits(a):
    return np.asarray(as_f32(a)).view(np.uint32)


@dataclass
class TileProgram:
    steps: list = field(default_factory=list)
    expected: np.ndarray = None     # uint32 words, drain order
    macs: int = 0                   # useful MAC steps of the PE array (operations)
    ops: int = 0                    # operations the engine issues (incl. padding and nulls)


def _log2(v):
    return (v - 1).bit_length()


def _job(phase, **kw):
    base = dict(phase=PHASE_CODES[phase], kernel=1, stride=1, in_rows=1, in_cols=1,
                out_rows=1, out_cols=1, row_off=0, col_off=0, ifm_half=0, ofm_half=0,
                ifm_base=0, w_base=0, ofm_base=0, term_base=0, log2_p=0, bias=0,
                bias_addr=0, ones=0)
    base.update(kw)
    return base


def _drain_order(res, cfg, lanes):
    """res[lane, pixel] -> words: pixel-major, lanes in beats of ``lanes`` (all Tm lanes)."""
    return res.T.reshape(-1)


def _channel(a, idx):
    return a[idx] if 0 <= idx < a.shape[0] else np.zeros_like(a[0])


def conv_fp_tile(x, w, bias, stride, pad, cfg, *, image=0, chunk=0, rows=None):
    """FP of output rows ``rows`` (default all) of image ``image``, output channels
    ``chunk*Tm ..``: one job per input-channel group, IFM halves alternating."""
    x, w = as_f32(x), as_f32(w)
    b_, n, h, wd = x.shape
    mo, _, k, _ = w.shape
    tm, tn = cfg.tm, cfg.tn
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    oy0, oy1 = rows if rows is not None else (0, ho)
    r0 = max(0, oy0 * stride - pad)
    r1 = min(h, (oy1 - 1) * stride - pad + k)
    groups = -(-n // tn)
    kk = k * k
    p = ops.interleave_fp(wo, cfg)
    prog = TileProgram()
    for mi in range(tm):
        for g in range(groups):
            for nj in range(tn):
                for t in range(kk):
                    wm = _channel(w, chunk * tm + mi)
                    val = _channel(wm, g * tn + nj)[t // k, t % k]
                    prog.steps.append(("w", mi * tn + nj, g * kk + t, int(_bits(val))))
        if bias is not None:
            bv = as_f32(bias)[chunk * tm + mi] if chunk * tm + mi < mo else np.float32(0)
            prog.steps.append(("w", mi * tn, groups * kk, int(_bits(bv))))
    for g in range(groups):
        for j in range(tn):
            plane = _channel(x[image], g * tn + j)[r0:r1]
            for a, v in enumerate(_bits(plane).reshape(-1)):
                prog.steps.append(("ifm", g % 2, j, a, int(v)))
        prog.steps.append(("job", _job(
            "FP", kernel=k, stride=stride, in_rows=r1 - r0, in_cols=wd, out_rows=oy1 - oy0,
            out_cols=wo, row_off=oy0 * stride - pad - r0, col_off=-pad, ifm_half=g % 2,
            w_base=g * kk, term_base=g, log2_p=_log2(p), bias=int(bias is not None and g == 0),
            bias_addr=groups * kk)))
        prog.ops += kk * (oy1 - oy0) * wo
    prog.steps.append(("wait",))
    prog.steps.append(("drain", dict(source=0, half=0, base=0, count=(oy1 - oy0) * wo,
                                     log2_p=_log2(p))))
    z = ops.conv_fp(x[image:image + 1], w, bias, stride, pad, cfg)[0]
    res = np.zeros((tm, (oy1 - oy0) * wo), np.float32)
    for mi in range(tm):
        if chunk * tm + mi < mo:
            res[mi] = z[chunk * tm + mi, oy0:oy1].reshape(-1)
    prog.expected = _bits(_drain_order(res, cfg, None))
    prog.macs = prog.ops
    return prog


def conv_bp_tile(g_z, w, in_hw, stride, pad, cfg, *, image=0, chunk=0, rows=None):
    """BP of input-gradient rows ``rows`` of image ``image``, input channels ``chunk*Tm ..``:
    one job per output-channel group."""
    g_z, w = as_f32(g_z), as_f32(w)
    b_, mo, ho, wo = g_z.shape
    _, n, k, _ = w.shape
    h, wd = in_hw
    tm, tn = cfg.tm, cfg.tn
    s = stride
    y0, y1 = rows if rows is not None else (0, h)
    r0 = max(0, -(-(y0 + pad - k + 1) // s))
    r1 = min(ho, (y1 - 1 + pad) // s + 1)
    if r1 <= r0:
        r0, r1 = min(r0, ho - 1), min(r0, ho - 1) + 1
    groups = -(-mo // tn)
    kk = k * k
    p = ops.interleave_bp(wd, s, cfg)
    prog = TileProgram()
    for r in range(tm):
        for g in range(groups):
            for j in range(tn):
                for t in range(kk):
                    wm = _channel(w, g * tn + j)
                    val = _channel(wm, chunk * tm + r)[t // k, t % k]
                    prog.steps.append(("w", r * tn + j, g * kk + t, int(_bits(val))))
    for g in range(groups):
        for j in range(tn):
            plane = _channel(g_z[image], g * tn + j)[r0:r1]
            for a, v in enumerate(_bits(plane).reshape(-1)):
                prog.steps.append(("ifm", g % 2, j, a, int(v)))
        prog.steps.append(("job", _job(
            "BP", kernel=k, stride=s, in_rows=r1 - r0, in_cols=wo, out_rows=y1 - y0,
            out_cols=wd, row_off=y0 + pad - s * r0, col_off=pad, ifm_half=g % 2,
            w_base=g * kk, term_base=g, log2_p=_log2(p))))
    prog.steps.append(("wait",))
    prog.steps.append(("drain", dict(source=0, half=0, base=0, count=(y1 - y0) * wd,
                                     log2_p=_log2(p))))
    gx = ops.conv_bp(g_z[image:image + 1], w, in_hw, s, pad, cfg)[0]
    res = np.zeros((tm, (y1 - y0) * wd), np.float32)
    for r in range(tm):
        if chunk * tm + r < n:
            res[r] = gx[chunk * tm + r, y0:y1].reshape(-1)
    prog.expected = _bits(_drain_order(res, cfg, None))
    return prog


def _wu_program(g_z, x, k, stride, pad, cfg, chunk, group, ones):
    b_, mo, ho, wo = g_z.shape
    _, n, h, wd = x.shape
    tm, tn = cfg.tm, cfg.tn
    kk = k * k
    p = ops.interleave_wu(k, cfg)
    prog = TileProgram()
    r0, r1 = 0, h
    for b in range(b_):
        half = b % 2
        if not ones:
            for j in range(tn):
                plane = _channel(x[b], group * tn + j)[r0:r1]
                for a, v in enumerate(_bits(plane).reshape(-1)):
                    prog.steps.append(("ifm", half, j, a, int(v)))
        for mi in range(tm):
            plane = _channel(g_z[b], chunk * tm + mi)
            for a, v in enumerate(_bits(plane).reshape(-1)):
                prog.steps.append(("ofm", half, mi, a, int(v)))
        prog.steps.append(("job", _job(
            "WU", kernel=k, stride=stride, in_rows=r1 - r0, in_cols=wd, out_rows=ho,
            out_cols=wo, row_off=-pad, col_off=-pad, ifm_half=half, ofm_half=half,
            term_base=b * ho * wo, log2_p=_log2(p), ones=int(ones))))
    prog.steps.append(("wait",))
    prog.steps.append(("drain", dict(source=1, half=0, base=0, count=kk, log2_p=_log2(p))))
    return prog


def conv_wu_tile(g_z, x, k, stride, pad, cfg, *, chunk=0, group=0):
    """WU of output channels ``chunk*Tm ..`` x input channels ``group*Tn ..`` over the whole
    batch (one job per image, all rows): the weight gradients, drained tap by tap."""
    g_z, x = as_f32(g_z), as_f32(x)
    prog = _wu_program(g_z, x, k, stride, pad, cfg, chunk, group, ones=False)
    dw = ops.conv_wu(g_z, x, k, stride, pad, cfg)
    mo, n = dw.shape[:2]
    tm, tn = cfg.tm, cfg.tn
    res = np.zeros((k * k, tm, tn), np.float32)
    for mi in range(tm):
        for nj in range(tn):
            if chunk * tm + mi < mo and group * tn + nj < n:
                res[:, mi, nj] = dw[chunk * tm + mi, group * tn + nj].reshape(-1)
    prog.expected = _bits(res.reshape(-1))
    return prog


def bias_grad_tile(g_z, cfg, *, chunk=0):
    """The bias gradient of output channels ``chunk*Tm ..``: a WU job whose activation
    operand is 1.0; every PE of row mi ends with ``db[chunk*Tm + mi]``."""
    g_z = as_f32(g_z)
    b_, mo, ho, wo = g_z.shape
    dummy = np.zeros((b_, cfg.tn, ho, wo), np.float32)
    prog = _wu_program(g_z, dummy, 1, 1, 0, cfg, chunk, 0, ones=True)
    db = ops.bias_grad(g_z, cfg)
    tm, tn = cfg.tm, cfg.tn
    res = np.zeros((1, tm, tn), np.float32)
    for mi in range(tm):
        if chunk * tm + mi < mo:
            res[0, mi, :] = db[chunk * tm + mi]
    prog.expected = _bits(res.reshape(-1))
    return prog
