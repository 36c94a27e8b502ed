"""The compiler: a network + batch size + config -> DRAM memory map + descriptor programs.

Input: a :class:`~ef_train_hdl.network.Network` (the project's spec, or one imported from
``torch.nn.Sequential`` by :func:`~ef_train_hdl.network.from_torch`). The compiler fuses it
into hardware layers (conv/FC with ReLU and max-pool on the store path, Flatten free), places
every tensor in DRAM (:class:`MemoryMap`), picks a tiling per layer and phase, and emits two
programs of :class:`~ef_train_hdl.descriptor.Descriptor`:

- ``train_program``, one training step: FP of every layer; ``HOST_SYNC`` (the host reads the
  logits, writes the softmax cross-entropy gradient, mean over the batch, into the last
  layer's ``grad_out``); then from the last layer to the first: BP (not for the first
  layer), then WU with the SGD update fused on its store path; ``END``. BP and WU undo the
  layer's own max-pool and ReLU on their load path (docs/descriptors.md).
- ``infer_program``: FP of every layer; ``END``.

Every descriptor is validated against the config at compile time (the checks the command
processor repeats), so an unsupported network fails here with a message naming the layer.

Memory map, per hardware layer ``L`` (word addresses; every tensor 4 KiB aligned):
``act[L]`` its input (``act[0]`` the input batch, ``act[L+1]`` its stored output), ``index[L]``
the pool indices, ``grad[L]`` the gradient of its stored output (same layout as ``act[L+1]``;
the host writes the last one, the logits' gradient), ``param[L]`` the weights followed directly
by the bias, ``momentum[L]`` with the same internal offsets. Layouts are
those of :mod:`ef_train_hdl.layout`; an FC layer after a Flatten reads the conv layout of its
input map directly and its weights are stored in the DRAM flatten order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import layout, schedule
from .config import AcceleratorConfig
from .descriptor import Descriptor, Opcode, validate, DescriptorError, DESC_WORDS
from .network import Network, fuse, UnsupportedLayer
from .workloads import Layer, Phase

__all__ = ["compile_network", "CompiledNetwork", "MemoryMap", "Tensor", "CompileError",
           "interleave", "to_workload_layer", "tiling_for"]

#: Alignment of every tensor base (words): 4 KiB, so no burst of a run crosses a 4 KiB page
#: at its start and every base is a whole number of DMA beats for every bus width.
TENSOR_ALIGN = 1024


class CompileError(ValueError):
    """The network cannot be compiled for this configuration (names the layer)."""


@dataclass(frozen=True)
class Tensor:
    """One DRAM region: ``name``, word address ``base``, ``words``, and how it is laid out."""
    name: str
    base: int
    words: int
    kind: str            # "act", "fc_act", "index", "weight", "bias", "program"
    shape: tuple = ()


@dataclass
class MemoryMap:
    tensors: dict = field(default_factory=dict)
    top: int = 0

    def alloc(self, name, words, kind, shape=(), align=TENSOR_ALIGN):
        base = -(-self.top // align) * align
        t = Tensor(name, base, int(words), kind, tuple(shape))
        self.tensors[name] = t
        self.top = base + int(words)
        return t

    def __getitem__(self, name):
        return self.tensors[name]

    def table(self):
        """Readable memory map (one line per tensor)."""
        return "\n".join(f"0x{t.base * 4:08X} {t.words * 4:>9d} B  {t.name:14s} {t.kind:8s} "
                         f"{t.shape}" for t in self.tensors.values())


@dataclass
class CompiledNetwork:
    network: Network
    layers: list
    batch: int
    cfg: AcceleratorConfig
    memory: MemoryMap
    train_program: list
    infer_program: list
    train_addr: int
    infer_addr: int
    lr: float
    momentum: float
    #: The tile programs the accelerator runs (:mod:`ef_train_hdl.lower`), and their word
    #: addresses; ``None`` for a configuration the whole accelerator does not support.
    train_tiles: list = None
    infer_tiles: list = None
    train_tiles_addr: int = 0
    infer_tiles_addr: int = 0

    def program(self, kind, which):
        """``(address, packed words)`` of program ``which`` ("train" / "infer") in ``kind``
        ("layer": descriptors for the model backend; "tile": the accelerator's)."""
        from . import isa
        from .descriptor import pack_program
        if kind == "layer":
            prog = self.train_program if which == "train" else self.infer_program
            return (self.train_addr if which == "train" else self.infer_addr,
                    pack_program(prog))
        prog = self.train_tiles if which == "train" else self.infer_tiles
        if prog is None:
            raise CompileError(self.tile_error or "no tile program")
        return (self.train_tiles_addr if which == "train" else self.infer_tiles_addr,
                isa.pack_program(prog))

    tile_error: str = ""

    @property
    def dram_words(self):
        return self.memory.top

    @property
    def step_macs(self):
        """Useful multiply-accumulates of one training step (the paper's count): FP and WU of
        every layer, BP of all but the first; ``M*N*K*K*Ho*Wo*B`` (FC ``M*N*B``) each."""
        total = 0
        for L in self.layers:
            n = int(np.prod(L.in_shape)) if L.kind == "fc" else L.in_shape[0]
            if L.kind == "conv":
                c, h, w = L.in_shape
                ho = (h + 2 * L.pad - L.kernel) // L.stride + 1
                wo = (w + 2 * L.pad - L.kernel) // L.stride + 1
                one = L.out_channels * n * L.kernel ** 2 * ho * wo * self.batch
            else:
                one = L.out_channels * n * self.batch
            total += one * (3 if L.index > 0 else 2)
        return total

    @property
    def input(self):
        return self.memory["act0"]

    @property
    def logits(self):
        return self.memory[f"act{len(self.layers)}"]

    @property
    def logits_grad(self):
        return self.memory[f"grad{len(self.layers) - 1}"]

    @property
    def num_classes(self):
        return self.layers[-1].out_channels

    # -- tensors <-> DRAM words (float32 views) ---------------------------------------------

    def pack_input(self, x):
        return layout.pack_activations(np.asarray(x, np.float32), self.cfg.tn)

    def pack_logits_grad(self, g):
        return layout.pack_fc_activations(np.asarray(g, np.float32), self.cfg.tn)

    def unpack_logits(self, flat_f32):
        return layout.unpack_fc_activations(flat_f32, self.batch, self.num_classes,
                                            self.cfg.tn)

    def dram_weights(self, L, w):
        """PyTorch-shaped weights of hardware layer ``L`` -> the shape the hardware uses
        (FC after Flatten: columns permuted to the DRAM flatten order, zero padded)."""
        if L.kind == "fc" and L.flatten:
            c, h, ww = L.in_shape
            return layout.fc_weights_from_torch(w, c, h, ww, self.cfg.tn)
        return np.asarray(w, np.float32)

    def torch_weights(self, L, w):
        """Inverse of :meth:`dram_weights`."""
        if L.kind == "fc" and L.flatten:
            c, h, ww = L.in_shape
            cc, hh, xx = np.meshgrid(np.arange(c), np.arange(h), np.arange(ww), indexing="ij")
            idx = layout.flatten_index(cc, hh, xx, h, ww, self.cfg.tn).reshape(-1)
            return np.ascontiguousarray(w[:, idx])
        return w

    def weight_layout(self, L):
        k = L.kernel if L.kind == "conv" else 1
        return layout.WeightLayout(L.out_channels, hw_in_channels(L, self.cfg), k,
                                   self.cfg.tm, self.cfg.tn)

    def pack_params(self, L, w, b):
        """Words of ``param[L]``: weights (hardware shape) then bias."""
        wl = self.weight_layout(L)
        out = np.zeros(self.memory[f"param{L.index}"].words, np.float32)
        out[:wl.words] = wl.pack(np.asarray(w, np.float32))
        if L.bias:
            bl = layout.BiasLayout(L.out_channels, self.cfg.tm)
            off = bias_offset(L, self.cfg)
            out[off:off + bl.words] = bl.pack(np.asarray(b, np.float32))
        return out

    def unpack_params(self, L, flat):
        wl = self.weight_layout(L)
        w = wl.unpack(flat[:wl.words], fc=L.kind == "fc")
        b = None
        if L.bias:
            bl = layout.BiasLayout(L.out_channels, self.cfg.tm)
            off = bias_offset(L, self.cfg)
            b = bl.unpack(flat[off:off + bl.words])
        return w, b


def hw_in_channels(L, cfg):
    """Input channels the PE array reduces over (FC after Flatten: the DRAM flatten length)."""
    if L.kind == "fc":
        c, h, w = L.in_shape
        return layout.flat_length(c, h, w, cfg.tn) if L.flatten else c
    return L.in_shape[0]


def bias_offset(L, cfg):
    """Word offset of the bias inside ``param[L]`` (right after the weights, beat aligned)."""
    words = layout.WeightLayout(L.out_channels, hw_in_channels(L, cfg),
                                L.kernel if L.kind == "conv" else 1, cfg.tm, cfg.tn).words
    beat = cfg.floats_per_beat
    return -(-words // beat) * beat


def to_workload_layer(L, cfg):
    """The :class:`~ef_train_hdl.workloads.Layer` that schedule/perf/layout use."""
    name = f"{L.kind}{L.index}"
    if L.kind == "conv":
        c, h, w = L.in_shape
        return Layer(name, "conv", c, L.out_channels, h, w, L.kernel, L.stride, L.pad,
                     relu=L.relu, pool=L.pool, bias=L.bias)
    return Layer(name, "fc", hw_in_channels(L, cfg), L.out_channels, relu=L.relu,
                 bias=L.bias, flatten_from=tuple(L.in_shape) if L.flatten else None)


def interleave(L, phase, batch, cfg):
    """Accumulator interleave P of layer ``L`` in ``phase`` (docs/numerics.md section 4)."""
    return schedule.interleave(to_workload_layer(L, cfg), phase, cfg, batch)


def tiling_for(L, phase, batch, cfg, *, momentum=None):
    """The :class:`~ef_train_hdl.schedule.Tiling` of ``L`` in ``phase``: the analytical
    model's choice (:func:`ef_train_hdl.schedule.schedule_layer`)."""
    perf = schedule.schedule_layer(to_workload_layer(L, cfg), phase, cfg, batch,
                                   momentum=momentum)
    return perf.tiling


def _act_tensor(mm, name, L_shape, batch, cfg, fc):
    c, h, w = L_shape
    if fc:
        lay = layout.fc_activation_layout(batch, c, cfg.tn)
        return mm.alloc(name, lay.words, "fc_act", (batch, c))
    lay = layout.ActivationLayout(batch, c, h, w, cfg.tn)
    return mm.alloc(name, lay.words, "act", (batch, c, h, w))


def compile_network(network, batch, cfg, *, lr=0.01, momentum=0.0):
    """Compile ``network`` for ``batch`` images on ``cfg``; see the module docstring."""
    if not isinstance(cfg, AcceleratorConfig):
        raise TypeError(f"cfg must be an AcceleratorConfig, not {cfg!r}")
    if not isinstance(batch, int) or not 1 <= batch <= cfg.max_batch:
        raise CompileError(f"batch must be an integer 1..{cfg.max_batch} (max_batch), "
                           f"not {batch!r}")
    if momentum and not cfg.momentum:
        raise CompileError(f"momentum = {momentum} but the configuration has no momentum unit")
    try:
        layers = fuse(network, cfg)
    except UnsupportedLayer as e:
        raise CompileError(str(e)) from None
    n = len(layers)
    mm = MemoryMap()
    # The programs first: fixed places, known size.
    mm.alloc("train_program", (3 * n + 1) * DESC_WORDS, "program")
    mm.alloc("infer_program", (n + 1) * DESC_WORDS, "program")
    # Activations: act[L] is layer L's input. An FC layer reading an FC output uses the FC
    # layout; an FC after Flatten reads the conv layout of its input map.
    for L in layers:
        fc_in = L.kind == "fc" and not L.flatten
        _act_tensor(mm, f"act{L.index}", L.in_shape, batch, cfg, fc_in)
    last = layers[-1]
    _act_tensor(mm, f"act{n}", last.out_shape, batch, cfg, True)
    for L in layers:
        if L.pool:
            c, h, w = L.out_shape
            lay = layout.ActivationLayout(batch, c, h, w, cfg.tn)
            mm.alloc(f"index{L.index}", lay.words, "index", (batch, c, h, w))
        # Gradient of the stored (post-ReLU, post-pool) output: same layout as act[L+1].
        fc_out = L.kind == "fc"
        _act_tensor(mm, f"grad{L.index}", L.out_shape, batch, cfg, fc_out)
    for L in layers:
        words = bias_offset(L, cfg) + (layout.BiasLayout(L.out_channels, cfg.tm).words
                                       if L.bias else 0)
        mm.alloc(f"param{L.index}", words, "param")
        if momentum:
            mm.alloc(f"momentum{L.index}", words, "param")

    def base(name):
        return mm[name].base if name in mm.tensors else 0

    fp, bp_wu = [], []
    for L in layers:
        i = L.index
        conv = L.kind == "conv"
        common = dict(in_channels=L.in_shape[0], out_channels=L.out_channels,
                      in_h=L.in_shape[1], in_w=L.in_shape[2], batch=batch, kernel=L.kernel,
                      stride=L.stride, pad=L.pad, layer=i, first_layer=i == 0, relu=L.relu,
                      pool=L.pool, flatten=L.flatten, addr_ofm=base(f"act{i + 1}"),
                      addr_index=base(f"index{i}") if L.pool else 0)
        try:
            L.tilings = {ph: tiling_for(L, ph, batch, cfg, momentum=bool(momentum))
                         for ph in (Phase.FP, Phase.BP, Phase.WU)}
        except ValueError as e:
            raise CompileError(f"layer {L.source} ({L.describe()}) cannot be tiled for "
                               f"this configuration: {e}") from e

        def tile(ph):
            t = L.tilings[ph]
            return dict(tile_rows=t.tile_rows, tile_groups=t.groups,
                        streamed=getattr(t, "order", "resident") == "streamed",
                        interleave=interleave(L, ph, batch, cfg))
        fp.append(Descriptor(
            opcode=Opcode.CONV_FP if conv else Opcode.FC_FP, bias=L.bias,
            addr_ifm=base(f"act{i}"), addr_weight=base(f"param{i}"),
            addr_bias=base(f"param{i}") + bias_offset(L, cfg) if L.bias else 0,
            **tile(Phase.FP), **common))
        L.descriptors = {"common": common, "tile": tile}
    for L in reversed(layers):
        i = L.index
        conv = L.kind == "conv"
        common, tile = L.descriptors["common"], L.descriptors["tile"]
        if i > 0:
            bp_wu.append(Descriptor(
                opcode=Opcode.CONV_BP if conv else Opcode.FC_BP,
                addr_weight=base(f"param{i}"), addr_grad_out=base(f"grad{i}"),
                addr_grad_in=base(f"grad{i - 1}"), **tile(Phase.BP), **common))
        # WU with SGD on its store path: the weight gradient never goes to DRAM.
        boff = bias_offset(L, cfg)
        bp_wu.append(Descriptor(
            opcode=Opcode.CONV_WU if conv else Opcode.FC_WU, bias=L.bias, sgd=True,
            momentum=bool(momentum), addr_ifm=base(f"act{i}"),
            addr_grad_out=base(f"grad{i}"), addr_weight=base(f"param{i}"),
            addr_bias=base(f"param{i}") + boff if L.bias else 0,
            addr_momentum=base(f"momentum{i}") if momentum else 0,
            addr_momentum_b=base(f"momentum{i}") + boff if momentum and L.bias else 0,
            lr=float(np.float32(lr)), mu=float(np.float32(momentum)),
            **tile(Phase.WU), **common))
        del L.descriptors
    train = fp + [Descriptor(opcode=Opcode.HOST_SYNC)] + bp_wu + [Descriptor(opcode=Opcode.END)]
    infer = list(fp) + [Descriptor(opcode=Opcode.END)]
    for prog in (train, infer):
        for k, d in enumerate(prog):
            try:
                validate(d, cfg, index=k, dram_words=mm.top)
            except DescriptorError as e:
                what = layers[d.layer].describe() if d.opcode in (
                    Opcode.CONV_FP, Opcode.CONV_BP, Opcode.CONV_WU, Opcode.FC_FP,
                    Opcode.FC_BP, Opcode.FC_WU, Opcode.SGD) else ""
                raise CompileError(f"layer {layers[d.layer].source} ({what}), "
                                   f"{d.opcode.name}: {e}") from e
    compiled = CompiledNetwork(network, layers, batch, cfg, mm, train, infer,
                               mm["train_program"].base, mm["infer_program"].base,
                               float(np.float32(lr)), float(np.float32(momentum)))
    _add_tile_programs(compiled)
    return compiled


#: Instructions the command processor may fetch past an END or HOST_SYNC (its prefetch); the
#: memory map reserves them after every tile program.
FETCH_SLACK = 8


def _add_tile_programs(c):
    """Lower both programs to tile programs and place them after the tensors. A
    configuration the whole accelerator does not support (lower.check_config) keeps its
    layer programs; ``tile_error`` says why there are no tile programs."""
    from . import isa
    from .lower import LoweringError, check_config, lower_program
    try:
        check_config(c.cfg)
    except LoweringError as e:
        c.tile_error = str(e)
        return
    for which in ("train", "infer"):
        prog = lower_program(c.train_program if which == "train" else c.infer_program, c.cfg)
        for k, instr in enumerate(prog):
            try:
                isa.validate(instr, c.cfg, index=k)
            except isa.InstrError as e:
                raise CompileError(f"tile program {which}: {e}") from e
        t = c.memory.alloc(f"{which}_tiles", (len(prog) + FETCH_SLACK) * isa.INSTR_WORDS,
                           "program")
        setattr(c, f"{which}_tiles", prog)
        setattr(c, f"{which}_tiles_addr", t.base)
