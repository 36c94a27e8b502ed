"""The ``verilator`` backend: the accelerator's generated Verilog, compiled by Verilator.

:class:`ef_train_hdl.vsim.VerilatedAccelerator` (the Verilog of
:class:`ef_train_hdl.accel.Accelerator` with a C++ DRAM and AXI4-Lite host, loaded with
ctypes) behind the same :class:`~.driver.Driver` as the Amaranth simulator and the board: the
same register traffic, orders of magnitude faster than ``sim``. The first use of a
configuration builds the model (minutes; cached afterwards, see ``ef_train_hdl.vsim``).
"""

from __future__ import annotations

from .api import Backend, register_backend
from .driver import Driver, DriverCounters

__all__ = ["VerilatorBackend"]


class VerilatorBackend(DriverCounters, Backend):
    """See the module docstring.

    Parameters
    ----------
    cfg : AcceleratorConfig
    dram_words : int
    read_latency, write_latency, gap, stall, seed :
        The simulated DRAM (:class:`ef_train_hdl.vsim.VerilatedAccelerator`).
    cache_dir : path, optional
        Where builds are cached.
    log : callable, optional
        Progress messages (the build).
    """

    name = "verilator"
    counter_source = "accelerator counters (Verilator)"
    program_kind = "tile"

    def __init__(self, cfg, dram_words, *, read_latency=30, write_latency=20, gap=0.0,
                 stall=0.0, seed=0, cache_dir=None, log=None, max_cycles=2_000_000_000):
        super().__init__(cfg, dram_words)
        from ..vsim import VerilatedAccelerator
        self.sim = VerilatedAccelerator(cfg, dram_words, read_latency=read_latency,
                                        write_latency=write_latency, gap=gap, stall=stall,
                                        seed=seed, cache_dir=cache_dir, log=log)
        self.driver = Driver(self, cfg, max_cycles=max_cycles)
        self.driver.identify()

    # register access for the driver
    def read_reg(self, offset):
        return self.sim.read_reg(offset)

    def write_reg(self, offset, value):
        self.sim.write_reg(offset, value)

    def wait_irq(self, max_cycles):
        return self.sim.run_until_irq(max_cycles) is not None

    # Backend
    def write(self, addr, words):
        import numpy as np
        words = np.asarray(words)
        self.sim.write(addr, words.astype(np.uint32) if words.dtype != np.uint32 else words)

    def read(self, addr, count):
        return self.sim.read(addr, count)

    def run(self, addr):
        return self.driver.run(addr)

    @property
    def cycles(self):
        return self.sim.cycles


register_backend("verilator", VerilatorBackend)
