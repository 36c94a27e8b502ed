"""The ``tiles`` backend: the accelerator's tile program run by the tile machine (numpy).

The same program the hardware runs (:mod:`ef_train_hdl.isa`, lowered by
:mod:`ef_train_hdl.lower`), executed instruction by instruction by
:class:`ef_train_hdl.model.machine.TileMachine` on a numpy DRAM image: bit for bit what the
accelerator computes, at numpy speed, with the hardware's error codes. It checks the lowering
against the layer-level ``model`` backend, and the hardware backends against both. Its
counters count instructions and MACs, not cycles (no timing is modelled here).
"""

from __future__ import annotations

import numpy as np

from ..descriptor import Opcode
from ..isa import INSTR_WORDS, Op
from ..model.machine import TileMachine
from .api import Backend, RunStatus, register_backend
from .model_backend import ModelBackend

__all__ = ["TilesBackend"]


class TilesBackend(Backend):
    """Numpy DRAM image + :class:`TileMachine` (see the module docstring)."""

    name = "tiles"
    program_kind = "tile"

    def __init__(self, cfg, dram_words):
        super().__init__(cfg, dram_words)
        self.mem = np.zeros(int(dram_words), np.uint32)
        self.machine = TileMachine(cfg, self.mem)
        self.reset_counters()

    write = ModelBackend.write
    read = ModelBackend.read

    def run(self, addr):
        before = self.machine.executed
        op, stop, code, message = self.machine.run(addr)
        self._counters["instructions"] += self.machine.executed - before
        opcode = Opcode.HOST_SYNC if op == Op.HOST_SYNC else Opcode.END
        nxt = stop + INSTR_WORDS if op == Op.HOST_SYNC else stop
        return RunStatus(opcode, stop, nxt, code, message)

    def counters(self):
        c = dict(self._counters)
        c["per_layer"] = {}
        c["source"] = "tile machine (instructions executed; no cycles)"
        return c

    def reset_counters(self):
        self._counters = {"cycles": 0, "macs": 0, "instructions": 0}


register_backend("tiles", TilesBackend)
