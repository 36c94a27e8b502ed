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
order. The load steps are single words, as the contents are easiest to state;
:func:`port_steps` groups them into the beats of the tile engine's load ports (a whole pixel
for the IFM/OFM banks, ``weight_load_lanes`` words for the weight banks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import ops
from .fp import as_f32

__all__ = ["TileProgram", "job_ops", "job_cycles", "job_end", "jobs_schedule", "port_steps", "conv_fp_tile", "conv_bp_tile", "conv_wu_tile", "bias_grad_tile",
           "PHASE_CODES"]

PHASE_CODES = {"FP": 0, "BP": 1, "WU": 2}


def _bits(a):
    return np.asarray(as_f32(a)).view(np.uint32)


@dataclass
class TileProgram:
    steps: list = field(default_factory=list)
    expected: np.ndarray = None     # uint32 words, drain order

    @property
    def jobs(self):
        return [step[1] for step in self.steps if step[0] == "job"]


def _log2(v):
    return (v - 1).bit_length()


def _job(phase, **kw):
    base = dict(phase=PHASE_CODES[phase], kernel=1, stride=1, in_rows=1, in_cols=1,
                out_rows=1, out_cols=1, row_off=0, col_off=0, ifm_half=0, ofm_half=0,
                ifm_base=0, w_base=0, ofm_base=0, term_base=0, log2_p=0, bias=0,
                bias_addr=0, ones=0)
    base.update(kw)
    return base


def _channel(a, idx):
    return a[idx] if 0 <= idx < a.shape[0] else np.zeros_like(a[0])


def _load_weights(prog, cfg, groups, k, weight):
    """PE (mi, nj)'s bank from word ``g*K*K``: ``weight(mi, g, nj)``, a K x K array, tap by tap."""
    for mi in range(cfg.tm):
        for g in range(groups):
            for nj in range(cfg.tn):
                for t, v in enumerate(_bits(weight(mi, g, nj)).reshape(-1)):
                    prog.steps.append(("w", mi * cfg.tn + nj, g * k * k + t, int(v)))


def _load_plane(prog, kind, half, bank, plane):
    for a, v in enumerate(_bits(plane).reshape(-1)):
        prog.steps.append((kind, half, bank, a, int(v)))


def _drain_lanes(prog, cfg, result, chunk, rows, p):
    """Drain the OFM half 0 of a FP/BP tile: ``result[c, y, x]`` of the whole layer's image,
    lanes ``chunk*Tm ..``, rows ``rows``, pixel-major."""
    y0, y1 = rows
    count = (y1 - y0) * result.shape[2]
    prog.steps.append(("wait",))
    prog.steps.append(("drain", dict(source=0, half=0, base=0, count=count, log2_p=_log2(p))))
    res = np.zeros((cfg.tm, count), np.float32)
    for lane in range(cfg.tm):
        if chunk * cfg.tm + lane < result.shape[0]:
            res[lane] = result[chunk * cfg.tm + lane, y0:y1].reshape(-1)
    prog.expected = _bits(res.T.reshape(-1))


def job_ops(job):
    """Operations (MAC steps of the whole array) a compute job issues: taps x output pixels;
    in BP with stride 2 only the taps of each pixel's parity."""
    k, s = job["kernel"], job["stride"]
    rows, cols = job["out_rows"], job["out_cols"]
    if job["phase"] != PHASE_CODES["BP"] or s == 1:
        return k * k * rows * cols
    ty = [sum(1 for ky in range(k) if (ky - y - job["row_off"]) % 2 == 0) for y in range(rows)]
    tx = [sum(1 for kx in range(k) if (kx - x - job["col_off"]) % 2 == 0) for x in range(cols)]
    return sum(ty) * sum(tx)


