"""The ``model`` backend: the descriptor program executed by the bit-exact numpy model.

DRAM is a numpy ``uint32`` array — the same image the hardware sees. :meth:`ModelBackend.run`
is the command processor in software: it fetches a descriptor, checks magic and checksum,
validates it against the configuration (:func:`ef_train_hdl.descriptor.check`), then unpacks
its operands from DRAM with :mod:`ef_train_hdl.layout`, calls the numpy model
(:mod:`ef_train_hdl.model.ops`) in the order the hardware computes, and packs the results back.
It stops at ``HOST_SYNC``, at ``END`` or at the first error, with the :class:`ErrorCode` the
hardware would report (an operand outside DRAM is an AXI decode error).

Counters: for every layer descriptor the cycles the analytical model predicts for its tiling
(:func:`ef_train_hdl.perf.layer_perf`, :class:`ef_train_hdl.perf.DramModel`), the useful MACs
and hence the PE utilisation; for a stand-alone SGD descriptor its streaming time.
"""

from __future__ import annotations

import numpy as np

from .. import layout
from ..model import ops
from ..descriptor import (DESC_WORDS, DescriptorError, ErrorCode, Opcode, check, unpack,
                          FC_OPCODES)
from ..workloads import Layer, Phase
from .api import Backend, RunStatus, register_backend

__all__ = ["ModelBackend"]


_PHASE = {Opcode.CONV_FP: Phase.FP, Opcode.FC_FP: Phase.FP, Opcode.CONV_BP: Phase.BP,
          Opcode.FC_BP: Phase.BP, Opcode.CONV_WU: Phase.WU, Opcode.FC_WU: Phase.WU}


class _AxiError(Exception):
    def __init__(self, code, message):
        self.code = code
        super().__init__(message)


