"""Lowering: layer descriptors -> the tile program the command processor runs.

The compiler (:mod:`ef_train_hdl.compiler`) describes a training step as layer descriptors
(:mod:`ef_train_hdl.descriptor`): what each layer and phase computes, with the tiling the
analytical model chose. This module expands each into the LOAD / COMPUTE / STORE instructions
of :mod:`ef_train_hdl.isa` — the loop nests of docs/perf_model.md, with the bank contents of
:mod:`ef_train_hdl.model.tiles` — and then derives the tokens that order the three units.

**Tokens from read and write sets.** Every instruction is emitted with what it reads and
writes: DRAM word ranges, and bank word ranges of an IFM or OFM half or of the weight banks.
:func:`assign_tokens` walks the program in order and finds, for each instruction, the last
earlier instruction of every *other* unit that it conflicts with (read after write, write after
read, write after write); a unit runs its own instructions in order, so only the latest one
matters. The producer gets a ``signal_<consumer>`` flag and the consumer a ``wait_<producer>``
count of one, except where an earlier instruction of the consumer's unit already waited for a
later producer. ``END`` and ``HOST_SYNC`` are barriers (the command processor waits for every
unit there), so nothing is tracked across them. Every dependency points backwards in program
order, so the program cannot deadlock whatever the queue depths and latencies.

**Buffer use.** IFM halves alternate with every input plane loaded, OFM halves with every
output tile (so the next tile's loads and the previous tile's drain overlap this tile's
compute); weights, and in WU the accumulators, use the two halves of the weight banks in turn
(the schedule makes a chunk fit one), so the next chunk's weights load, and the last chunk's
weight gradients drain through SGD, while this chunk computes.

The accelerator's tile program needs ``cfg.tm == cfg.tn`` and ``cfg.floats_per_beat <=
cfg.tn`` (a DMA beat never splits a pixel); :func:`check_config` says so.
"""

from __future__ import annotations

import numpy as np

from . import layout
from .descriptor import FC_OPCODES, Descriptor, Opcode, f32_bits
from .isa import Instr, LoadMode, Op, Post, Source, Target, Unit, UNIT_OF, MAX_WAIT

__all__ = ["lower_descriptor", "lower_program", "assign_tokens", "check_config",
           "LoweringError"]


class LoweringError(ValueError):
    """A descriptor the tile program cannot express for this configuration."""


def check_config(cfg):
    """Raise :class:`LoweringError` when ``cfg`` is not one the whole accelerator supports."""
    if cfg.tm != cfg.tn:
        raise LoweringError(f"the accelerator needs a square PE array (tm == tn), not "
                            f"tm = {cfg.tm}, tn = {cfg.tn}; the tile engine alone supports "
                            f"tm != tn")
    if cfg.floats_per_beat > cfg.tn:
        raise LoweringError(f"dma_data_width = {cfg.dma_data_width} moves "
                            f"{cfg.floats_per_beat} floats a beat, more than tn = {cfg.tn}: "
                            f"a beat would hold parts of two pixels; use dma_data_width <= "
                            f"{32 * cfg.tn}")


