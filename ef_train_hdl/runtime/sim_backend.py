"""The ``sim`` backend: the whole accelerator in the Amaranth simulator.

:class:`ef_train_hdl.accel.Accelerator` runs cycle by cycle in ``amaranth.sim``; its DRAM is a
numpy array served by :class:`ef_train_hdl.axi.dram_model.AxiRamModel` (a stated read
latency per burst and bandwidth, optional random stalls on every AXI channel), and the host
is an AXI4-Lite manager (:mod:`ef_train_hdl.axi.lite_master`) that writes PROGRAM_ADDR,
starts, waits for the interrupt and reads STATUS — what a driver on the board does. The
simulation persists between calls: :meth:`run` advances it until the accelerator stops.

The DRAM array is written and read directly between runs (the accelerator is idle then), as
a host writes its DMA buffer. Counters are the accelerator's own registers.
"""

from __future__ import annotations

import random
from collections import deque

import numpy as np

from ..axi.csr import reg
from .api import Backend, register_backend
from .driver import DriverCounters
from .model_backend import ModelBackend

__all__ = ["SimBackend", "DramTiming"]

PERIOD = 1e-8


class DramTiming:
    """The simulated DRAM: ``read_latency`` cycles from a read burst's address to its first
    beat (an int, or a (lo, hi) range drawn per burst), ``write_latency`` likewise for the
    response, ``gap`` the probability of an idle cycle before each read beat (bandwidth
    ``1 - gap`` beats a cycle), ``stall`` the probability that a ready is low on the address
    and write-data channels, ``errors`` byte ranges answered SLVERR / DECERR."""

    def __init__(self, read_latency=30, write_latency=20, gap=0.0, stall=0.0, seed=0,
                 errors=()):
        self.read_latency, self.write_latency = read_latency, write_latency
        self.gap, self.stall, self.seed = gap, stall, seed
        #: ``(lo, hi, Resp)`` byte ranges answered with an error response (fault tests).
        self.errors = tuple(errors)

    def describe(self, cfg):
        bw = (1 - self.gap) * cfg.bytes_per_beat
        return (f"read latency {self.read_latency} cycles, write response {self.write_latency}, "
                f"{bw:g} bytes/cycle, stalls {self.stall:g}")


class SimBackend(DriverCounters, Backend):
    """See the module docstring.

    Parameters
    ----------
    cfg : AcceleratorConfig
    dram_words : int
    dram : DramTiming, optional
    vcd : str, optional
        Write a waveform of everything simulated to this file (large).
    max_cycles : int
        A run that takes longer fails with an error (a hang is a failure, not a hang).
    dram_base : int
        Byte address of the image on the AXI port (DRAM_BASE; 4 KiB aligned): the simulated
        memory holds that many bytes below it, which a correct program never touches.
    """

    name = "sim"
    counter_source = "accelerator counters (Amaranth simulator)"
    program_kind = "tile"

    def __init__(self, cfg, dram_words, *, dram=None, vcd=None, max_cycles=50_000_000,
                 dram_base=0):
        super().__init__(cfg, dram_words)
        from amaranth.sim import Simulator
        from ..accel import Accelerator
        from ..axi.dram_model import AxiRamModel
        # The AXI memory holds ``dram_base`` bytes below the image (as a board's DDR holds
        # everything below its DMA buffer); ``mem`` is the image, a view from word 0.
        self.dram_base = int(dram_base)
        self.axi_mem = np.zeros(self.dram_base // 4 + int(dram_words), np.uint32)
        self.mem = self.axi_mem[self.dram_base // 4:]
        self.dram = dram or DramTiming()
        self.max_cycles = max_cycles
        self.dut = Accelerator(cfg)
        d = self.dram
        self.ram = AxiRamModel(self.dut.m_axi, self.axi_mem, max_burst_beats=cfg.max_burst_beats,
                               read_latency=d.read_latency, write_latency=d.write_latency,
                               ar_stall=d.stall, aw_stall=d.stall, w_stall=d.stall,
                               r_gap=d.gap, b_gap=d.stall, errors=d.errors, rng=d.seed)
        self._mailbox = deque()
        self._done = {}
        self._seq = 0
        self.cycles = 0
        self._time = 0.0
        self.sim = Simulator(self.dut)
        self.sim.add_clock(PERIOD)
        self.sim.add_testbench(self.ram.run, background=True)
        self.sim.add_testbench(self._host, background=True)
        self._vcd = None
        if vcd:
            self._vcd = self.sim.write_vcd(str(vcd))
            self._vcd.__enter__()
        from .driver import Driver
        self.driver = Driver(self, cfg, max_cycles=max_cycles, dram_base=self.dram_base)
        self.driver.identify()

    # -- the host, inside the simulation ------------------------------------------------------

    async def _host(self, ctx):
        rng = random.Random(1)
        while True:
            if not self._mailbox:
                await ctx.tick()
                self.cycles += 1
                continue
            seq, job = self._mailbox.popleft()
            self._done[seq] = await job(ctx, rng)

    def _call(self, job, limit=None):
        """Run the async ``job(ctx, rng)`` in the simulation; returns its result."""
        seq = self._seq
        self._seq += 1
        self._mailbox.append((seq, job))
        limit = limit or self.max_cycles
        start = self.cycles
        # Short steps first (a register access takes a few cycles), longer ones for a run, so
        # that little is simulated past the job's end.
        step = 8
        while seq not in self._done:
            self._time += step * PERIOD
            self.sim.run_until(self._time)
            step = min(2 * step, 4096)
            if self.cycles - start > limit:
                raise TimeoutError(f"the simulated accelerator did not stop within {limit} "
                                   f"cycles")
        return self._done.pop(seq)

    async def _write_reg(self, ctx, rng, name, value):
        """For testbench jobs run with :meth:`_call`: write register ``name``."""
        from ..axi.lite_master import axil_write
        await axil_write(ctx, self.dut.s_axil, reg(name).offset, value, rng=rng, max_delay=0)

    async def _read_reg(self, ctx, rng, name):
        from ..axi.lite_master import axil_read
        data, _ = await axil_read(ctx, self.dut.s_axil, reg(name).offset, rng=rng,
                                  max_delay=0)
        return int(data)

    # -- register access for the driver -------------------------------------------------------

    def read_reg(self, offset):
        from ..axi.lite_master import axil_read

        async def job(ctx, rng):
            data, resp = await axil_read(ctx, self.dut.s_axil, offset, rng=rng, max_delay=0)
            return int(data)
        return self._call(job)

    def write_reg(self, offset, value):
        from ..axi.lite_master import axil_write

        async def job(ctx, rng):
            await axil_write(ctx, self.dut.s_axil, offset, value, rng=rng, max_delay=0)
        self._call(job)

    def wait_irq(self, max_cycles):
        async def job(ctx, rng):
            for _ in range(max_cycles):
                if ctx.get(self.dut.irq):
                    return True
                await ctx.tick()
                self.cycles += 1
            return False
        return self._call(job, limit=max_cycles + 16)

    # -- Backend ------------------------------------------------------------------------------

    write = ModelBackend.write
    read = ModelBackend.read

    def run(self, addr):
        return self.driver.run(addr)

    def soft_reset(self):
        self.driver.soft_reset()

    def close(self):
        if self._vcd is not None:
            self._vcd.__exit__(None, None, None)
            self._vcd = None


register_backend("sim", SimBackend)