class ModelBackend(Backend):
    """Numpy DRAM image + descriptor interpreter over the bit-exact model.

    Parameters
    ----------
    cfg : AcceleratorConfig
    dram_words : int
        Size of the DRAM image in 32-bit words.
    dram : ef_train_hdl.perf.DramModel, optional
        Bandwidth/latency used for the modelled cycle counters.
    max_descriptors : int
        A run that executes more descriptors than this stops (a program without END).
    """

    name = "model"

    def __init__(self, cfg, dram_words, *, dram=None, max_descriptors=1 << 20):
        super().__init__(cfg, dram_words)
        self.ops = ops
        self.mem = np.zeros(int(dram_words), np.uint32)
        self.dram = dram
        self.max_descriptors = max_descriptors
        self._perf_cache = {}
        self.reset_counters()

    # -- DRAM -----------------------------------------------------------------------------------

    def write(self, addr, words):
        words = np.asarray(words)
        if words.dtype != np.uint32:
            words = words.astype(np.uint32)
        if addr < 0 or addr + len(words) > len(self.mem):
            raise IndexError(f"write of {len(words)} words at {addr} outside the "
                             f"{len(self.mem)}-word DRAM")
        self.mem[addr:addr + len(words)] = words

    def read(self, addr, count):
        if addr < 0 or addr + count > len(self.mem):
            raise IndexError(f"read of {count} words at {addr} outside the "
                             f"{len(self.mem)}-word DRAM")
        return self.mem[addr:addr + count].copy()

    def _load(self, addr, words, what):
        if addr + words > len(self.mem):
            raise _AxiError(ErrorCode.AXI_READ_ERROR,
                            f"{what}: read of {words} words at 0x{addr * 4:X} beyond DRAM")
        return self.mem[addr:addr + words].view(np.float32)

    def _store(self, addr, values, what):
        values = np.asarray(values)
        flat = values.astype(np.float32).view(np.uint32) if values.dtype != np.uint32 \
            else values
        if addr + len(flat) > len(self.mem):
            raise _AxiError(ErrorCode.AXI_WRITE_ERROR,
                            f"{what}: write of {len(flat)} words at 0x{addr * 4:X} beyond DRAM")
        self.mem[addr:addr + len(flat)] = flat

    # -- counters -------------------------------------------------------------------------------

    def reset_counters(self):
        self._counters = {"cycles": 0, "macs": 0, "descriptors": 0, "per_layer": {}}

    def counters(self):
        c = dict(self._counters)
        c["per_layer"] = {k: dict(v) for k, v in c["per_layer"].items()}
        c["source"] = "analytical model (perf.layer_perf)"
        return c

    def _count(self, key, cycles, macs):
        c = self._counters
        c["cycles"] += int(cycles)
        c["macs"] += int(macs)
        entry = c["per_layer"].setdefault(key, {"cycles": 0, "macs": 0, "utilisation": 0.0})
        entry["cycles"] += int(cycles)
        entry["macs"] += int(macs)
        entry["utilisation"] = (entry["macs"] / (self.cfg.pes * entry["cycles"])
                                if entry["cycles"] else 0.0)

    def _perf(self, d, phase):
        from .. import perf
        from ..schedule import Tiling
        key = (d.opcode, d.in_channels, d.out_channels, d.in_h, d.in_w, d.batch, d.kernel,
               d.stride, d.pad, d.relu, d.pool, d.bias, d.flatten, d.tile_rows,
               d.tile_groups, d.streamed, d.momentum)
        if key not in self._perf_cache:
            layer = _workload_layer(d, self.cfg)
            tiling = Tiling(max(1, d.tile_rows), max(1, d.tile_groups),
                            "streamed" if d.streamed else "resident")
            kw = {} if self.dram is None else {"dram": self.dram}
            p = perf.layer_perf(layer, phase, tiling, self.cfg, d.batch,
                                momentum=bool(d.momentum), **kw)
            self._perf_cache[key] = (p.cycles, p.macs)
        return self._perf_cache[key]

    # -- the command processor ------------------------------------------------------------------

    def run(self, addr):
        for _ in range(self.max_descriptors):
            if addr < 0 or addr + DESC_WORDS > len(self.mem):
                return RunStatus(Opcode.END, addr, addr, ErrorCode.AXI_READ_ERROR,
                                 f"descriptor fetch at 0x{addr * 4:X} beyond DRAM")
            try:
                d = unpack(self.mem[addr:addr + DESC_WORDS])
            except DescriptorError as e:
                return RunStatus(Opcode.END, addr, addr, e.code, str(e))
            code, message = check(d, self.cfg, dram_words=len(self.mem))
            if code != ErrorCode.OK:
                return RunStatus(d.opcode if isinstance(d.opcode, Opcode) else Opcode.END,
                                 addr, addr, code, message)
            nxt = addr + DESC_WORDS
            if d.opcode in (Opcode.END, Opcode.HOST_SYNC):
                return RunStatus(d.opcode, addr, nxt)
            try:
                self._execute(d)
            except _AxiError as e:
                return RunStatus(d.opcode, addr, addr, e.code, str(e))
            self._counters["descriptors"] += 1
            addr = nxt
        return RunStatus(Opcode.END, addr, addr, ErrorCode.BAD_OPCODE,
                         f"no END after {self.max_descriptors} descriptors")

    def _execute(self, d):
        ops, cfg = self.ops, self.cfg
        op = d.opcode
        if op == Opcode.SGD:
            n = d.length
            w = self._load(d.addr_weight, n, "SGD weights")
            dw = self._load(d.addr_grad_w, n, "SGD gradient")
            v = self._load(d.addr_momentum, n, "SGD momentum") if d.momentum else None
            w2, v2 = self._sgd(w, dw, d, v)
            self._store(d.addr_weight, w2, "SGD weights")
            if d.momentum:
                self._store(d.addr_momentum, v2, "SGD momentum")
            self._count((d.layer, "SGD"), _sgd_cycles(n, d.momentum, self.cfg, self.dram), 0)
            return
        # Interleave P is a function of the shape (numerics.md section 4): the hardware
        # checks it; so does the model, so a program the hardware refuses fails here too.
        phase = _PHASE[op]
        layer = _workload_layer(d, cfg)
        from ..schedule import interleave
        want = interleave(layer, phase, cfg, d.batch)
        if d.interleave != want:
            raise _AxiError(ErrorCode.BAD_INTERLEAVE,
                            f"field interleave = {d.interleave}; this layer and phase needs "
                            f"P = {want} (docs/numerics.md section 4)")
        fc = op in FC_OPCODES
        tm, tn, b = cfg.tm, cfg.tn, d.batch
        n, m, k = d.in_channels, d.out_channels, d.kernel
        if fc:
            n_hw = layout.flat_length(n, d.in_h, d.in_w, tn) if d.flatten else n
            wl = layout.WeightLayout(m, n_hw, 1, tm, tn)
            out_shape = (b, m)
        else:
            wl = layout.WeightLayout(m, n, k, tm, tn)
            ho, wo = d.conv_out_hw
            out_shape = (b, m, ho // 2, wo // 2) if d.pool else (b, m, ho, wo)

        def load_weights():
            w = self._load(d.addr_weight, wl.words, "weights")
            return wl.unpack(w, fc=fc)

        def load_bias():
            bl = layout.BiasLayout(m, tm)
            return bl.unpack(self._load(d.addr_bias, bl.words, "bias"))

        def load_input():
            if fc and not d.flatten:
                lay = layout.fc_activation_layout(b, n, tn)
                return layout.unpack_fc_activations(self._load(d.addr_ifm, lay.words, "ifm"),
                                                    b, n, tn)
            lay = layout.ActivationLayout(b, n, d.in_h, d.in_w, tn)
            x = lay.unpack(self._load(d.addr_ifm, lay.words, "ifm"))
            return ops.flatten_hw(x, tn) if fc else x

        def out_layout():
            if fc:
                return layout.fc_activation_layout(b, m, tn)
            return layout.ActivationLayout(*out_shape, tn)

        def load_out(addr, what, index=False):
            lay = out_layout()
            flat = self._load(addr, lay.words, what)
            if index:
                flat = flat.view(np.uint32)
            if fc:
                return layout.unpack_fc_activations(flat, b, m, tn)
            return lay.unpack(flat)

        def grad_z():
            # The load path of BP and WU: gradient of the stored output -> of the conv output.
            g = load_out(d.addr_grad_out, "grad_out")
            if d.relu:
                g = ops.relu_bp(g, load_out(d.addr_ofm, "ofm"))
            if d.pool:
                g = ops.maxpool_bp(g, load_out(d.addr_index, "pool index", index=True),
                                   d.conv_out_hw)
            return g

        if phase == Phase.FP:
            x, w = load_input(), load_weights()
            bias = load_bias() if d.bias else None
            if fc:
                y = ops.fc_fp(x, w, bias, cfg)
            else:
                y = ops.conv_fp(x, w, bias, d.stride, d.pad, cfg)
            if d.relu:
                y = ops.relu_fp(y)
            idx = None
            if d.pool:
                y, idx = ops.maxpool_fp(y)
            lay = out_layout()
            self._store(d.addr_ofm, _pack_out(y, lay, fc, tn), "ofm")
            if idx is not None:
                self._store(d.addr_index, lay.pack(np.asarray(idx, np.uint32), np.uint32),
                            "pool index")
        elif phase == Phase.BP:
            g, w = grad_z(), load_weights()
            if fc:
                gx = ops.fc_bp(g, w, cfg)
                if d.flatten:
                    gx = ops.unflatten_hw(gx, n, d.in_h, d.in_w, tn)
                    lay = layout.ActivationLayout(b, n, d.in_h, d.in_w, tn)
                    self._store(d.addr_grad_in, lay.pack(gx), "grad_in")
                else:
                    self._store(d.addr_grad_in, layout.pack_fc_activations(gx, tn), "grad_in")
            else:
                gx = ops.conv_bp(g, w, (d.in_h, d.in_w), d.stride, d.pad, cfg)
                lay = layout.ActivationLayout(b, n, d.in_h, d.in_w, tn)
                self._store(d.addr_grad_in, lay.pack(gx), "grad_in")
        else:
            g, x = grad_z(), load_input()
            if fc:
                dw = ops.fc_wu(g, x, cfg)
                db = ops.bias_grad(g[:, :, None, None], cfg) if d.bias else None
            else:
                dw = ops.conv_wu(g, x, k, d.stride, d.pad, cfg)
                db = ops.bias_grad(g, cfg) if d.bias else None
            dw_flat = wl.pack(dw)
            bl = layout.BiasLayout(m, tm)
            if d.sgd:
                w = self._load(d.addr_weight, wl.words, "weights")
                v = self._load(d.addr_momentum, wl.words, "momentum") if d.momentum else None
                w2, v2 = self._sgd(w, dw_flat, d, v)
                self._store(d.addr_weight, w2, "weights")
                if d.momentum:
                    self._store(d.addr_momentum, v2, "momentum")
                if d.bias:
                    bw = self._load(d.addr_bias, bl.words, "bias")
                    bv = self._load(d.addr_momentum_b, bl.words, "bias momentum") \
                        if d.momentum else None
                    b2, bv2 = self._sgd(bw, bl.pack(db), d, bv)
                    self._store(d.addr_bias, b2, "bias")
                    if d.momentum:
                        self._store(d.addr_momentum_b, bv2, "bias momentum")
            else:
                self._store(d.addr_grad_w, dw_flat, "weight gradient")
                if d.bias:
                    self._store(d.addr_grad_b, bl.pack(db), "bias gradient")
        cycles, macs = self._perf(d, phase)
        self._count((d.layer, phase.name), cycles, macs)

    def _sgd(self, w, dw, d, v):
        lr = np.float32(d.lr)
        if d.momentum:
            return self.ops.sgd(np.array(w), np.array(dw), lr, self.cfg,
                                mu=np.float32(d.mu), v=np.array(v))
        return self.ops.sgd(np.array(w), np.array(dw), lr, self.cfg)


def _pack_out(y, lay, fc, tn):
    if fc:
        return layout.pack_fc_activations(y, tn)
    return lay.pack(y)


def _workload_layer(d, cfg):
    """The :class:`~ef_train_hdl.workloads.Layer` a layer descriptor describes."""
    name = f"layer{d.layer}"
    if d.opcode in FC_OPCODES:
        n = layout.flat_length(d.in_channels, d.in_h, d.in_w, cfg.tn) if d.flatten \
            else d.in_channels
        return Layer(name, "fc", n, d.out_channels, relu=d.relu, bias=d.bias,
                     flatten_from=(d.in_channels, d.in_h, d.in_w) if d.flatten else None)
    return Layer(name, "conv", d.in_channels, d.out_channels, d.in_h, d.in_w, d.kernel,
                 d.stride, d.pad, relu=d.relu, pool=d.pool, bias=d.bias)


def _sgd_cycles(words, momentum, cfg, dram):
    """A stand-alone SGD streams w, dw (and v) in and w' (and v') out: the read channel
    carries 2 (3) runs, the write channel 1 (2) in parallel."""
    from ..perf import DramModel
    dram = dram or DramModel()
    one = int(dram.transfer_cycles(words))
    return max((3 if momentum else 2) * one, (2 if momentum else 1) * one)


register_backend("model", ModelBackend)