def _ceil_div(a, b):
    return -(-a // b)


def _log2(v):
    return (v - 1).bit_length()


def _chunks(count, size):
    return [list(range(c, min(count, c + size))) for c in range(0, count, size)]


def _rows(total, tile):
    return [(r, min(total, r + tile)) for r in range(0, total, tile)]


class _Emitter:
    """Collects instructions with their read and write sets; keeps the ping-pong state."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.out = []
        self.ifm_half = 0
        self.ofm_half = 0
        self.w_region = 0

    def emit(self, op, reads=(), writes=(), **fields):
        instr = Instr(op, **fields)
        instr["_reads"] = list(reads)
        instr["_writes"] = list(writes)
        self.out.append(instr)
        return instr

    def next_ifm(self):
        h = self.ifm_half
        self.ifm_half ^= 1
        return h

    def next_ofm(self):
        h = self.ofm_half
        self.ofm_half ^= 1
        return h

    def weight_region(self, words):
        """Base of the next weight-bank region of ``words`` words: the two halves of the
        weight banks in turn when it fits one (each half is its own memory: the loader and the
        drain use one while the array uses the other, core/pe_array.py), else the whole
        bank from 0."""
        half = self.cfg.weight_depth // 2
        if words <= half:
            base = self.w_region * half
            self.w_region ^= 1
            return base
        if words > self.cfg.weight_depth:
            raise LoweringError(f"{words} words per weight bank needed, weight_depth is "
                                f"{self.cfg.weight_depth}")
        return 0


def _dram(addr, words):
    return ("dram", 0, int(addr), int(addr) + int(words))


def _bank(kind, half, lo, hi):
    return (kind, half, int(lo), int(hi))


def _wbank(lo, hi):
    return ("w", 0, int(lo), int(hi))


# -- loads ---------------------------------------------------------------------------------

def _grad_z_load(em, d, cfg, target, b, g, rows, plane_base=0):
    """LOAD of the conv-output gradient rows ``rows = (o0, o1)`` of Tn-group ``g`` of image
    ``b`` into ``target``, undoing the layer's pool and ReLU on the way (numerics.md 8).

    Returns ``(half, a0, a1)``: the half written and the conv rows the plane holds (with a
    pool the plane starts on an even row: a pooled row covers two)."""
    tn = cfg.tn
    fc = d.opcode in FC_OPCODES
    ho, wo = d.conv_out_hw
    if fc:
        ho, wo = 1, d.batch
    o0, o1 = rows
    half = em.next_ifm() if target == Target.IFM else em.next_ofm()
    images = 1 if fc else d.batch
    kind = "ifm" if target == Target.IFM else "ofm"
    if d.pool:
        hp, wp = ho // 2, wo // 2
        a0 = 2 * (o0 // 2)
        a1 = min(ho, 2 * _ceil_div(o1, 2))
        h = a1 - a0
        pooled = layout.ActivationLayout(images, d.out_channels, hp, wp, tn)
        q0, q1 = a0 // 2, a0 // 2 + h // 2
        off, words = pooled.rows_run(b, g, q0, q1)
        reads = [_dram(d.addr_grad_out + off, words), _dram(d.addr_index + off, words)]
        mode = LoadMode.POOL_BP
        extra = dict(addr_c=d.addr_index + off, pool_width=wo, pool_height=h)
        if d.relu:
            mode = LoadMode.RELU_POOL_BP
            extra["addr_b"] = d.addr_ofm + off
            reads.append(_dram(d.addr_ofm + off, words))
        em.emit(Op.LOAD, reads, [_bank(kind, half, plane_base, plane_base + h * wo)],
                target=target, mode=mode, half=half, addr_a=d.addr_grad_out + off,
                count=(h // 2) * wp, runs=1, bank_base=plane_base, bank_step=1, **extra)
        return half, a0, a1
    lay = layout.ActivationLayout(images, d.out_channels, ho, wo, tn)
    off, words = lay.rows_run(b, g, o0, o1)
    reads = [_dram(d.addr_grad_out + off, words)]
    extra = {}
    mode = LoadMode.PLAIN
    if d.relu:
        mode = LoadMode.RELU_BP
        extra["addr_b"] = d.addr_ofm + off
        reads.append(_dram(d.addr_ofm + off, words))
    em.emit(Op.LOAD, reads, [_bank(kind, half, plane_base, plane_base + (o1 - o0) * wo)],
            target=target, mode=mode, half=half, addr_a=d.addr_grad_out + off,
            count=(o1 - o0) * wo, runs=1, bank_base=plane_base, bank_step=1, **extra)
    return half, o0, o1


def _ifm_load(em, d, cfg, b, g, rows):
    """LOAD of input rows ``rows`` of Tn-group ``g`` of image ``b`` (conv or FC layout) into
    the next IFM half; returns the half."""
    tn = cfg.tn
    half = em.next_ifm()
    if d.opcode in FC_OPCODES:
        lay = layout.fc_activation_layout(d.batch, d.in_channels, tn)
        off, words = lay.rows_run(0, g, 0, 1)
        count = d.batch
    else:
        lay = layout.ActivationLayout(d.batch, d.in_channels, d.in_h, d.in_w, tn)
        off, words = lay.rows_run(b, g, *rows)
        count = (rows[1] - rows[0]) * d.in_w
    em.emit(Op.LOAD, [_dram(d.addr_ifm + off, words)], [_bank("ifm", half, 0, count)],
            target=Target.IFM, half=half, addr_a=d.addr_ifm + off, count=count, runs=1,
            bank_step=1)
    return half


def _flatten_load(em, d, cfg, block):
    """LOAD of input groups ``block`` of an FC layer after a Flatten: one run per image (the
    groups' words of the image's conv-layout map), group ``i`` of the block to bank words
    ``i*B ..`` (pixel b at ``i*B + b``). Returns the half."""
    tn, bsz = cfg.tn, d.batch
    flat = layout.flat_length(d.in_channels, d.in_h, d.in_w, tn)
    half = em.next_ifm()
    addr = d.addr_ifm + block[0] * tn
    reads = [_dram(addr + b * flat, len(block) * tn) for b in range(bsz)]
    em.emit(Op.LOAD, reads, [_bank("ifm", half, 0, len(block) * bsz)], target=Target.IFM,
            half=half, addr_a=addr, count=len(block), runs=bsz, dram_stride=flat,
            bank_run_stride=1, bank_step=bsz)
    return half


def _fc_in_groups(d, cfg):
    """Reduction groups of an FC layer's input (flatten: of the flattened vector)."""
    if d.flatten:
        return layout.flat_length(d.in_channels, d.in_h, d.in_w, cfg.tn) // cfg.tn
    return _ceil_div(d.in_channels, cfg.tn)


def _weight_layout(d, cfg):
    n = (layout.flat_length(d.in_channels, d.in_h, d.in_w, cfg.tn) if d.flatten
         else d.in_channels)
    return layout.WeightLayout(d.out_channels, n, d.kernel, cfg.tm, cfg.tn)


# -- FP --------------------------------------------------------------------------------------

def _lower_fp(em, d, cfg):
    t = cfg.tm
    fc = d.opcode in FC_OPCODES
    k = d.kernel
    kk = k * k
    p = d.interleave
    wl = _weight_layout(d, cfg)
    gn = wl.n_groups
    ho, wo = (1, d.batch) if fc else d.conv_out_hw
    images = 1 if fc else d.batch
    in_h, in_w = (1, d.batch) if fc else (d.in_h, d.in_w)
    tr = 1 if fc else d.tile_rows
    streamed = d.streamed
    out_lay = (layout.fc_activation_layout(d.batch, d.out_channels, t) if fc else
               layout.ActivationLayout(d.batch, d.out_channels,
                                       ho // 2 if d.pool else ho, wo // 2 if d.pool else wo, t))
    chunks = _chunks(wl.m_groups, d.tile_groups)

    def resident_weights(chunk, first=False):
        """The chunk's region and its weight loads, one per input group (the blocks of every
        output group of the chunk for that input group: ``nc`` runs), the biases with the
        first: ``(wbase, bias_base, [emit group g's loads])``. ``first``: the program's first
        chunk, whose first group loads block by block."""
        nc = len(chunk)
        wbase = em.weight_region(nc * gn * kk + (nc if d.bias else 0))
        bias_base = wbase + nc * gn * kk

        def piece(g, split=False):
            """Group ``g``'s loads; ``split``: one load per output group, each followed by
            its bias, so that the first job waits for its own block only (the program's
            first weights: nothing computes while they load)."""
            def load(mls):
                ml0, mg0 = mls[0], chunk[mls[0]]
                em.emit(Op.LOAD, [_dram(d.addr_weight + wl.block_offset(chunk[ml], g),
                                        wl.block_words) for ml in mls],
                        [_wbank(wbase + (ml * gn + g) * kk, wbase + (ml * gn + g + 1) * kk)
                         for ml in mls], target=Target.WEIGHT,
                        addr_a=d.addr_weight + wl.block_offset(mg0, g), count=1,
                        runs=len(mls), taps=kk, dram_stride=gn * wl.block_words,
                        bank_base=wbase + (ml0 * gn + g) * kk, bank_run_stride=gn * kk,
                        bank_step=kk)

            def bias(mls):
                if d.bias and g == 0:           # the first group's jobs add the bias
                    for ml in mls:
                        mg = chunk[ml]
                        em.emit(Op.LOAD, [_dram(d.addr_bias + mg * t, t)],
                                [_wbank(bias_base + ml, bias_base + ml + 1)],
                                target=Target.BIAS, addr_a=d.addr_bias + mg * t, count=1,
                                runs=1, bank_base=bias_base + ml)

            def emit():
                if split:
                    for ml in range(nc):
                        load([ml])
                        bias([ml])
                else:
                    load(list(range(nc)))
                    bias(list(range(nc)))
            return emit
        return wbase, bias_base, [piece(g, split=first and g == 0) for g in range(gn)]

    # Resident weights, one load per input group: the first chunk's each just before the
    # first jobs that need it, every later chunk's during the previous chunk's first tile into
    # the other half of the weight banks, so that the array never waits for a whole chunk.
    upcoming = resident_weights(chunks[0], first=True) if not streamed else None
    for ci, chunk in enumerate(chunks):
        nc = len(chunk)
        bias_words = nc if d.bias else 0
        region_words = (nc * gn * kk if not streamed else nc * kk) + bias_words
        prefetch, own = [], []
        if not streamed:
            wbase, bias_base, pieces = upcoming
            if ci == 0:
                own = list(pieces)
            if ci + 1 < len(chunks):
                upcoming = resident_weights(chunks[ci + 1])
                prefetch = list(upcoming[2])
        blocks = _chunks(gn, max(1, cfg.ifm_depth // d.batch)) if (fc and d.flatten) else \
            [[g] for g in range(gn)]
        for b in range(images):
            for r0, r1 in _rows(ho, tr):
                rows_in = (0, 1) if fc else layout.fp_input_rows(_as_layer(d), r0, r1, in_h)
                ofm_half = em.next_ofm()
                tile_px = (r1 - r0) * wo
                for block in blocks:
                    half = (_flatten_load(em, d, cfg, block) if fc and d.flatten else
                            _ifm_load(em, d, cfg, b, block[0], rows_in))
                    for g in block:
                        if own:
                            own.pop(0)()
                    for gi, g in enumerate(block):
                        if streamed:
                            wbase = em.weight_region(region_words)
                            em.emit(Op.LOAD,
                                    [_dram(d.addr_weight + wl.block_offset(mg, g),
                                           wl.block_words) for mg in chunk],
                                    [_wbank(wbase, wbase + nc * kk)], target=Target.WEIGHT,
                                    addr_a=d.addr_weight + wl.block_offset(chunk[0], g),
                                    count=1, runs=nc, taps=kk,
                                    dram_stride=gn * wl.block_words, bank_base=wbase,
                                    bank_run_stride=kk, bank_step=kk)
                            bias_base = wbase + nc * kk
                            if d.bias and g == 0:
                                for ml, mg in enumerate(chunk):
                                    em.emit(Op.LOAD, [_dram(d.addr_bias + mg * t, t)],
                                            [_wbank(bias_base + ml, bias_base + ml + 1)],
                                            target=Target.BIAS, addr_a=d.addr_bias + mg * t,
                                            count=1, runs=1, bank_base=bias_base + ml)
                        plane = ((1, d.batch, gi * d.batch) if fc else
                                 (rows_in[1] - rows_in[0], in_w, 0))
                        for ml, mg in enumerate(chunk):
                            w_base = wbase + (ml * kk if streamed else (ml * gn + g) * kk)
                            ofm_base = ml * tile_px * p
                            use_bias = bool(d.bias) and g == 0
                            reads = [_bank("ifm", half, plane[2],
                                           plane[2] + plane[0] * plane[1]),
                                     _wbank(w_base, w_base + kk)]
                            if use_bias:
                                reads.append(_wbank(bias_base + ml, bias_base + ml + 1))
                            acc = _bank("ofm", ofm_half, ofm_base, ofm_base + tile_px * p)
                            em.emit(Op.COMPUTE, reads + [acc], [acc], phase=0, kernel=k,
                                    stride=d.stride, log2_p=_log2(p), bias=int(use_bias),
                                    ifm_half=half, ofm_half=ofm_half,
                                    row_off=0 if fc else r0 * d.stride - d.pad - rows_in[0],
                                    col_off=0 if fc else -d.pad,
                                    in_rows=plane[0], in_cols=plane[1], out_rows=r1 - r0,
                                    out_cols=wo, ifm_base=plane[2], w_base=w_base,
                                    ofm_base=ofm_base, term_base=g,
                                    bias_addr=bias_base + ml if use_bias else 0)
                    # The next chunk's weights for these groups: after their jobs in the
                    # program, so that the loader fetches them while the jobs run (the jobs
                    # do not queue behind them).
                    for g in block:
                        if prefetch:
                            prefetch.pop(0)()
                for ml, mg in enumerate(chunk):
                    _fp_store(em, d, cfg, out_lay, b, mg, r0, r1, wo, ofm_half,
                              ml * tile_px * p, p)


def _fp_store(em, d, cfg, out_lay, b, mg, r0, r1, wo, half, base, p):
    t = cfg.tm
    px = (r1 - r0) * wo
    post = {(0, 0): Post.NONE, (1, 0): Post.RELU, (0, 1): Post.POOL,
            (1, 1): Post.RELU_POOL}[(int(d.relu), int(d.pool))]
    src = [_bank("ofm", half, base, base + px * p)]
    if d.pool:
        p0, p1 = r0 // 2, r0 // 2 + (r1 - r0) // 2
        off, words = out_lay.rows_run(b, mg, p0, p1)
        writes = [_dram(d.addr_ofm + off, words), _dram(d.addr_index + off, words)]
        em.emit(Op.STORE, src, writes, source=Source.OFM, post=post, half=half,
                log2_p=_log2(p), drain_base=base, drain_count=px, addr_out=d.addr_ofm + off,
                addr_aux=d.addr_index + off, runs=1, run_words=words, pool_width=wo,
                pool_height=r1 - r0)
        return
    off, words = out_lay.rows_run(b, mg, r0, r1)
    assert words == px * t
    em.emit(Op.STORE, src, [_dram(d.addr_ofm + off, words)], source=Source.OFM, post=post,
            half=half, log2_p=_log2(p), drain_base=base, drain_count=px,
            addr_out=d.addr_ofm + off, runs=1, run_words=words)


# -- BP --------------------------------------------------------------------------------------

def _lower_bp(em, d, cfg):
    t = cfg.tm
    fc = d.opcode in FC_OPCODES
    k = d.kernel
    kk = k * k
    p = d.interleave
    wl = _weight_layout(d, cfg)
    gm = wl.m_groups                       # reduction groups (output channels)
    lanes = wl.n_groups                    # BP output lane groups (input channels)
    ho, wo = (1, d.batch) if fc else d.conv_out_hw
    in_h, in_w = (1, d.batch) if fc else (d.in_h, d.in_w)
    images = 1 if fc else d.batch
    tr = 1 if fc else d.tile_rows
    streamed = d.streamed
    if fc and d.flatten:
        flat = layout.flat_length(d.in_channels, d.in_h, d.in_w, t)
    chunks = _chunks(lanes, d.tile_groups)

    def resident_weights(chunk, first=False):
        """The chunk's region and its transposed weight loads, one per reduction group;
        ``first``: the program's first chunk, whose first group loads block by block (as
        in FP)."""
        nc = len(chunk)
        region_words = nc * kk * gm
        wbase = em.weight_region(region_words)

        def piece(mg, split=False):
            def load(l0, n):
                off = wl.block_offset(mg, chunk[l0])
                em.emit(Op.LOAD, [_dram(d.addr_weight + off, n * wl.block_words)],
                        [_wbank(wbase + (l * gm + mg) * kk, wbase + (l * gm + mg + 1) * kk)
                         for l in range(l0, l0 + n)], target=Target.WEIGHT, transpose=1,
                        addr_a=d.addr_weight + off, count=n, runs=1, taps=kk,
                        bank_base=wbase + (l0 * gm + mg) * kk, bank_step=gm * kk)

            def emit():
                if split:
                    for l in range(nc):
                        load(l, 1)
                else:
                    load(0, nc)
            return emit
        return wbase, [piece(mg, split=first and mg == 0) for mg in range(gm)]

    # As in FP: each reduction group's weights just before its first jobs, a later chunk's
    # during the previous chunk's first tile.
    upcoming = resident_weights(chunks[0], first=True) if not streamed else None
    for ci, chunk in enumerate(chunks):
        nc = len(chunk)
        region_words = nc * kk * (gm if not streamed else 1)
        prefetch, own = [], []
        if not streamed:
            wbase = upcoming[0]
            if ci == 0:
                own = list(upcoming[1])
            if ci + 1 < len(chunks):
                upcoming = resident_weights(chunks[ci + 1])
                prefetch = list(upcoming[1])
        for b in range(images):
            for y0, y1 in _rows(in_h, tr):
                rows = (0, 1) if fc else layout.bp_output_rows(_as_layer(d), y0, y1, ho)
                ofm_half = em.next_ofm()
                tile_px = (y1 - y0) * in_w
                for g in range(gm):
                    half, a0, a1 = _grad_z_load(em, d, cfg, Target.IFM, b, g, rows)
                    if own:
                        own.pop(0)()
                    if streamed:
                        wbase = em.weight_region(region_words)
                        off = wl.block_offset(g, chunk[0])
                        em.emit(Op.LOAD, [_dram(d.addr_weight + off, nc * wl.block_words)],
                                [_wbank(wbase, wbase + region_words)], target=Target.WEIGHT,
                                transpose=1, addr_a=d.addr_weight + off, count=nc, runs=1,
                                taps=kk, bank_base=wbase, bank_step=kk)
                    for l in range(nc):
                        w_base = wbase + (l * kk if streamed else (l * gm + g) * kk)
                        ofm_base = l * tile_px * p
                        acc = _bank("ofm", ofm_half, ofm_base, ofm_base + tile_px * p)
                        reads = [_bank("ifm", half, 0, (a1 - a0) * wo),
                                 _wbank(w_base, w_base + kk), acc]
                        em.emit(Op.COMPUTE, reads, [acc], phase=1, kernel=k, stride=d.stride,
                                log2_p=_log2(p), ifm_half=half, ofm_half=ofm_half,
                                row_off=0 if fc else y0 + d.pad - d.stride * a0,
                                col_off=0 if fc else d.pad, in_rows=a1 - a0, in_cols=wo,
                                out_rows=y1 - y0, out_cols=in_w, ifm_base=0, w_base=w_base,
                                ofm_base=ofm_base, term_base=g)
                    if prefetch:             # after the jobs (see FP)
                        prefetch.pop(0)()
                for l, ng in enumerate(chunk):
                    base = l * tile_px * p
                    src = [_bank("ofm", ofm_half, base, base + tile_px * p)]
                    common = dict(source=Source.OFM, post=Post.NONE, half=ofm_half,
                                  log2_p=_log2(p), drain_base=base, drain_count=tile_px)
                    if fc and d.flatten:
                        addr = d.addr_grad_in + ng * t
                        em.emit(Op.STORE, src, [_dram(addr + bb * flat, t)
                                                for bb in range(d.batch)],
                                addr_out=addr, runs=d.batch, run_words=t, dram_stride=flat,
                                **common)
                    else:
                        lay = (layout.fc_activation_layout(d.batch, d.in_channels, t) if fc
                               else layout.ActivationLayout(d.batch, d.in_channels, in_h,
                                                            in_w, t))
                        off, words = lay.rows_run(b, ng, y0, y1) if not fc else \
                            lay.rows_run(0, ng, 0, 1)
                        em.emit(Op.STORE, src, [_dram(d.addr_grad_in + off, words)],
                                addr_out=d.addr_grad_in + off, runs=1, run_words=words,
                                **common)


# -- WU --------------------------------------------------------------------------------------

def _lower_wu(em, d, cfg):
    t = cfg.tm
    fc = d.opcode in FC_OPCODES
    k = d.kernel
    kk = k * k
    p = d.interleave
    a = cfg.acc_interleave
    wl = _weight_layout(d, cfg)
    gn = wl.n_groups
    ho, wo = (1, d.batch) if fc else d.conv_out_hw
    in_h, in_w = (1, d.batch) if fc else (d.in_h, d.in_w)
    images = 1 if fc else d.batch
    tr = 1 if fc else d.tile_rows
    lr, mu = f32_bits(d.lr), f32_bits(d.mu)
    post = Post.SGD_MOMENTUM if d.momentum else Post.SGD
    for mg in range(wl.m_groups):
        for ci, chunk in enumerate(_chunks(gn, d.tile_groups)):
            nc = len(chunk)
            with_bias = bool(d.bias) and ci == 0
            region_words = nc * kk * p + (a if with_bias else 0)
            wbase = em.weight_region(region_words)
            bias_acc = wbase + nc * kk * p
            blocks = (_chunks(len(chunk), max(1, cfg.ifm_depth // d.batch)) if fc and
                      d.flatten else [[i] for i in range(nc)])
            for b in range(images):
                for r0, r1 in _rows(ho, tr):
                    rows_in = (0, 1) if fc else layout.fp_input_rows(_as_layer(d), r0, r1,
                                                                     in_h)
                    zhalf, a0, a1 = _grad_z_load(em, d, cfg, Target.OFM, b, mg, (r0, r1))
                    zbase = (r0 - a0) * wo
                    tile_px = (r1 - r0) * wo
                    term_base = (b * ho + r0) * wo
                    zread = _bank("ofm", zhalf, zbase, zbase + tile_px)
                    for block in blocks:
                        groups = [chunk[i] for i in block]
                        if fc and d.flatten:
                            half = _flatten_load(em, d, cfg, groups)
                        else:
                            half = _ifm_load(em, d, cfg, b, groups[0], rows_in)
                        for bi, i in enumerate(block):
                            plane = ((1, d.batch, bi * d.batch) if fc else
                                     (rows_in[1] - rows_in[0], in_w, 0))
                            acc = _wbank(wbase + i * kk * p, wbase + (i + 1) * kk * p)
                            em.emit(Op.COMPUTE,
                                    [_bank("ifm", half, plane[2],
                                           plane[2] + plane[0] * plane[1]), zread, acc],
                                    [acc], phase=2, kernel=k, stride=d.stride,
                                    log2_p=_log2(p), ifm_half=half, ofm_half=zhalf,
                                    row_off=0 if fc else r0 * d.stride - d.pad - rows_in[0],
                                    col_off=0 if fc else -d.pad, in_rows=plane[0],
                                    in_cols=plane[1], out_rows=r1 - r0, out_cols=wo,
                                    ifm_base=plane[2], w_base=wbase + i * kk * p,
                                    ofm_base=zbase, term_base=term_base)
                    if with_bias:
                        acc = _wbank(bias_acc, bias_acc + a)
                        em.emit(Op.COMPUTE, [zread, acc], [acc], phase=2, kernel=1, stride=1,
                                log2_p=_log2(a), ones=1, ifm_half=0, ofm_half=zhalf,
                                in_rows=1, in_cols=1, out_rows=r1 - r0, out_cols=wo,
                                ifm_base=0, w_base=bias_acc, ofm_base=zbase,
                                term_base=term_base)
            # The chunk's weight gradients: SGD on the store path (or to grad_w).
            off = wl.block_offset(mg, chunk[0])
            words = nc * wl.block_words
            src = [_wbank(wbase, wbase + nc * kk * p)]
            if d.sgd:
                rw = [_dram(d.addr_weight + off, words)]
                if d.momentum:
                    rw.append(_dram(d.addr_momentum + off, words))
                em.emit(Op.STORE, src + rw, rw, source=Source.WEIGHT, post=post,
                        log2_p=_log2(p), drain_base=wbase, drain_count=nc * kk,
                        addr_out=d.addr_weight + off,
                        addr_aux=d.addr_momentum + off if d.momentum else 0, runs=1,
                        run_words=words, lr=lr, mu=mu if d.momentum else 0)
            else:
                em.emit(Op.STORE, src, [_dram(d.addr_grad_w + off, words)],
                        source=Source.WEIGHT, post=Post.NONE, log2_p=_log2(p),
                        drain_base=wbase, drain_count=nc * kk, addr_out=d.addr_grad_w + off,
                        runs=1, run_words=words)
            if with_bias:
                src = [_wbank(bias_acc, bias_acc + a)]
                if d.sgd:
                    rw = [_dram(d.addr_bias + mg * t, t)]
                    if d.momentum:
                        rw.append(_dram(d.addr_momentum_b + mg * t, t))
                    em.emit(Op.STORE, src + rw, rw, source=Source.WEIGHT, post=post,
                            bias_select=1, log2_p=_log2(a), drain_base=bias_acc,
                            drain_count=1, addr_out=d.addr_bias + mg * t,
                            addr_aux=d.addr_momentum_b + mg * t if d.momentum else 0,
                            runs=1, run_words=t, lr=lr, mu=mu if d.momentum else 0)
                else:
                    em.emit(Op.STORE, src, [_dram(d.addr_grad_b + mg * t, t)],
                            source=Source.WEIGHT, post=Post.NONE, bias_select=1,
                            log2_p=_log2(a), drain_base=bias_acc, drain_count=1,
                            addr_out=d.addr_grad_b + mg * t, runs=1, run_words=t)


def _lower_sgd(em, d, cfg):
    n = d.length
    post = Post.SGD_MOMENTUM if d.momentum else Post.SGD
    rw = [_dram(d.addr_weight, n)] + ([_dram(d.addr_momentum, n)] if d.momentum else [])
    em.emit(Op.STORE, rw + [_dram(d.addr_grad_w, n)], rw, source=Source.DRAM, post=post,
            addr_out=d.addr_weight, addr_aux=d.addr_momentum if d.momentum else 0,
            addr_grad=d.addr_grad_w, runs=1, run_words=n, lr=f32_bits(d.lr),
            mu=f32_bits(d.mu) if d.momentum else 0)


def _as_layer(d):
    """The conv :class:`~ef_train_hdl.workloads.Layer` of descriptor ``d`` (for the row
    arithmetic of :mod:`ef_train_hdl.layout`)."""
    from .workloads import Layer
    return Layer(f"layer{d.layer}", "conv", d.in_channels, d.out_channels, d.in_h, d.in_w,
                 d.kernel, d.stride, d.pad, relu=d.relu, pool=d.pool, bias=d.bias)


# -- whole programs ----------------------------------------------------------------------------

def lower_descriptor(d, cfg, em=None):
    """The tile instructions of one layer descriptor (without tokens; see
    :func:`lower_program`)."""
    check_config(cfg)
    em = em or _Emitter(cfg)
    op = d.opcode
    if op in (Opcode.CONV_FP, Opcode.FC_FP):
        _lower_fp(em, d, cfg)
    elif op in (Opcode.CONV_BP, Opcode.FC_BP):
        _lower_bp(em, d, cfg)
    elif op in (Opcode.CONV_WU, Opcode.FC_WU):
        _lower_wu(em, d, cfg)
    elif op == Opcode.SGD:
        _lower_sgd(em, d, cfg)
    elif op == Opcode.HOST_SYNC:
        em.emit(Op.HOST_SYNC)
    elif op == Opcode.END:
        em.emit(Op.END)
    else:
        raise LoweringError(f"descriptor opcode {op!r} has no tile program")
    return em.out


def lower_program(descs, cfg):
    """The tile program of a layer-descriptor program: the instructions of every descriptor,
    in order, with tokens (:func:`assign_tokens`). Ends with END."""
    check_config(cfg)
    em = _Emitter(cfg)
    for d in descs:
        lower_descriptor(d, cfg, em)
    if not em.out or em.out[-1].op != Op.END:
        em.emit(Op.END)
    return assign_tokens(em.out)


# -- tokens ------------------------------------------------------------------------------------

class _Space:
    """Accesses to one address space (a DRAM, a bank half) as disjoint segments, each with
    its last writer and the readers since."""

    def __init__(self):
        self.segs = []          # sorted [lo, hi, writer, readers]

    def _split(self, lo, hi):
        out = []
        for seg in self.segs:
            s_lo, s_hi, w, rd = seg
            if s_hi <= lo or s_lo >= hi:
                out.append(seg)
                continue
            if s_lo < lo:
                out.append([s_lo, lo, w, list(rd)])
            out.append([max(s_lo, lo), min(s_hi, hi), w, list(rd)])
            if s_hi > hi:
                out.append([hi, s_hi, w, list(rd)])
        # Gaps inside [lo, hi) become empty segments.
        out.sort(key=lambda s: s[0])
        filled, pos = [], lo
        for seg in out:
            if seg[0] >= hi or seg[1] <= lo:
                continue
            if seg[0] > pos:
                filled.append([pos, seg[0], None, []])
            pos = max(pos, seg[1])
        if pos < hi:
            filled.append([pos, hi, None, []])
        self.segs = sorted(out + filled, key=lambda s: s[0])

    def touching(self, lo, hi):
        return [s for s in self.segs if s[0] < hi and s[1] > lo]

    def read(self, lo, hi, idx):
        self._split(lo, hi)
        deps = []
        for seg in self.touching(lo, hi):
            if seg[2] is not None:
                deps.append(seg[2])
            seg[3].append(idx)
        return deps

    def write(self, lo, hi, idx):
        self._split(lo, hi)
        deps = []
        for seg in self.touching(lo, hi):
            if seg[2] is not None:
                deps.append(seg[2])
            deps.extend(seg[3])
            seg[2], seg[3] = idx, []
        # Merge neighbours written by the same instruction with no readers.
        merged = []
        for seg in self.segs:
            if merged and merged[-1][1] == seg[0] and merged[-1][2] == seg[2] and \
                    not merged[-1][3] and not seg[3]:
                merged[-1][1] = seg[1]
            else:
                merged.append(seg)
        self.segs = merged
        return deps


def dependencies(program):
    """For each instruction, the indices of the earlier instructions it conflicts with
    (read-after-write, write-after-read, write-after-write on DRAM words or bank words),
    reset at every END / HOST_SYNC (barriers)."""
    spaces = {}
    deps = []
    for idx, instr in enumerate(program):
        if instr.op in (Op.END, Op.HOST_SYNC):
            deps.append(set())
            spaces.clear()
            continue
        mine = set()
        for kind, half, lo, hi in instr.get("_reads", ()):
            if hi > lo:
                mine.update(spaces.setdefault((kind, half), _Space()).read(lo, hi, idx))
        for kind, half, lo, hi in instr.get("_writes", ()):
            if hi > lo:
                mine.update(spaces.setdefault((kind, half), _Space()).write(lo, hi, idx))
        mine.discard(idx)
        deps.append(mine)
    return deps


def assign_tokens(program):
    """Set the ``wait_*`` / ``signal_*`` fields of ``program`` (a list of :class:`Instr` with
    ``_reads`` / ``_writes``) from its dependencies; returns the program.

    For a consumer of unit v and each other unit u, only the latest producer of u it depends
    on matters (u runs in order). If that producer is later than every u-producer an earlier
    v-instruction waited for, it signals v and the consumer waits for one token; otherwise the
    consumer's unit has waited for it already.
    """
    deps = dependencies(program)
    waited = {}                        # (producer unit, consumer unit) -> latest producer
    for idx, instr in enumerate(program):
        for name in ("wait_load", "wait_compute", "wait_store", "signal_load",
                     "signal_compute", "signal_store"):
            instr[name] = 0
        if instr.op in (Op.END, Op.HOST_SYNC):
            waited.clear()
            continue
        v = UNIT_OF[instr.op]
        latest = {}
        for j in deps[idx]:
            u = UNIT_OF[program[j].op]
            if u != v:
                latest[u] = max(latest.get(u, -1), j)
        for u, j in latest.items():
            if j > waited.get((u, v), -1):
                program[j][f"signal_{v.name.lower()}"] = 1
                instr[f"wait_{u.name.lower()}"] += 1
                waited[(u, v)] = j
        instr["_deps"] = sorted(deps[idx])
        assert all(instr[f"wait_{u.name.lower()}"] <= MAX_WAIT for u in Unit)
    return program
