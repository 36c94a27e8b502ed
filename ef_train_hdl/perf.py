"""The analytical performance model: cycles of load, compute and store per tile and per layer.

Each layer and phase runs as a sequence of tile steps (:func:`ef_train_hdl.layout.tile_steps`
gives the loop nest, every DMA transfer, the operation cycles and the engine jobs of each
step). Each transfer costs the DRAM model's start-up latency plus its bytes over the
bandwidth; the AXI read and write channels are independent. By default
(:class:`PeTiming` ``()``) :func:`engine_cycles` overlaps the steps as the accelerator does:
the loader in program order into free buffers, the engine a job after another with its
set-up per job and the flush in the background, the stores behind their jobs. With a fixed
per-step overhead (``PeTiming(n)``) it is the paper's lockstep ping-pong pipeline instead,
step ``i`` computing while step ``i+1`` loads and step ``i-1`` stores:

    cycles = L[0] + sum_i max(L[i+1], C[i], S[i-1]) + S[last]

The formulas, and what the model is checked against, are in docs/perf_model.md.

:func:`paper_setting` and :func:`network_perf` reproduce the paper's analysis (Tm = Tn = 16,
4 floats per cycle, 400 cycles per transfer, 100 MHz, batch 16, VGG-16 at 224x224).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .config import preset
from .layout import _tensor_layouts, tile_steps
from .workloads import Phase, vgg16_conv

__all__ = ["DramModel", "PeTiming", "LayerPerf", "NetworkPerf", "layer_perf", "pipeline_cycles",
           "engine_cycles",
           "roofline", "network_perf", "paper_setting", "PAPER_MODEL_GFLOPS",
           "PAPER_BOARD_GFLOPS"]

#: The paper's own analytical model (finetune2.py) over the VGG-16 conv layers, and its board.
PAPER_MODEL_GFLOPS = 47.99
PAPER_BOARD_GFLOPS = 46.99


@dataclass(frozen=True)
class DramModel:
    """DRAM as the DMA sees it: ``bytes_per_cycle`` (accelerator clock) per direction and a
    start-up of ``latency_cycles`` paid by every transfer (one contiguous run)."""

    bytes_per_cycle: float = 16.0
    latency_cycles: int = 400

    def __post_init__(self):
        if not self.bytes_per_cycle > 0:
            raise ValueError(f"bytes_per_cycle must be positive, not {self.bytes_per_cycle!r}")
        if not isinstance(self.latency_cycles, int) or self.latency_cycles < 0:
            raise ValueError(f"latency_cycles must be a non-negative integer, "
                             f"not {self.latency_cycles!r}")

    def transfer_cycles(self, words):
        """Cycles of one transfer of ``words`` 32-bit words (works on numpy arrays)."""
        return self.latency_cycles + np.ceil(np.asarray(words) * 4 / self.bytes_per_cycle)


@dataclass(frozen=True)
class PeTiming:
    """Timing of the PE array that the model does not derive.

    ``tile_overhead_cycles``: cycles a tile step spends beyond its operations. ``None`` (the
    default) takes the tile engine's measured figures: :meth:`AcceleratorConfig.job_setup`
    per job of the step (checks, address set-up, the step between stride phases) and the PE
    array's depth once, for the flush of the layer's last job (the engine flushes each job
    in the background while it starts the next one of the same phase). A number charges
    that many cycles per step instead (the paper's style of model).
    """

    tile_overhead_cycles: int | None = None


@dataclass
class LayerPerf:
    layer: str
    phase: str
    tiling: object
    steps: int
    cycles: int
    load_cycles: int
    compute_cycles: int
    store_cycles: int
    macs: int
    pes: int
    transfers: int
    load_words: int
    store_words: int

    @property
    def utilisation(self):
        """Useful MACs / (Tm * Tn * cycles)."""
        return self.macs / (self.pes * self.cycles) if self.cycles else 0.0

    def gflops(self, clock_mhz):
        return 2 * self.macs * clock_mhz / self.cycles / 1000 if self.cycles else 0.0

    def as_dict(self, clock_mhz=None):
        d = dataclasses.asdict(self)
        d["tiling"] = dataclasses.asdict(self.tiling)
        d["utilisation"] = self.utilisation
        if clock_mhz is not None:
            d["gflops"] = self.gflops(clock_mhz)
        return d


def pipeline_cycles(load, compute, store):
    """Cycles of a ping-pong pipeline of steps with per-step ``load``/``compute``/``store``.

    Step ``i`` computes while step ``i+1`` loads and step ``i-1`` stores."""
    load, compute, store = (np.asarray(a, dtype=np.int64) for a in (load, compute, store))
    if len(compute) == 0:
        return 0
    nxt = np.append(load[1:], 0)
    prev = np.insert(store[:-1], 0, 0)
    return int(load[0] + np.maximum(np.maximum(nxt, compute), prev).sum() + store[-1])


def useful_macs(layer, phase, batch):
    """MACs a phase must do: the FP count M*N*K*K*Ho*Wo*B for all three phases (as the paper
    counts; BP's transposed convolution and WU's correlation have the same count)."""
    return layer.macs(batch)


def layer_perf(layer, phase, tiling, cfg, batch, dram=DramModel(), timing=PeTiming(), *,
               momentum=None):
    """:class:`LayerPerf` of ``layer`` in ``phase`` under ``tiling``.

    For a conv or pool layer and a batch above 4 the steps of images 1..B-2 repeat exactly
    (same transfer sizes, same MACs; only the first image of a chunk loads its weights and
    only the last one runs SGD), and every pipeline term depends only on neighbouring steps,
    so every figure is affine in the batch: it is computed for 3 and 4 images and
    extrapolated, exactly (tests/test_perf.py compares with the full enumeration).
    """
    phase = Phase(phase)
    if layer.kind != "fc" and batch > 4:
        small = [_enumerate(layer, phase, tiling, cfg, b, dram, timing, momentum)
                 for b in (3, 4)]
        figures = [f4 + (batch - 4) * (f4 - f3) for f3, f4 in zip(*small)]
    else:
        figures = _enumerate(layer, phase, tiling, cfg, batch, dram, timing, momentum)
    steps, cycles, load, comp, store, transfers, load_words, store_words = figures
    return LayerPerf(layer.name, phase.name, tiling, steps, cycles, load, comp, store,
                     useful_macs(layer, phase, batch), cfg.pes, transfers, load_words,
                     store_words)


def engine_cycles(early, half, compute, store, sgd_reads=None, flush=0, ahead=None,
                  ahead_wait=None):
    """Cycles of a sequence of tile steps as the accelerator's three units overlap them.

    Per step ``j``: ``early[j]`` load cycles into buffers that are free long before (WU's
    output gradients into the OFM halves, a chunk's resident weights into the other weight
    region), then ``half[j]`` into the ping-pong half step ``j - 2`` computed from (input
    tiles, streamed weights); ``compute[j]``; ``store[j]``. The loader takes its transfers
    in program order, one after the other on the read channel; the engine takes step ``j``
    when step ``j - 1`` is done and its loads are in; a step waits for the store two stores
    back (the OFM half or weight region it writes); a store starts when its step's last job
    has flushed (``flush`` cycles) and the previous store is done. ``sgd_reads[j]`` are read
    cycles a store spends (WU's SGD reads w and v alongside its writes): the store lasts the
    longer of the two; the bus router interleaves those reads with the loader's, which the
    model leaves out. ``ahead[j]`` are load cycles the loader issues after step ``j``'s own
    loads for a later step (the next chunk's resident weights, which the lowering fetches
    during a chunk's first tile), once step ``ahead_wait[j]`` (``< j``) has computed (the
    region's last user; -1: none). Returns the cycle the last store (or step) ends.
    """
    n = len(compute)
    if n == 0:
        return 0
    early = [int(x) for x in early]
    half = [int(x) for x in half]
    compute = [int(x) for x in compute]
    store = [int(x) for x in store]
    sgd = [0] * n if sgd_reads is None else [int(x) for x in sgd_reads]
    ahead = [0] * n if ahead is None else [int(x) for x in ahead]
    ahead_wait = [-1] * n if ahead_wait is None else [int(x) for x in ahead_wait]
    comp_end = [0] * n
    load_t = 0                    # the read channel's loads are issued up to here
    done = 0                      # the engine's previous step ends
    st_free = 0
    st_ends = []
    for j in range(n):
        t = load_t + early[j]
        if half[j]:
            t = max(t, comp_end[j - 2] if j >= 2 else 0) + half[j]
        begin = max(done, t)
        if ahead[j]:
            w = ahead_wait[j]                 # an earlier step, or -1
            t = max(t, comp_end[w] if w >= 0 else 0) + ahead[j]
        load_t = t
        if len(st_ends) >= 2:
            begin = max(begin, st_ends[-2])
        done = comp_end[j] = begin + compute[j]
        if store[j] or sgd[j]:
            s0 = max(st_free, done + flush)
            st_free = s0 + max(store[j], sgd[j])
            st_ends.append(st_free)
    return max(done + flush, st_free)


def _enumerate(layer, phase, tiling, cfg, batch, dram, timing, momentum):
    transfers, compute, jobs = tile_steps(layer, phase, tiling, cfg, batch, momentum=momentum)
    n = len(compute)
    comp = np.asarray(compute, np.int64)
    if transfers:
        steps = np.fromiter((t.step for t in transfers), np.int64, len(transfers))
        words = np.fromiter((t.words for t in transfers), np.int64, len(transfers))
        is_load = np.fromiter((t.direction == "load" for t in transfers), bool, len(transfers))
        cyc = dram.transfer_cycles(words).astype(np.int64)
        load_words, store_words = int(words[is_load].sum()), int(words[~is_load].sum())
        load_total = int(cyc[is_load].sum())
    else:
        steps = words = cyc = np.zeros(0, np.int64)
        is_load = np.zeros(0, bool)
        load_words = store_words = load_total = 0
    store = np.zeros(n, np.int64)
    np.add.at(store, steps[~is_load], cyc[~is_load])
    if timing.tile_overhead_cycles is not None:
        # The paper's formula: a lockstep ping-pong pipeline, a fixed overhead per step.
        load = np.zeros(n, np.int64)
        np.add.at(load, steps[is_load], cyc[is_load])
        comp = comp + timing.tile_overhead_cycles
        cycles = pipeline_cycles(load, comp, store)
    else:
        # The engine's set-up per job (checks, address set-up, the step between stride
        # phases); each job's flush through the PE array runs in the background while the
        # next job of the phase starts (core/engine.py, model.tiles.jobs_schedule), so a
        # flush shows only before a store and at the end.
        stride_phases = layer.stride ** 2 if phase is Phase.BP and layer.kind != "fc" else 1
        comp = comp + np.asarray(jobs, np.int64) * cfg.job_setup(stride_phases)
        wu = phase is Phase.WU
        kind = np.fromiter(
            (2 if (wu and t.tensor in ("weights", "momentum")) else      # SGD, store path
             1 if (wu and t.tensor in ("grad_out", "ofm", "pool_idx")) or
             (t.tensor == "weights" and tiling.order == "resident") else 0
             for t in transfers), np.int64, len(transfers))
        early, half, sgd = (np.zeros(n, np.int64) for _ in range(3))
        for arr, k in ((half, 0), (early, 1), (sgd, 2)):
            sel = is_load & (kind == k)
            np.add.at(arr, steps[sel], cyc[sel])
        ahead = np.zeros(n, np.int64)
        ahead_wait = np.full(n, -1, np.int64)
        if not wu and tiling.order == "resident":
            # lower.py loads a chunk's resident weights in one piece per group during a
            # tile: chunk 0's before each of its first tile's jobs, chunk k + 1's after each
            # of chunk k's first-tile jobs (into the region chunk k - 1 used).
            starts = sorted({int(st) for st, t in zip(steps, transfers)
                             if t.direction == "load" and t.tensor == "weights"})
            has_store = store > 0
            first_tiles = []
            for a in starts:
                b = a
                while b + 1 < n and not has_store[b]:
                    b += 1
                first_tiles.append(range(a, b + 1))
            for k, a in enumerate(starts):
                total = int(early[a])
                early[a] = 0
                if k == 0:
                    target, arr = first_tiles[0], early
                else:
                    target, arr = first_tiles[k - 1], ahead
                    ahead_wait[list(target)] = starts[k - 1] - 1
                share, extra = divmod(total, len(target))
                for i, st in enumerate(target):
                    arr[st] += share + (i < extra)
        cycles = engine_cycles(early, half, comp, store, sgd, cfg.pe_depth, ahead, ahead_wait)
    return (n, int(cycles), load_total, int(comp.sum()), int(store.sum()), len(transfers),
            load_words, store_words)


def roofline(layer, phase, cfg, batch, dram=DramModel(), *, momentum=None):
    """``min(1, bandwidth x arithmetic intensity / peak)``: the utilisation bound when every
    tensor of the phase crosses DRAM exactly once (MACs per byte of that traffic)."""
    phase = Phase(phase)
    momentum = cfg.momentum if momentum is None else momentum
    lay = _tensor_layouts(layer, cfg, batch)
    out_words = lay["ofm"].words * (2 if layer.pooled else 1)       # + pool index
    grad_words = lay["ofm"].words * ((2 if layer.pooled else 1) + (1 if layer.relu else 0))
    if layer.pooled and not layer.relu:
        grad_words = lay["ofm"].words * 2
    w_words = lay["weights"].words if "weights" in lay else 0
    if phase is Phase.FP:
        words = lay["ifm"].words + w_words + out_words
    elif phase is Phase.BP:
        words = grad_words + w_words + lay["ifm"].words
    else:
        words = grad_words + lay["ifm"].words + w_words * (4 if momentum else 2)
    macs = useful_macs(layer, phase, batch)
    intensity = macs / (4 * words)
    return min(1.0, dram.bytes_per_cycle * intensity / cfg.pes)


@dataclass
class NetworkPerf:
    layers: list
    clock_mhz: float
    peak_gflops: float

    @property
    def cycles(self):
        return sum(p.cycles for p in self.layers)

    @property
    def macs(self):
        return sum(p.macs for p in self.layers)

    @property
    def gflops(self):
        return 2 * self.macs * self.clock_mhz / self.cycles / 1000

    def phase_gflops(self, phase):
        name = phase.name if isinstance(phase, Phase) else str(phase).upper()
        sel = [p for p in self.layers if p.phase == name]
        return 2 * sum(p.macs for p in sel) * self.clock_mhz / sum(p.cycles for p in sel) / 1000

    @property
    def utilisation(self):
        return self.gflops / self.peak_gflops


def network_perf(layers, cfg, batch, dram=DramModel(), timing=PeTiming(), clock_mhz=100.0, *,
                 phases=(Phase.FP, Phase.BP, Phase.WU), first_bp=False, momentum=None,
                 schedules=None):
    """Schedule every layer and phase (:func:`ef_train_hdl.schedule.schedule_layer`) and
    model it. BP of the first layer is skipped unless ``first_bp`` (nobody needs the gradient
    of the network's input; the paper skips it too)."""
    from .schedule import schedule_layer
    out = []
    for phase in phases:
        for i, layer in enumerate(layers):
            if Phase(phase) is Phase.BP and i == 0 and not first_bp:
                continue
            if layer.kind == "pool" and Phase(phase) is Phase.WU:
                continue
            perf = schedule_layer(layer, phase, cfg, batch, dram, timing, momentum=momentum)
            out.append(perf)
    return NetworkPerf(out, clock_mhz, cfg.peak_gflops(clock_mhz))


def paper_setting():
    """``(cfg, dram, batch, clock_mhz, layers)`` of the paper's analysis: the ``zcu102``
    preset (Tm = Tn = 16, 128-bit DMA = 4 floats a cycle), 400 cycles per transfer,
    batch 16, 100 MHz, the 13 VGG-16 conv layers at 224x224, SGD without momentum."""
    cfg = preset("zcu102", dma_data_width=128, momentum=False)
    return cfg, DramModel(bytes_per_cycle=16.0, latency_cycles=400), 16, 100.0, vgg16_conv(224)
