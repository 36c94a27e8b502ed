"""The register-level driver: one implementation of "run a program on the accelerator" for every
backend that has the real registers — the Amaranth simulator, Verilator, the board.

A backend supplies *register access* (an object with ``read_reg(offset)``,
``write_reg(offset, value)`` and ``wait_irq(max_cycles)`` or ``None`` to poll) and the DRAM;
:class:`Driver` does the rest exactly as the board's driver does: clear IRQ_STATUS, write
PROGRAM_ADDR, start with the interrupt enabled, wait for the interrupt (or poll STATUS),
read STATUS / STOP_ADDR / ERROR_*, acknowledge. The register offsets come from
``ef_train_hdl.axi.csr.CSR_MAP``, the one definition the gateware is built from; the driver
checks ID, VERSION and the configuration registers against the host's configuration first,
so a bitstream built for another configuration is refused with what differs.
"""

from __future__ import annotations

import time

from ..axi.csr import COUNTERS, CSR_ID, CSR_VERSION, CSR_MAP, config_value, field, reg
from ..descriptor import ErrorCode, Opcode
from ..isa import INSTR_WORDS
from .api import RunStatus

__all__ = ["Driver", "DriverError", "DriverCounters"]

_CTRL = reg("CTRL").offset
_START = 1 << field("CTRL", "start").lsb
_SOFT_RESET = 1 << field("CTRL", "soft_reset").lsb
_IRQ_ENABLE = 1 << field("CTRL", "irq_enable").lsb
_CLEAR = 1 << field("CTRL", "clear_counters").lsb


class DriverError(RuntimeError):
    """The accelerator does not answer as this host expects (wrong bitstream, hang)."""


class Driver:
    """See the module docstring.

    Parameters
    ----------
    regs : object
        ``read_reg(offset) -> int``, ``write_reg(offset, value)``, and optionally
        ``wait_irq(max_cycles) -> bool`` (True when the interrupt rose).
    cfg : AcceleratorConfig
        What the host compiled for; checked against the registers.
    max_cycles : int
        How long a run may take (simulated cycles, or polls of STATUS on the board).
    dram_base : int
        Byte address of the DRAM image's word 0 on the accelerator's AXI port (DRAM_BASE;
        a board's DMA buffer), 4 KiB aligned. Every address the driver and the programs use
        is relative to it.
    """

    def __init__(self, regs, cfg, *, max_cycles=100_000_000, dram_base=0):
        if dram_base < 0 or dram_base % 4096 or dram_base >> cfg.addr_width:
            raise ValueError(f"dram_base must be a 4 KiB-aligned byte address below "
                             f"2**{cfg.addr_width}, not 0x{dram_base:X}")
        self.regs = regs
        self.cfg = cfg
        self.max_cycles = max_cycles
        self.dram_base = dram_base

    def _rd(self, name):
        return self.regs.read_reg(reg(name).offset)

    def _wr(self, name, value):
        self.regs.write_reg(reg(name).offset, value)

    def _rd_wide(self, name):
        lo = self._rd(f"{name}_LO")
        return lo | self._rd(f"{name}_HI") << 32

    def identify(self):
        """Check ID, VERSION and every configuration register; raise DriverError if not."""
        got_id, got_version = self._rd("ID"), self._rd("VERSION")
        if got_id != CSR_ID:
            raise DriverError(f"ID register is 0x{got_id:08X}, not 0x{CSR_ID:08X} (\"EFTR\"): "
                              f"no accelerator at this address")
        if got_version >> 16 != CSR_VERSION >> 16:
            raise DriverError(f"register map version {got_version >> 16}.{got_version & 0xFFFF}"
                              f", this host speaks {CSR_VERSION >> 16}.x")
        wrong = []
        for r in CSR_MAP:
            f = r.fields[0]
            if f.access == "const" and r.name not in ("ID", "VERSION"):
                want, got = config_value(f, self.cfg), self._rd(r.name)
                if want != got:
                    wrong.append(f"{r.name} is {got}, the host's configuration says {want}")
        if wrong:
            raise DriverError("the bitstream was built for another configuration: "
                              + "; ".join(wrong))

    def run(self, addr):
        """Run the tile program at word address ``addr``; a :class:`RunStatus`."""
        byte_addr = int(addr) * 4
        # Written with every run: a soft reset leaves it, a reload of the bitstream does not.
        self._wr("DRAM_BASE_LO", self.dram_base & 0xFFFF_FFFF)
        self._wr("DRAM_BASE_HI", self.dram_base >> 32)
        self._wr("IRQ_STATUS", 0x3)
        self._wr("PROGRAM_ADDR_LO", byte_addr & 0xFFFF_FFFF)
        self._wr("PROGRAM_ADDR_HI", byte_addr >> 32)
        self.regs.write_reg(_CTRL, _IRQ_ENABLE | _START)
        wait = getattr(self.regs, "wait_irq", None)
        if wait is not None:
            if not wait(self.max_cycles):
                raise DriverError(f"no interrupt within {self.max_cycles} cycles; STATUS is "
                                  f"0x{self._rd('STATUS'):08X}")
            status = self._rd("STATUS")
        else:
            deadline = time.monotonic() + self.max_cycles * 1e-6
            while True:
                status = self._rd("STATUS")
                if not status & 1:
                    break
                if time.monotonic() > deadline:
                    raise DriverError("the accelerator stayed busy; STATUS 0x%08X" % status)
        stop = self._rd_wide("STOP_ADDR")
        err_addr = self._rd_wide("ERROR_ADDR")
        err_index = self._rd("ERROR_DESC")
        self._wr("IRQ_STATUS", 0x3)
        code = ErrorCode((status >> 8) & 0xFF)
        if status & 0b100:
            where = (f"instruction {err_index} at byte 0x{err_addr:X}"
                     if err_index != 0xFFFF_FFFF else f"the AXI beat at byte 0x{err_addr:X}")
            return RunStatus(Opcode.END, err_addr // 4, err_addr // 4, code,
                             f"{code.name} at {where}")
        sync = bool(status & 0b1000)
        return RunStatus(Opcode.HOST_SYNC if sync else Opcode.END, stop // 4,
                         stop // 4 + (INSTR_WORDS if sync else 0))

    def counters(self):
        """Every performance counter, by its lower-case register name."""
        return {name.lower(): self._rd_wide(name) for name, _ in COUNTERS}

    def reset_counters(self):
        self.regs.write_reg(_CTRL, _IRQ_ENABLE | _CLEAR)

    def soft_reset(self):
        self.regs.write_reg(_CTRL, _IRQ_ENABLE | _SOFT_RESET)


class DriverCounters:
    """The counter methods of a backend that runs a :class:`Driver` (``self.driver``) on the
    accelerator's registers: the ``sim``, ``verilator`` and ``board`` backends. Put it before
    :class:`~.api.Backend` in the bases; ``counter_source`` names where the counts come from."""

    counter_source = "accelerator counters"

    def read_counters(self):
        """Every counter register, by its lower-case name."""
        return self.driver.counters()

    def counters(self):
        c = self.read_counters()
        c["macs"] = c["pe_busy"] * self.cfg.pes
        c["per_layer"] = {}
        c["source"] = self.counter_source
        return c

    def reset_counters(self):
        self.driver.reset_counters()
