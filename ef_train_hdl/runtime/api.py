"""The host API: one :class:`Trainer` over interchangeable :class:`Backend` s.

A backend is what the host sees of an accelerator: a DRAM it can write and read (32-bit words
at word addresses), a way to run the descriptor program from an address until the accelerator
stops (at ``HOST_SYNC``, ``END`` or an error), and performance counters. The ``model`` backend
(:mod:`.model_backend`) runs the program with the numpy model; simulator and board backends
plug in behind the same four methods.

:class:`Trainer` compiles the network once (:func:`ef_train_hdl.compiler.compile_network`),
writes the programs and the parameters into DRAM, and then for each training step writes the
input batch, runs the program to its ``HOST_SYNC``, reads the logits, computes the softmax
cross-entropy loss and its gradient (mean over the batch; :func:`softmax_xent`) on the host,
writes the gradient, and runs the program to its ``END``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from ..config import AcceleratorConfig, preset
from ..compiler import compile_network
from ..descriptor import ErrorCode, Opcode

__all__ = ["Backend", "RunStatus", "AcceleratorError", "Trainer", "softmax_xent",
           "register_backend", "make_backend", "BACKENDS"]


@dataclass(frozen=True)
class RunStatus:
    """Why the accelerator stopped: ``opcode`` HOST_SYNC or END at descriptor address
    ``addr``; ``next_addr`` is where a HOST_SYNC resumes; ``code`` an :class:`ErrorCode`."""
    opcode: int
    addr: int
    next_addr: int
    code: ErrorCode = ErrorCode.OK
    message: str = ""


class AcceleratorError(RuntimeError):
    """The accelerator stopped with an error code."""

    def __init__(self, status):
        self.status = status
        super().__init__(f"accelerator stopped with {status.code.name} at descriptor "
                         f"address 0x{status.addr * 4:X}: {status.message}")


class Backend(abc.ABC):
    """What the host needs of an accelerator. Addresses are 32-bit-word addresses.

    ``program_kind`` says which program :meth:`run` executes: ``"layer"`` (the layer
    descriptors of :mod:`ef_train_hdl.descriptor`: the ``model`` backend) or ``"tile"`` (the
    tile program of :mod:`ef_train_hdl.isa` the accelerator runs). The :class:`Trainer`
    writes both into DRAM, so every backend's DRAM image is the same.
    """

    name = "abstract"
    program_kind = "layer"

    def __init__(self, cfg, dram_words):
        self.cfg = cfg
        self.dram_words = dram_words

    @abc.abstractmethod
    def write(self, addr, words):
        """Write uint32 ``words`` to DRAM from word address ``addr``."""

    @abc.abstractmethod
    def read(self, addr, count):
        """``count`` uint32 words of DRAM from word address ``addr``."""

    @abc.abstractmethod
    def run(self, addr):
        """Start the program at ``addr``; return a :class:`RunStatus` when it stops."""

    @abc.abstractmethod
    def counters(self):
        """Counters of the runs since :meth:`reset_counters`: a dict with at least
        ``cycles`` (int), ``macs`` (int) and ``per_layer`` {(layer, phase): {...}}."""

    @abc.abstractmethod
    def reset_counters(self):
        """Zero the counters."""

    # float32 conveniences
    def write_f32(self, addr, values):
        self.write(addr, np.asarray(values, np.float32).view(np.uint32))

    def read_f32(self, addr, count):
        return self.read(addr, count).view(np.float32)


BACKENDS = {}


def register_backend(name, factory):
    """Make ``factory(cfg, dram_words, **options)`` available as backend ``name``."""
    BACKENDS[name] = factory


def make_backend(name, cfg, dram_words, **options):
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(sorted(BACKENDS))}, not {name!r}")
    return BACKENDS[name](cfg, dram_words, **options)


def softmax_xent(logits, labels):
    """Mean softmax cross-entropy loss and its gradient w.r.t. the logits (float32).

    Computed in float64 and rounded once to float32: the host's part of the step, off the
    accelerator. The gradient carries the ``1/B`` of the mean (docs/numerics.md section 9).
    """
    z = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    b = z.shape[0]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(e.sum(axis=1)) - z[np.arange(b), labels]))
    g = p
    g[np.arange(b), labels] -= 1.0
    return loss, (g / b).astype(np.float32)


class Trainer:
    """Train ``network`` with batches of ``batch`` images on an accelerator ``backend``.

    Parameters
    ----------
    network : ef_train_hdl.network.Network
    batch : int
        Batch size compiled into the program (``train_step`` takes exactly this many images;
        ``predict`` pads a shorter batch).
    cfg : AcceleratorConfig or str
        Configuration or preset name (default ``"ultra96"``).
    backend : str or Backend
        ``"model"`` (numpy model), or a backend instance.
    lr, momentum : float
        SGD parameters, compiled into the SGD descriptors as binary32.
    """

    def __init__(self, network, batch, cfg="ultra96", *, backend="model", lr=0.01,
                 momentum=0.0, **backend_options):
        if isinstance(cfg, str):
            cfg = preset(cfg)
        if not isinstance(cfg, AcceleratorConfig):
            raise TypeError(f"cfg must be an AcceleratorConfig or a preset name, not {cfg!r}")
        self.cfg = cfg
        self.batch = batch
        self.compiled = compile_network(network, batch, cfg, lr=lr, momentum=momentum)
        c = self.compiled
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            from . import model_backend  # noqa: F401  (registers "model")
            self.backend = make_backend(backend, cfg, c.dram_words, **backend_options)
        kinds = ("layer", "tile") if c.train_tiles is not None else ("layer",)
        if self.backend.program_kind not in kinds:
            raise ValueError(f"backend {self.backend.name!r} runs tile programs, which this "
                             f"configuration has none of: {c.tile_error}")
        self._addr = {}
        for kind in kinds:
            for which in ("train", "infer"):
                addr, words = c.program(kind, which)
                self.backend.write(addr, words)
                if kind == self.backend.program_kind:
                    self._addr[which] = addr
        self._last = {}
        if network.params:
            self.load_weights({k: v for k, v in network.params.items()})

    # -- parameters ---------------------------------------------------------------------------

    def init(self, seed=0):
        """PyTorch's default initialisation (uniform +-1/sqrt(fan_in) for weights and bias),
        from a numpy generator seeded with ``seed``; momentum buffers zeroed."""
        rng = np.random.default_rng(seed)
        params = {}
        for L in self.compiled.layers:
            fan_in = int(np.prod(L.weight_shape[1:]))
            bound = 1.0 / np.sqrt(fan_in)
            w = rng.uniform(-bound, bound, L.weight_shape).astype(np.float32)
            b = rng.uniform(-bound, bound, L.out_channels).astype(np.float32) if L.bias else None
            params[L.source] = (w, b)
        self.load_weights(params)

    def load_weights(self, params):
        """Write parameters: ``{network layer index: (weight, bias)}`` in PyTorch shapes and
        order, or the path of an ``.npz`` written by :meth:`save_weights`. Zeroes momentum."""
        if isinstance(params, (str, bytes)) or hasattr(params, "__fspath__"):
            with np.load(params) as f:
                params = {int(k[1:]): (f[k], f[f"b{k[1:]}"] if f"b{k[1:]}" in f else None)
                          for k in f.files if k.startswith("w")}
        c = self.compiled
        for L in c.layers:
            if L.source not in params:
                raise ValueError(f"no parameters for layer {L.source} ({L.describe()})")
            w, b = params[L.source]
            w = np.asarray(w, np.float32)
            if w.shape != L.weight_shape:
                raise ValueError(f"layer {L.source} ({L.describe()}): weight shape must be "
                                 f"{L.weight_shape}, not {w.shape}")
            if L.bias and (b is None or np.shape(b) != (L.out_channels,)):
                raise ValueError(f"layer {L.source} ({L.describe()}): bias must have shape "
                                 f"({L.out_channels},), not {None if b is None else np.shape(b)}")
            t = c.memory[f"param{L.index}"]
            self.backend.write_f32(t.base, c.pack_params(L, c.dram_weights(L, w), b))
            if f"momentum{L.index}" in c.memory.tensors:
                m = c.memory[f"momentum{L.index}"]
                self.backend.write_f32(m.base, np.zeros(m.words, np.float32))

    def read_weights(self):
        """``{network layer index: (weight, bias)}`` in PyTorch shapes and order."""
        c = self.compiled
        out = {}
        for L in c.layers:
            t = c.memory[f"param{L.index}"]
            w, b = c.unpack_params(L, self.backend.read_f32(t.base, t.words))
            out[L.source] = (c.torch_weights(L, w), b)
        return out

    def save_weights(self, path):
        arrays = {}
        for k, (w, b) in self.read_weights().items():
            arrays[f"w{k}"] = w
            if b is not None:
                arrays[f"b{k}"] = b
        np.savez(path, **arrays)

    # -- running ------------------------------------------------------------------------------

    def _run(self, addr, expect):
        status = self.backend.run(addr)
        if status.code != ErrorCode.OK:
            raise AcceleratorError(status)
        if status.opcode != expect:
            raise RuntimeError(f"program stopped at {Opcode(status.opcode).name}, expected "
                               f"{expect.name}")
        return status

    def _write_input(self, x):
        c = self.compiled
        x = np.asarray(x, np.float32)
        want = (self.batch,) + tuple(c.network.input_shape)
        if x.shape != want:
            raise ValueError(f"x must have shape {want}, not {x.shape}")
        self.backend.write_f32(c.input.base, c.pack_input(x))

    def _read_logits(self):
        c = self.compiled
        return c.unpack_logits(self.backend.read_f32(c.logits.base, c.logits.words))

    def train_step(self, x, labels):
        """One SGD step on the batch ``x`` ``[B, C, H, W]`` with integer ``labels``; returns the
        mean cross-entropy loss of the logits computed by this step's FP."""
        c = self.compiled
        labels = np.asarray(labels)
        if labels.shape != (self.batch,) or labels.min() < 0 or labels.max() >= c.num_classes:
            raise ValueError(f"labels must be {self.batch} integers in 0..{c.num_classes - 1}")
        self.backend.reset_counters()
        self._write_input(x)
        status = self._run(self._addr["train"], Opcode.HOST_SYNC)
        logits = self._read_logits()
        loss, grad = softmax_xent(logits, labels)
        self.backend.write_f32(c.logits_grad.base, c.pack_logits_grad(grad))
        self._run(status.next_addr, Opcode.END)
        self._last = self.backend.counters()
        self.last_logits = logits
        return loss

    def predict(self, x):
        """Logits ``[n, classes]`` for ``n <= batch`` images (FP program only)."""
        x = np.asarray(x, np.float32)
        n = x.shape[0]
        if not 1 <= n <= self.batch:
            raise ValueError(f"predict takes 1..{self.batch} images, not {n}")
        if n < self.batch:
            x = np.concatenate([x, np.zeros((self.batch - n,) + x.shape[1:], np.float32)])
        self._write_input(x)
        self._run(self._addr["infer"], Opcode.END)
        return self._read_logits()[:n]

    def counters(self):
        """Counters of the last training step: ``step_cycles``, ``step_macs``,
        ``step_utilisation`` (useful MACs / (Tm*Tn*cycles)) and ``per_layer``
        {(layer, phase): {cycles, macs, utilisation}} — modelled by the backend."""
        cnt = self._last
        if not cnt:
            return {"step_cycles": 0, "step_macs": 0, "step_utilisation": 0.0,
                    "per_layer": {}}
        cycles = cnt["cycles"]
        # Backends with per-layer figures (the model's analytical counters) count the useful
        # MACs themselves; for the hardware's counters, the compiler's count of the step.
        macs = cnt["macs"] if cnt.get("per_layer") else self.compiled.step_macs
        out = {"step_cycles": cycles, "step_macs": macs,
               "step_utilisation": macs / (self.cfg.pes * cycles) if cycles else 0.0,
               "per_layer": cnt["per_layer"], "source": cnt.get("source", "")}
        for key in ("pe_busy", "dma_rd_beats", "dma_wr_beats", "fetch_beats", "instructions"):
            if key in cnt:
                out[key] = cnt[key]
        return out