def _phase_taps(job):
    """``(taps, pixels)`` of each stride phase of a job (one phase unless BP with stride 2):
    the taps every pixel of the phase gets and the pixels of the phase."""
    k, s = job["kernel"], job["stride"]
    rows, cols = job["out_rows"], job["out_cols"]
    if job["phase"] != PHASE_CODES["BP"] or s == 1:
        return [(k * k, rows * cols)]
    out = []
    for py in (0, 1):
        for px in (0, 1):
            y0, x0 = (py ^ (job["row_off"] & 1)), (px ^ (job["col_off"] & 1))
            npy, npx = max(0, (rows - y0 + 1) // 2), max(0, (cols - x0 + 1) // 2)
            ty = sum(1 for ky in range(k) if (ky - y0 - job["row_off"]) % 2 == 0)
            tx = sum(1 for kx in range(k) if (kx - x0 - job["col_off"]) % 2 == 0)
            out.append((ty * tx, npy * npx))
    return out


def _job_timing(job, cfg):
    """``(cycles, ends_in_run)``: :func:`job_cycles`, and whether the job's last state is an
    operation (else a phase with nothing to issue, which goes through FLUSH)."""
    p = 1 << job["log2_p"]
    wu = job["phase"] == PHASE_CODES["WU"]
    fp = job["phase"] == PHASE_CODES["FP"]
    first = job["term_base"] == 0
    cycles = 2 + int(bool(job["bias"]) and fp) + cfg.pe_depth + 2
    ends_in_run = True
    for taps, pixels in _phase_taps(job):
        cycles += 4                             # SETUP_A, SETUP_B, SETUP_C, START
        if pixels == 0 or (taps == 0 and not first):
            cycles += 1                         # NEXT_PHASE: nothing to issue
            ends_in_run = False
            continue
        ends_in_run = True
        if wu:
            area = job["out_rows"] * job["out_cols"]
            if first and area < p:
                cycles += 2 + p * taps          # fill pass, then SETUP_C, START again
            cycles += taps * area
        elif taps == 0:
            cycles += p * pixels
        else:
            if first and taps < p:
                cycles += 2 + p * pixels
            cycles += taps * pixels
    return cycles, ends_in_run


def job_cycles(job, cfg):
    """Cycles the tile engine is busy with ``job`` (``cycles_active``), with no stalls.

    The address generator's states (core/addrgen.py): 2 of checks, 1 for a FP bias preamble,
    per stride phase 4 of set-up and its operations (a phase with nothing to issue: 5 in all);
    a phase of a chain's first job (``term_base == 0``) that brings fewer terms than the P
    partial-sum slots first runs a fill pass of P null operations per pixel (WU: per tap) with
    2 cycles of its own, and a phase without taps (K < s in BP) runs P null operations per
    pixel in the first job; then the PE array's depth plus 2 to flush. With no fill and every
    phase tapped this is ``job_ops(job) + cfg.job_overhead(phases, bias)``.
    """
    return _job_timing(job, cfg)[0]


def job_end(start, job, cfg, bg_done):
    """``(done, next_take)`` of a job whose CHECK0 is at cycle ``start``, with the previous
    job's flush done at ``bg_done`` (None: none in flight): the cycle of its ``done``, and the
    first cycle the generator may take the next job (of the same phase; one of another phase
    also waits for ``done``). The cycle of the last operation takes the next job itself when
    the previous flush is over by then; else the job waits in FLUSH."""
    cycles, ends_in_run = _job_timing(job, cfg)
    flush = cfg.pe_depth
    last = start + cycles - flush - 3           # the last operation (or NEXT_PHASE)
    if ends_in_run and (bg_done is None or bg_done <= last):
        return last + flush + 2, last
    move = max(last + 1, bg_done if bg_done is not None else 0)     # FLUSH moves it
    return move + flush + 1, move + 1


def jobs_schedule(jobs, cfg, ready=None):
    """When each job of a sequence runs in the tile engine: ``[(start, done)]`` in cycles.

    A job's foreground (checks, set-up, operations) starts when it is taken; its flush then
    runs in the background (``pe_depth + 2`` more cycles to its ``done``) while the next job of
    the same phase is taken in the cycle of its last operation (:func:`job_end`); a job of
    another phase waits for the flush. At most one job flushes at a time. ``ready[i]`` is the
    earliest cycle job ``i`` is at the engine's port (default: all at 0, back to back).
    ``start`` counts from the cycle the job is taken; the engine is active from the first
    start to the last done.
    """
    out = []
    idle_at = 0              # first cycle the generator may take a job
    bg_done = None           # cycle of the flushing job's done
    bg_phase = None
    for i, job in enumerate(jobs):
        take = max(idle_at, ready[i] if ready else 0)
        if bg_done is not None and bg_phase != job["phase"]:
            take = max(take, bg_done)
        start = take + 1
        done, idle_at = job_end(start, job, cfg, bg_done)
        out.append((start, done))
        bg_done, bg_phase = done, job["phase"]
    return out


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
    _load_weights(prog, cfg, groups, k,
                  lambda mi, g, nj: _channel(_channel(w, chunk * tm + mi), g * tn + nj))
    if bias is not None:
        for mi in range(tm):
            bv = _channel(as_f32(bias)[:, None], chunk * tm + mi)[0]
            prog.steps.append(("w", mi * tn, groups * kk, int(_bits(bv))))
    for g in range(groups):
        for j in range(tn):
            _load_plane(prog, "ifm", g % 2, j, _channel(x[image], g * tn + j)[r0:r1])
        prog.steps.append(("job", _job(
            "FP", kernel=k, stride=stride, in_rows=r1 - r0, in_cols=wd, out_rows=oy1 - oy0,
            out_cols=wo, row_off=oy0 * stride - pad - r0, col_off=-pad, ifm_half=g % 2,
            w_base=g * kk, term_base=g, log2_p=_log2(p), bias=int(bias is not None and g == 0),
            bias_addr=groups * kk)))
    z = ops.conv_fp(x[image:image + 1], w, bias, stride, pad, cfg)[0]
    _drain_lanes(prog, cfg, z, chunk, (oy0, oy1), p)
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
    _load_weights(prog, cfg, groups, k,       # transposed: PE (r, j) holds w[g*Tn+j, c*Tm+r]
                  lambda r, g, j: _channel(_channel(w, g * tn + j), chunk * tm + r))
    for g in range(groups):
        for j in range(tn):
            _load_plane(prog, "ifm", g % 2, j, _channel(g_z[image], g * tn + j)[r0:r1])
        prog.steps.append(("job", _job(
            "BP", kernel=k, stride=s, in_rows=r1 - r0, in_cols=wo, out_rows=y1 - y0,
            out_cols=wd, row_off=y0 + pad - s * r0, col_off=pad, ifm_half=g % 2,
            w_base=g * kk, term_base=g, log2_p=_log2(p))))
    gx = ops.conv_bp(g_z[image:image + 1], w, in_hw, s, pad, cfg)[0]
    _drain_lanes(prog, cfg, gx, chunk, (y0, y1), p)
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
                _load_plane(prog, "ifm", half, j, _channel(x[b], group * tn + j)[r0:r1])
        for mi in range(tm):
            _load_plane(prog, "ofm", half, mi, _channel(g_z[b], chunk * tm + mi))
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


def port_steps(prog, cfg):
    """``prog.steps`` with its load words grouped into tile-engine port beats.

    Yields ``("ifm" | "ofm", payload)`` (``bank_load_layout``: a pixel, every bank at one
    address), ``("w", payload)`` (``weight_load_layout``: ``lanes`` consecutive banks of one
    PE row, or — for words that do not fill such a beat, like the biases in column 0 — of one
    PE column, with ``en`` marking the lanes present) and the other steps unchanged. Loads
    between two non-load steps are grouped; their order within the group does not matter
    (each word has its own bank and address). A pixel with a bank missing is an error: every
    program here loads whole planes.
    """
    lanes = min(cfg.floats_per_beat, cfg.tm, cfg.tn)
    pending = {"ifm": {}, "ofm": {}, "w": {}}

    def flush():
        for kind in ("ifm", "ofm"):
            banks = cfg.tn if kind == "ifm" else cfg.tm
            pixels = {}
            for (half, bank, addr), value in pending[kind].items():
                pixels.setdefault((half, addr), {})[bank] = value
            for (half, addr), words in pixels.items():
                if len(words) != banks:
                    raise ValueError(f"{kind} half {half} word {addr}: banks "
                                     f"{sorted(words)} loaded, not all {banks}")
                yield kind, dict(half=half, addr=addr, data=[words[j] for j in range(banks)])
            pending[kind].clear()
        words = dict(pending["w"])
        pending["w"].clear()
        # Full row beats first; what is left (a bias column) goes as column beats with ``en``.
        for transpose in (0, 1):
            beats = {}
            for (bank, addr), value in words.items():
                r, j = divmod(bank, cfg.tn)
                if transpose:
                    key, lane = (r - r % lanes, j, addr), r % lanes
                else:
                    key, lane = (r, j - j % lanes, addr), j % lanes
                beats.setdefault(key, {})[lane] = (bank, value)
            for (row, col, addr), lane_words in beats.items():
                if not transpose and len(lane_words) < lanes:
                    continue
                data_, en = [0] * lanes, 0
                for i, (bank, value) in lane_words.items():
                    data_[i] = value
                    en |= 1 << i
                    del words[(bank, addr)]
                yield "w", dict(row=row, col=col, transpose=transpose, addr=addr, data=data_,
                                en=en)
        assert not words

    for step in prog.steps:
        kind = step[0]
        if kind == "w":
            pending["w"][(step[1], step[2])] = step[3]
        elif kind in ("ifm", "ofm"):
            pending[kind][(step[1], step[2], step[3])] = step[4]
        else:
            yield from flush()
            yield step
    yield from flush()
