"""The reshaped DRAM layouts ("intra-tile continuous memory allocation") and their DMA transfers.

Every tensor the accelerator touches lives in DRAM in an order chosen so that every tile that
any phase loads or stores is one contiguous run of words, so the DMA always issues long bursts
(docs/layout.md has the exact orders and a picture):

- activations and gradients, per image ``b``, channels grouped by Tn (``c = g*Tn + j``, padded
  with zero channels to a multiple of Tn): ``[b][g][h][w][j]`` (:class:`ActivationLayout`);
  an FC layer's input and output are one image whose pixels are the batch
  (:func:`fc_activation_layout`); max-pool indices (uint32) are laid out like the pooled output;
- conv and FC weights in (Tm x Tn) blocks: ``[mg][ng][ky][kx][mi][nj]``
  (:class:`WeightLayout`); weight gradients and the momentum buffer use the same layout;
- biases ``[m]`` padded to a multiple of Tm (:class:`BiasLayout`).

Words are 32 bits; addresses here are word offsets from the start of the tensor. The compiler
places every tensor at a 4 KiB-aligned base, which :func:`bursts` assumes.

:func:`tile_transfers` enumerates, for a layer, phase and tiling, every DMA transfer of every
tile load and store; :func:`burst_stats` turns them into AXI burst counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .workloads import Layer, Phase

__all__ = [
    "ActivationLayout", "WeightLayout", "BiasLayout", "fc_activation_layout",
    "pack_activations", "unpack_activations", "pack_weights", "unpack_weights",
    "pack_bias", "unpack_bias", "pack_fc_activations", "unpack_fc_activations",
    "flat_length", "flatten_index", "fc_weights_from_torch",
    "Transfer", "tile_transfers", "tile_steps", "bp_taps", "bursts", "burst_stats", "merge_runs",
]


def _ceil_div(a, b):
    return -(-a // b)


def _check_positive(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


# -- activations and gradients -----------------------------------------------------------------

@dataclass(frozen=True)
class ActivationLayout:
    """``[b][g][h][w][j]`` with ``c = g*tn + j``: an activation, gradient or pool-index tensor.

    A strip of whole rows ``[h0, h1)`` of channel group ``g`` of image ``b`` is the one run
    :meth:`rows_run`; a strip of all rows of consecutive groups of one image is one run too.
    """

    batch: int
    channels: int
    height: int
    width: int
    tn: int

    def __post_init__(self):
        for name in ("batch", "channels", "height", "width", "tn"):
            _check_positive(name, getattr(self, name))
        # Cached: address arithmetic runs once per transfer of every modelled tile.
        object.__setattr__(self, "groups", _ceil_div(self.channels, self.tn))

    @property
    def image_words(self):
        return self.groups * self.height * self.width * self.tn

    @property
    def words(self):
        """Words the tensor occupies in DRAM (padding channels included)."""
        return self.batch * self.image_words

    def address(self, b, c, h, w):
        """Word offset of element ``[b, c, h, w]`` (works elementwise on numpy arrays)."""
        g, j = c // self.tn, c % self.tn
        return (((b * self.groups + g) * self.height + h) * self.width + w) * self.tn + j

    def rows_run(self, b, g, h0, h1):
        """``(offset, words)`` of rows ``[h0, h1)`` of group ``g`` of image ``b``."""
        if not (0 <= h0 <= h1 <= self.height and 0 <= g < self.groups and 0 <= b < self.batch):
            raise ValueError(f"rows [{h0}, {h1}) of group {g} of image {b} are outside "
                             f"the {self.batch}x{self.groups}x{self.height} tensor")
        return ((((b * self.groups + g) * self.height + h0) * self.width) * self.tn,
                (h1 - h0) * self.width * self.tn)

    def pack(self, x, dtype=np.float32):
        """``x[b, c, h, w]`` -> flat DRAM image (padding channels are zero)."""
        x = np.asarray(x)
        shape = (self.batch, self.channels, self.height, self.width)
        if x.shape != shape:
            raise ValueError(f"expected an array of shape {shape}, not {x.shape}")
        pad = np.zeros((self.batch, self.groups * self.tn, self.height, self.width), dtype)
        pad[:, :self.channels] = x
        pad = pad.reshape(self.batch, self.groups, self.tn, self.height, self.width)
        return np.ascontiguousarray(pad.transpose(0, 1, 3, 4, 2)).reshape(-1)

    def unpack(self, flat):
        """Flat DRAM image -> ``x[b, c, h, w]`` (padding channels dropped)."""
        flat = np.asarray(flat)
        if flat.shape != (self.words,):
            raise ValueError(f"expected {self.words} words, not an array of shape {flat.shape}")
        x = flat.reshape(self.batch, self.groups, self.height, self.width, self.tn)
        x = x.transpose(0, 1, 4, 2, 3).reshape(self.batch, self.groups * self.tn,
                                                 self.height, self.width)
        return np.ascontiguousarray(x[:, :self.channels])


def fc_activation_layout(batch, features, tn):
    """An FC input or output ``x[b, n]``: one image whose pixels are the batch, ``[g][b][j]``."""
    return ActivationLayout(1, features, 1, batch, tn)


def pack_activations(x, tn, dtype=np.float32):
    """``x[b, c, h, w]`` -> flat ``[b][g][h][w][j]`` DRAM image."""
    return ActivationLayout(*np.shape(x), tn).pack(x, dtype)


def unpack_activations(flat, shape, tn):
    """Inverse of :func:`pack_activations` for an ``x`` of ``shape = (b, c, h, w)``."""
    return ActivationLayout(*shape, tn).unpack(flat)


def pack_fc_activations(x, tn, dtype=np.float32):
    """``x[b, n]`` (an FC input or output) -> flat ``[g][b][j]`` DRAM image."""
    x = np.asarray(x)
    return fc_activation_layout(x.shape[0], x.shape[1], tn).pack(x.T[None, :, None, :], dtype)


def unpack_fc_activations(flat, batch, features, tn):
    return fc_activation_layout(batch, features, tn).unpack(flat)[0, :, 0, :].T.copy()


# -- flatten (conv output -> FC input) ---------------------------------------------------------

def flat_length(channels, height, width, tn):
    """Length of the FC input vector that flattens a ``channels x height x width`` map: the
    words of one image in the conv layout, padding channels included."""
    return _ceil_div(channels, tn) * tn * height * width


def flatten_index(c, h, w, height, width, tn):
    """FC input index of element ``[c, h, w]``: its word offset inside its image."""
    return ((c // tn * height + h) * width + w) * tn + c % tn


def fc_weights_from_torch(w, channels, height, width, tn):
    """PyTorch ``Linear`` weights ``w[m, c*h*w]`` (NCHW flatten) -> ``w[m, n]`` in the DRAM
    flatten order; padding columns are zero."""
    w = np.asarray(w)
    m = w.shape[0]
    if w.shape[1] != channels * height * width:
        raise ValueError(f"w has {w.shape[1]} inputs, not {channels}*{height}*{width}")
    out = np.zeros((m, flat_length(channels, height, width, tn)), w.dtype)
    c, h, x = np.meshgrid(np.arange(channels), np.arange(height), np.arange(width),
                          indexing="ij")
    out[:, flatten_index(c, h, x, height, width, tn).reshape(-1)] = w
    return out


# -- weights -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightLayout:
    """``[mg][ng][ky][kx][mi][nj]``, ``m = mg*tm + mi``, ``n = ng*tn + nj``; zero padded.

    One (Tm x Tn) block is ``k*k*tm*tn`` consecutive words and holds, tap after tap, the word
    of every PE (row-major over the PE array), so a DMA beat fills consecutive PEs' banks.
    FP reads the blocks of output group ``mg`` for all ``ng`` (one run: the weights kept on
    chip for reuse across the batch); BP reads the same blocks, a column ``ng`` at a time,
    one run per block; WU writes block by block. Weight gradients and momentum: the same.
    """

    out_channels: int
    in_channels: int
    kernel: int
    tm: int
    tn: int

    def __post_init__(self):
        for name in ("out_channels", "in_channels", "kernel", "tm", "tn"):
            _check_positive(name, getattr(self, name))

    @property
    def m_groups(self):
        return _ceil_div(self.out_channels, self.tm)

    @property
    def n_groups(self):
        return _ceil_div(self.in_channels, self.tn)

    @property
    def block_words(self):
        return self.kernel * self.kernel * self.tm * self.tn

    @property
    def words(self):
        return self.m_groups * self.n_groups * self.block_words

    def block_offset(self, mg, ng):
        return (mg * self.n_groups + ng) * self.block_words

    def address(self, m, n, ky, kx):
        mg, mi, ng, nj = m // self.tm, m % self.tm, n // self.tn, n % self.tn
        return (self.block_offset(mg, ng)
                + ((ky * self.kernel + kx) * self.tm + mi) * self.tn + nj)

    def pack(self, w, dtype=np.float32):
        """``w[m, n, ky, kx]`` (or FC ``w[m, n]``) -> flat DRAM image."""
        w = np.asarray(w)
        k = self.kernel
        if w.ndim == 2 and k == 1:
            w = w[:, :, None, None]
        shape = (self.out_channels, self.in_channels, k, k)
        if w.shape != shape:
            raise ValueError(f"expected weights of shape {shape}, not {w.shape}")
        pad = np.zeros((self.m_groups * self.tm, self.n_groups * self.tn, k, k), dtype)
        pad[:self.out_channels, :self.in_channels] = w
        pad = pad.reshape(self.m_groups, self.tm, self.n_groups, self.tn, k, k)
        return np.ascontiguousarray(pad.transpose(0, 2, 4, 5, 1, 3)).reshape(-1)

    def unpack(self, flat, fc=False):
        """Flat DRAM image -> ``w[m, n, ky, kx]`` (``w[m, n]`` when ``fc``)."""
        flat = np.asarray(flat)
        if flat.shape != (self.words,):
            raise ValueError(f"expected {self.words} words, not an array of shape {flat.shape}")
        k = self.kernel
        w = flat.reshape(self.m_groups, self.n_groups, k, k, self.tm, self.tn)
        w = w.transpose(0, 4, 1, 5, 2, 3).reshape(self.m_groups * self.tm,
                                                  self.n_groups * self.tn, k, k)
        w = np.ascontiguousarray(w[:self.out_channels, :self.in_channels])
        return w[:, :, 0, 0].copy() if fc else w


def pack_weights(w, tm, tn, dtype=np.float32):
    """Conv ``w[m, n, k, k]`` or FC ``w[m, n]`` -> flat DRAM image."""
    w = np.asarray(w)
    k = 1 if w.ndim == 2 else w.shape[2]
    return WeightLayout(w.shape[0], w.shape[1], k, tm, tn).pack(w, dtype)


def unpack_weights(flat, shape, tm, tn):
    """Inverse of :func:`pack_weights` for weights of ``shape`` (4-D conv or 2-D FC)."""
    if len(shape) == 2:
        return WeightLayout(shape[0], shape[1], 1, tm, tn).unpack(flat, fc=True)
    return WeightLayout(shape[0], shape[1], shape[2], tm, tn).unpack(flat)


@dataclass(frozen=True)
class BiasLayout:
    """``[m]`` padded with zeros to a multiple of Tm (one Tm-word run per output group)."""

    channels: int
    tm: int

    @property
    def words(self):
        return _ceil_div(self.channels, self.tm) * self.tm

    def pack(self, b, dtype=np.float32):
        b = np.asarray(b)
        if b.shape != (self.channels,):
            raise ValueError(f"expected a bias of shape ({self.channels},), not {b.shape}")
        out = np.zeros(self.words, dtype)
        out[:self.channels] = b
        return out

    def unpack(self, flat):
        flat = np.asarray(flat)
        if flat.shape != (self.words,):
            raise ValueError(f"expected {self.words} words, not an array of shape {flat.shape}")
        return flat[:self.channels].copy()


def pack_bias(b, tm, dtype=np.float32):
    return BiasLayout(len(b), tm).pack(b, dtype)


def unpack_bias(flat, channels, tm):
    return BiasLayout(channels, tm).unpack(flat)


# -- tiles and their DMA transfers -------------------------------------------------------------

@dataclass(frozen=True)
class Transfer:
    """One DMA transfer: ``words`` consecutive words at word ``offset`` of ``tensor``.

    ``step`` is the index of the tile step (one compute pass of the PE array) whose load
    stage or store stage carries it; ``direction`` is ``"load"`` or ``"store"``.
    """

    step: int
    direction: str
    tensor: str
    offset: int
    words: int


def merge_runs(runs):
    """Merge ``(offset, words)`` runs where one ends where the next starts."""
    out = []
    for offset, words in runs:
        if out and out[-1][0] + out[-1][1] == offset:
            out[-1] = (out[-1][0], out[-1][1] + words)
        else:
            out.append((offset, words))
    return out


def conv_view(layer, batch):
    """``(images, height, width, out_height, out_width)`` as the PE array sees the layer:
    an FC layer is one image of one row whose pixels are the batch."""
    if layer.kind == "fc":
        return 1, 1, batch, 1, batch
    return batch, layer.height, layer.width, layer.out_height, layer.out_width


def fp_input_rows(layer, r0, r1, height):
    """Input rows ``[lo, hi)`` (clipped; the rest is padding) that output rows [r0, r1) read."""
    s, p, k = layer.stride, layer.pad, layer.kernel
    return max(0, r0 * s - p), min(height, (r1 - 1) * s - p + k)


def bp_output_rows(layer, y0, y1, out_height):
    """Rows ``[lo, hi)`` of grad_out that BP reads to produce grad_in rows [y0, y1)."""
    s, p, k = layer.stride, layer.pad, layer.kernel
    lo = max(0, _ceil_div(y0 + p - k + 1, s))
    hi = min(out_height, (y1 - 1 + p) // s + 1)
    return lo, max(lo, hi)


def row_tiles(rows, tile_rows):
    return [(r, min(rows, r + tile_rows)) for r in range(0, rows, tile_rows)]


def _tensor_layouts(layer, cfg, batch):
    """The layouts of every tensor a layer's phases touch, by name."""
    tm, tn = cfg.tm, cfg.tn
    images, h, w, ho, wo = conv_view(layer, batch)
    n, m = layer.in_channels, layer.out_channels
    lay = {
        "ifm": ActivationLayout(images, n, h, w, tn),
        "ofm": ActivationLayout(images, m, ho // 2 if layer.pooled else ho,
                                wo // 2 if layer.pooled else wo, tn),
        "grad_z": ActivationLayout(images, m, ho, wo, tn),
    }
    lay["grad_in"] = lay["ifm"]
    lay["grad_out"] = lay["ofm"]
    lay["pool_idx"] = lay["ofm"]
    if layer.kind != "pool":
        lay["weights"] = WeightLayout(m, n, layer.kernel, tm, tn)
        lay["momentum"] = lay["weights"]
    return lay


def _ifm_runs(layer, lay, batch, b, groups, rows, cfg=None, seq=None, index=0):
    """Runs of input group ``groups[0]`` rows ``rows`` of image ``b`` for the step at
    ``index`` of the group sequence ``seq``.

    An FC layer that reads a conv output directly (the flatten, docs/layout.md) reads one run
    per image; to keep those runs long it loads ``ifm_depth // batch`` groups of ``seq`` at
    once, at the first step of each such run of groups, and nothing at the others.
    """
    if layer.kind == "fc" and layer.flatten_from is not None:
        tn = lay.tn
        per_load = max(1, cfg.ifm_depth // batch)
        if index % per_load:
            return []
        block = seq[index:index + per_load]
        return [(bb * _flat_words(layer, tn) + block[0] * tn,
                 len(block) * tn) for bb in range(batch)]
    return merge_runs([lay.rows_run(b, g, *rows) for g in groups])


def _flat_words(layer, tn):
    c, h, w = layer.flatten_from
    return flat_length(c, h, w, tn)


def _grad_out_runs(layer, lay, b, groups, rows):
    """Loads that form grad_z rows ``rows`` (conv output rows) of Tn-groups ``groups``.

    grad_z is formed on the load path from the gradient of what FP stored: with a pool, the
    pooled gradient, the pool index and the pooled output (for the ReLU mask); with a ReLU
    only, the gradient and the output; otherwise grad_z itself (docs/perf_model.md).
    """
    out = []
    if layer.pooled:
        hp = lay["ofm"].height
        r0, r1 = min(rows[0] // 2, hp), min(_ceil_div(rows[1], 2), hp)
        names = ("grad_out", "pool_idx") + (("ofm",) if layer.relu else ())
    else:
        r0, r1 = rows
        names = ("grad_out", "ofm") if layer.relu else ("grad_out",)
    if r1 <= r0:
        return out
    for name in names:
        for run in merge_runs([lay[name].rows_run(b, g, r0, r1) for g in groups]):
            out.append((name, run))
    return out


def _chunks(count, size):
    return [list(range(c, min(count, c + size))) for c in range(0, count, size)]


def tile_transfers(layer, phase, tiling, cfg, batch, *, momentum=None):
    """Every DMA transfer of ``layer`` in ``phase`` under ``tiling``, in issue order.

    ``tiling`` is a :class:`ef_train_hdl.schedule.Tiling` (``tile_rows``, ``groups``,
    ``order``). The loop nests are those of docs/perf_model.md; each tile step is one
    compute pass of the PE array, and every transfer names the step whose load or store
    stage carries it. Offsets are word offsets inside the named tensor.

    Returns a list of :class:`Transfer`.
    """
    return tile_steps(layer, phase, tiling, cfg, batch, momentum=momentum)[0]


def bp_taps(layer, y0, y1, width):
    """MAC cycles per lane group of BP over grad_in rows [y0, y1): the sum over the tile's
    pixels of the kernel taps in their stride phase (docs/numerics.md section 6)."""
    k, s, p = layer.kernel, layer.stride, layer.pad

    def taps(y):
        return sum(1 for ky in range(k) if (y + p - ky) % s == 0)
    if s == 1:
        return k * k * (y1 - y0) * width
    return sum(taps(y) for y in range(y0, y1)) * sum(taps(x) for x in range(width))


def tile_steps(layer, phase, tiling, cfg, batch, *, momentum=None):
    """``(transfers, compute, jobs)``: :func:`tile_transfers` and, per tile step, the PE
    array's operation cycles (one MAC per PE per cycle, and the WU bias-gradient pass: one
    cycle per output pixel in the steps that end a row tile of a layer with a bias) and the
    number of tile-engine jobs the step runs (the lowering's COMPUTE instructions: one per
    output group of the chunk in FP and BP, one per input group in WU plus its bias job).
    No pipeline overhead: perf.py adds the engine's set-up per job."""
    phase = Phase(phase)
    momentum = cfg.momentum if momentum is None else momentum
    lay = _tensor_layouts(layer, cfg, batch)
    tm, tn = cfg.tm, cfg.tn
    images, h, w, ho, wo = conv_view(layer, batch)
    m, n = layer.out_channels, layer.in_channels
    tr, gc, order = tiling.tile_rows, tiling.groups, tiling.order
    out = []
    compute = []
    jobs = []
    step = 0

    def add(direction, name, runs):
        for offset, words in runs:
            out.append(Transfer(step, direction, name, int(offset), int(words)))

    if layer.kind == "pool":
        if phase is Phase.WU:
            return [], []
        rows_total = ho if phase is Phase.FP else h
        for b in range(images):
            for r0, r1 in row_tiles(rows_total, tr):
                p0, p1 = min(r0 // 2, ho // 2), min(_ceil_div(r1, 2), ho // 2)
                for g in range(lay["ifm"].groups):
                    if phase is Phase.FP:
                        add("load", "ifm", [lay["ifm"].rows_run(b, g, r0, r1)])
                        add("store", "ofm", [lay["ofm"].rows_run(b, g, p0, p1)])
                        add("store", "pool_idx", [lay["ofm"].rows_run(b, g, p0, p1)])
                    else:
                        add("load", "grad_out", [lay["ofm"].rows_run(b, g, p0, p1)])
                        add("load", "pool_idx", [lay["ofm"].rows_run(b, g, p0, p1)])
                        add("store", "grad_in", [lay["ifm"].rows_run(b, g, r0, r1)])
                    compute.append((r1 - r0) * w)   # the pool unit takes one pixel of Tn lanes a cycle
                    jobs.append(0)
                    step += 1
        return out, compute, jobs

    wl = lay["weights"]
    if phase is Phase.FP:
        gn = lay["ifm"].groups
        for chunk in _chunks(wl.m_groups, gc):
            if order == "resident":
                add("load", "weights", [(wl.block_offset(chunk[0], 0),
                                         len(chunk) * gn * wl.block_words)])
            m0, m1 = chunk[0] * tm, min(m, (chunk[-1] + 1) * tm)
            out_groups = range(m0 // tn, _ceil_div(m1, tn))
            for b in range(images):
                for r0, r1 in row_tiles(ho, tr):
                    rows_in = fp_input_rows(layer, r0, r1, h)
                    for g in range(gn):
                        add("load", "ifm", _ifm_runs(layer, lay["ifm"], batch, b, [g],
                                                      rows_in, cfg, list(range(gn)), g))
                        if order == "streamed":
                            add("load", "weights", [(wl.block_offset(mg, g), wl.block_words)
                                                    for mg in chunk])
                        if g == gn - 1:
                            if layer.pooled:
                                p0, p1 = r0 // 2, min(r1 // 2, ho // 2)
                            else:
                                p0, p1 = r0, r1
                            if p1 > p0:
                                for name in ("ofm",) + (("pool_idx",) if layer.pooled else ()):
                                    add("store", name, merge_runs(
                                        [lay["ofm"].rows_run(b, og, p0, p1)
                                         for og in out_groups]))
                        # + the bias preamble cycle of each job of the first input group
                        compute.append(len(chunk) * (layer.kernel ** 2 * (r1 - r0) * wo +
                                                     int(layer.bias and g == 0)))
                        jobs.append(len(chunk))
                        step += 1
    elif phase is Phase.BP:
        gm = _ceil_div(m, tn)                      # reduction groups (Tn output channels)
        lanes = _ceil_div(n, tm)                   # BP output lanes: Tm input channels
        for chunk in _chunks(lanes, gc):
            n0, n1 = chunk[0] * tm, min(n, (chunk[-1] + 1) * tm)
            ng0, ng1 = n0 // tn, _ceil_div(n1, tn)
            if order == "resident":
                add("load", "weights", [(wl.block_offset(mg, ng0), (ng1 - ng0) * wl.block_words)
                                        for mg in range(wl.m_groups)])
            in_groups = range(ng0, ng1)
            for b in range(images):
                for y0, y1 in row_tiles(h, tr):
                    rows = bp_output_rows(layer, y0, y1, ho)
                    for g in range(gm):
                        for name, run in _grad_out_runs(layer, lay, b, [g], rows):
                            add("load", name, [run])
                        if order == "streamed":
                            mg = g * tn // tm
                            add("load", "weights", [(wl.block_offset(mg, ng0),
                                                     (ng1 - ng0) * wl.block_words)])
                        if g == gm - 1:
                            if layer.kind == "fc" and layer.flatten_from is not None:
                                add("store", "grad_in", [(bb * _flat_words(layer, tn) + ng0 * tn,
                                                          (ng1 - ng0) * tn)
                                                         for bb in range(batch)])
                            else:
                                add("store", "grad_in", merge_runs(
                                    [lay["ifm"].rows_run(b, ig, y0, y1) for ig in in_groups]))
                        compute.append(len(chunk) * bp_taps(layer, y0, y1, w))
                        jobs.append(len(chunk))
                        step += 1
    else:  # WU: PE (mi, nj) of block (mg, ng) owns dw[m, n, :, :]
        gn = lay["ifm"].groups
        for mg in range(wl.m_groups):
            m0, m1 = mg * tm, min(m, (mg + 1) * tm)
            zgroups = list(range(m0 // tn, _ceil_div(m1, tn)))
            for ci, chunk in enumerate(_chunks(gn, gc)):
                for b in range(images):
                    for r0, r1 in row_tiles(ho, tr):
                        rows_in = fp_input_rows(layer, r0, r1, h)
                        for i, g in enumerate(chunk):
                            if i == 0:
                                for name, run in _grad_out_runs(layer, lay, b, zgroups, (r0, r1)):
                                    add("load", name, [run])
                            add("load", "ifm", _ifm_runs(layer, lay["ifm"], batch, b, [g],
                                                          rows_in, cfg, chunk, i))
                            last = b == images - 1 and r1 == ho and i == len(chunk) - 1
                            if last:
                                # SGD on the store path: read w (and v), write w' (and v').
                                run = [(wl.block_offset(mg, chunk[0]), len(chunk) * wl.block_words)]
                                for name in ("weights",) + (("momentum",) if momentum else ()):
                                    add("load", name, run)
                                    add("store", name, run)
                            # The first chunk's bias job after its row tile: one pass over
                            # the tile's output pixels (the bias gradient of Tm channels).
                            bias_job = layer.bias and ci == 0 and i == len(chunk) - 1
                            compute.append(layer.kernel ** 2 * (r1 - r0) * wo +
                                           (r1 - r0) * wo * bias_job)
                            jobs.append(1 + bias_job)
                            step += 1
    return out, compute, jobs


def bursts(offset_words, words, cfg):
    """AXI INCR bursts of one transfer: at most ``cfg.max_burst_beats`` beats of
    ``cfg.floats_per_beat`` words, never crossing a 4 KiB boundary (base 4 KiB aligned)."""
    fpb = cfg.floats_per_beat
    start = offset_words * 4
    end = (offset_words + words) * 4
    bpb = cfg.bytes_per_beat
    max_bytes = cfg.max_burst_beats * bpb
    count = 0
    addr = start - start % bpb           # a beat moves an aligned bus word
    end = _ceil_div(end, bpb) * bpb
    while addr < end:
        limit = min(end, (addr // 4096 + 1) * 4096, addr + max_bytes)
        count += 1
        addr = limit
    del fpb
    return count


def burst_stats(transfers, cfg):
    """``dict(direction -> (transfers, bursts, words, beats))`` and average burst beats."""
    stats = {}
    for t in transfers:
        entry = stats.setdefault(t.direction, [0, 0, 0, 0])
        entry[0] += 1
        entry[1] += bursts(t.offset, t.words, cfg)
        entry[2] += t.words
        entry[3] += _ceil_div(t.words, cfg.floats_per_beat)
    result = {}
    for direction, (count, nb, words, beats) in stats.items():
        result[direction] = {"transfers": count, "bursts": nb, "words": words,
                             "avg_burst_beats": beats / nb if nb else 0.0}
    return result
