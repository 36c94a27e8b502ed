"""Tiling of each layer and phase, chosen by the analytical model under the buffer limits.

A :class:`Tiling` fixes the loop nest of docs/perf_model.md for one layer and phase:
``tile_rows`` (rows of the tile's output — FP/WU: conv output rows, BP: grad_in rows — always
whole rows at full width), ``groups`` (FP: output-channel groups of Tm whose weights stay on
chip while the whole batch streams past; BP: groups of Tm input channels; WU: input-channel
groups of Tn whose weight-gradient accumulators stay on chip) and ``order`` (``"resident"``:
the weights of those groups are loaded once per chunk and reused across the batch;
``"streamed"``: they do not fit and are reloaded with every input tile).

:func:`buffer_needs` gives the words per bank a tiling needs; :func:`check_layer` raises a
ValueError naming the layer, the limit and the need when a layer cannot run at all;
:func:`schedule_layer` searches the tilings and returns the fastest one's
:class:`ef_train_hdl.perf.LayerPerf`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .workloads import Layer, Phase

__all__ = ["Tiling", "ORDERS", "interleave", "buffer_needs", "fits", "check_layer",
           "candidate_tilings", "schedule_layer"]

ORDERS = ("resident", "streamed")


def _ceil_div(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class Tiling:
    """The tiling of one layer and phase (see the module docstring)."""

    tile_rows: int
    groups: int = 1
    order: str = "resident"

    def __post_init__(self):
        for name in ("tile_rows", "groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, not {self.order!r}")


def interleave(layer, phase, cfg, batch):
    """The accumulator interleave P of ``layer`` in ``phase`` (docs/numerics.md section 4):
    the contract's rule of :mod:`ef_train_hdl.model.ops`, from the layer's shape only."""
    from .model import ops
    phase = Phase(phase)
    fc = layer.kind == "fc"
    if phase is Phase.FP:
        return ops.interleave_fp(batch if fc else layer.out_width, cfg)
    if phase is Phase.BP:
        return ops.interleave_bp(batch if fc else layer.width, layer.stride, cfg)
    return ops.interleave_wu(layer.kernel, cfg)


def _rows(layer, phase):
    """Rows the tiling cuts: FP/WU conv output rows, BP grad_in rows (1 for FC)."""
    if layer.kind == "fc":
        return 1
    return layer.height if Phase(phase) is Phase.BP else layer.out_height


def _group_count(layer, phase, cfg):
    if Phase(phase) is Phase.FP:
        return _ceil_div(layer.out_channels, cfg.tm)
    if Phase(phase) is Phase.BP:
        return _ceil_div(layer.in_channels, cfg.tm)
    return _ceil_div(layer.in_channels, cfg.tn)


def buffer_needs(layer, phase, tiling, cfg, batch):
    """``{"ifm": words, "ofm": words, "weight": words}`` per bank (per ping-pong half)."""
    phase = Phase(phase)
    k, s = layer.kernel, layer.stride
    kk = k * k
    fc = layer.kind == "fc"
    w = batch if fc else layer.width
    h = 1 if fc else layer.height
    wo = batch if fc else layer.out_width
    ho = 1 if fc else layer.out_height
    tr, gc = tiling.tile_rows, tiling.groups
    p = interleave(layer, phase, cfg, batch) if layer.kind != "pool" else 1
    if layer.kind == "pool":
        return {"ifm": tr * w, "ofm": tr * w, "weight": 0}
    if phase is Phase.FP:
        rows_in = min(h, (min(tr, ho) - 1) * s + k)
        wts = gc * kk * (_ceil_div(layer.in_channels, cfg.tn) if tiling.order == "resident"
                         else 1)
        # The chunk's biases sit after its weights in bank (m, 0), one word per Tm-group.
        wts += gc if layer.bias else 0
        return {"ifm": rows_in * w, "ofm": gc * min(tr, ho) * wo * p, "weight": wts}
    if phase is Phase.BP:
        rows_out = min(ho, _ceil_div(min(tr, h) - 1 + k, s) + 1)
        if layer.pooled:
            rows_out = min(ho, rows_out + 1)    # the plane starts on a pooled row's top row
        wts = gc * kk * (_ceil_div(layer.out_channels, cfg.tn) if tiling.order == "resident"
                         else 1)
        return {"ifm": rows_out * wo, "ofm": gc * min(tr, h) * w * p, "weight": wts}
    rows_in = min(h, (min(tr, ho) - 1) * s + k)
    # With a bias, its gradient's A partial sums follow the chunk's weight-gradient ones.
    bias = cfg.acc_interleave if layer.bias else 0
    return {"ifm": rows_in * w, "ofm": min(tr, ho) * wo, "weight": gc * kk * p + bias}


def _limits(cfg):
    return {"ifm": cfg.ifm_depth, "ofm": cfg.ofm_depth, "weight": cfg.weight_depth}


def _weight_limit(layer, phase, tiling, cfg):
    """Words a chunk's weights (WU: accumulators) may take per weight bank: half of it when
    the layer has more than one chunk (or streams its weights), so that consecutive chunks
    use the two halves in turn and one loads (or drains) while the other computes; the
    whole bank when a single resident chunk holds everything."""
    if layer.kind == "pool":
        return cfg.weight_depth
    one_chunk = tiling.groups >= _group_count(layer, phase, cfg) and (
        tiling.order == "resident" or Phase(phase) is Phase.WU)
    return cfg.weight_depth if one_chunk else cfg.weight_depth // 2


def fits(layer, phase, tiling, cfg, batch):
    """Whether ``tiling`` fits the buffers and keeps every store one run per channel group."""
    phase = Phase(phase)
    needs = buffer_needs(layer, phase, tiling, cfg, batch)
    limits = dict(_limits(cfg), weight=_weight_limit(layer, phase, tiling, cfg))
    if any(needs[b] > lim for b, lim in limits.items()):
        return False
    rows = _rows(layer, phase)
    if phase is Phase.FP and layer.pooled and tiling.tile_rows < rows and tiling.tile_rows % 2:
        return False            # a pooled row must not straddle two tiles
    if layer.kind != "pool" and phase in (Phase.FP, Phase.BP) and cfg.tm < cfg.tn:
        # A chunk of Tm lanes must cover whole Tn-groups of the stored tensor, else two
        # chunks would share (and rewrite) a run.
        if (tiling.groups * cfg.tm) % cfg.tn and tiling.groups < _group_count(layer, phase, cfg):
            return False
    return True


def check_layer(layer, cfg, batch):
    """Raise ValueError naming ``layer``, the limit and the need if it cannot run at all."""
    if not isinstance(layer, Layer):
        raise TypeError(f"layer must be a Layer, not {layer!r}")
    name = layer.name
    if layer.kind == "conv":
        if layer.kernel > cfg.k_max:
            raise ValueError(f"layer {name!r}: kernel {layer.kernel} exceeds k_max = "
                             f"{cfg.k_max}")
        if layer.stride > cfg.stride_max:
            raise ValueError(f"layer {name!r}: stride {layer.stride} exceeds stride_max = "
                             f"{cfg.stride_max}")
    for what, value, limit in (("in_channels", layer.in_channels, cfg.max_channels),
                               ("out_channels", layer.out_channels, cfg.max_channels),
                               ("height", layer.height, cfg.max_size),
                               ("width", layer.width, cfg.max_size),
                               ("batch", batch, cfg.max_batch)):
        if value > limit:
            limit_name = {"batch": "max_batch", "height": "max_size",
                          "width": "max_size"}.get(what, "max_channels")
            raise ValueError(f"layer {name!r}: {what} = {value} exceeds {limit_name} = {limit}")
    if layer.kind == "fc" and layer.flatten_from is not None:
        from .layout import flat_length
        need = flat_length(*layer.flatten_from, cfg.tn)
        if layer.in_channels != need:
            raise ValueError(f"layer {name!r}: in_channels = {layer.in_channels}, but the "
                             f"flatten of a {layer.flatten_from} map with Tn = {cfg.tn} is "
                             f"{need} words (layout.flat_length, padding channels included)")
    phases = (Phase.FP, Phase.BP) if layer.kind == "pool" else tuple(Phase)
    for phase in phases:
        smallest = Tiling(1, 1, "streamed" if phase is not Phase.WU else "resident")
        if phase is Phase.FP and layer.pooled and _rows(layer, phase) > 1:
            smallest = Tiling(2, 1, smallest.order)
        if cfg.tm < cfg.tn and phase in (Phase.FP, Phase.BP) and layer.kind != "pool":
            smallest = Tiling(smallest.tile_rows,
                              min(cfg.tn // cfg.tm, _group_count(layer, phase, cfg)),
                              smallest.order)
        needs = buffer_needs(layer, phase, smallest, cfg, batch)
        limits = dict(_limits(cfg), weight=_weight_limit(layer, phase, smallest, cfg))
        for buf, limit in limits.items():
            if needs[buf] > limit:
                raise ValueError(
                    f"layer {name!r}: {phase.name} needs {needs[buf]} words per {buf} bank "
                    f"for its smallest tile ({smallest.tile_rows} row(s)"
                    f"{' plus halo' if buf == 'ifm' and layer.kernel > 1 else ''}, "
                    f"width {batch if layer.kind == 'fc' else layer.width}), but "
                    f"{buf}_depth is {limit}")


def _distinct_sizes(total):
    """Tile sizes that give distinct tile counts, largest first."""
    return sorted({_ceil_div(total, t) for t in range(1, total + 1)}, reverse=True)


def candidate_tilings(layer, phase, cfg, batch, *, rows_kept=3, groups_kept=2):
    """The feasible tilings the search tries: for each of the ``rows_kept`` largest feasible
    tile heights, the ``groups_kept`` largest feasible group counts; weights resident when
    they fit, else streamed."""
    phase = Phase(phase)
    out = []
    orders = ("resident",) if phase is Phase.WU or layer.kind == "pool" else ORDERS
    total_groups = 1 if layer.kind == "pool" else _group_count(layer, phase, cfg)
    for order in orders:
        rows_found = 0
        for tr in _distinct_sizes(_rows(layer, phase)):
            kept = [Tiling(tr, gc, order) for gc in _distinct_sizes(total_groups)
                    if fits(layer, phase, Tiling(tr, gc, order), cfg, batch)][:groups_kept]
            if kept:
                out.extend(kept)
                rows_found += 1
                if rows_found == rows_kept:
                    break
        if out:
            break       # resident fits: never stream
    return out


def schedule_layer(layer, phase, cfg, batch, dram=None, timing=None, *, momentum=None):
    """The modelled-fastest tiling of ``layer`` in ``phase``, as a
    :class:`ef_train_hdl.perf.LayerPerf` (its ``tiling`` field is the :class:`Tiling`)."""
    from .perf import DramModel, PeTiming, layer_perf
    dram = DramModel() if dram is None else dram
    timing = PeTiming() if timing is None else timing
    check_layer(layer, cfg, batch)
    candidates = candidate_tilings(layer, phase, cfg, batch)
    if not candidates:
        raise ValueError(f"layer {layer.name!r}: no tiling of {Phase(phase).name} fits the "
                         f"buffers (ifm_depth {cfg.ifm_depth}, ofm_depth {cfg.ofm_depth}, "
                         f"weight_depth {cfg.weight_depth})")
    best = None
    for tiling in candidates:
        perf = layer_perf(layer, phase, tiling, cfg, batch, dram, timing, momentum=momentum)
        if best is None or perf.cycles < best.cycles:
            best = perf
    return best
