"""The whole accelerator: ``Accelerator(cfg)`` — an AXI4-Lite register block, an AXI4 manager to
DRAM, an interrupt, and inside them the command processor, the loader, the tile engine and the
storer running a tile program (docs/isa.md).

::

    s_axil --> CsrBlock --start/status/counters--> [ core: reset on fault or soft reset      ]
                                                   [  CommandProcessor --> loader  ---+     ]
    irq <----------- IRQ_STATUS                    [                  --> compute unit | Tile]
                                                   [                  --> storer  ----+Engine]
    m_axi <================ Dma (read, write) <== ReadRouter (fetch, loader x3, storer x3)   ]

The core is everything but the registers: a fault (a malformed instruction, the tile engine
refusing a job, an AXI error response, a deadlocked hand-written program) or CTRL.soft_reset
first **aborts** — nothing more is dispatched, the DMA engines finish the AXI transactions in
flight (reads drained, writes completed with no byte enabled) — and then resets the core, so
the accelerator is idle and ready for the next start, with STATUS, ERROR_* and the counters
kept. The status, the counters and the interrupt live outside the core.

Usage in a larger design: ``from ef_train_hdl import Accelerator`` (docs/integration.md).
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..axi.common import DmaError
from ..axi.csr import CsrBlock
from ..axi.dma import Dma
from ..axi.signature import AXI4LiteSignature, AXI4Signature
from ..core.engine import TileEngine
from ..descriptor import ErrorCode
from ..lower import check_config
from .cmdproc import CommandProcessor, fetch_fifo_beats
from .common import ERROR_BITS, UNITS
from .compute import ComputeUnit
from .loader import LOADER_FIFOS, Loader
from .readmux import ReadRouter
from .storer import STORER_FIFOS, Storer

__all__ = ["Accelerator", "Core"]


class Core(wiring.Component):
    """The datapath and the command processor (everything the abort resets).

    Members
    -------
    m_axi : the DRAM port.
    start, program_addr, abort, dram_base : from the top level.
    running, stopped, stop_sync, stop_addr, fault, fault_code, fault_addr, fault_index,
    dma_busy, rd_error, rd_error_code, rd_error_addr, wr_error, wr_error_code, wr_error_addr :
        to the top level.
    ev_* : one-cycle events the performance counters count.
    """

    EVENTS = ("pe_busy", "instruction", "fetch_beat", "wait_load", "wait_store", "wait_fetch")

    def __init__(self, cfg):
        self.cfg = cfg
        aw = cfg.addr_width
        members = {
            "m_axi": Out(AXI4Signature(data_width=cfg.dma_data_width, addr_width=aw)),
            "start": In(1), "program_addr": In(aw), "abort": In(1), "dram_base": In(aw),
            "running": Out(1), "stopped": Out(1), "stop_sync": Out(1), "stop_addr": Out(aw),
            "fault": Out(1), "fault_code": Out(ERROR_BITS), "fault_addr": Out(aw),
            "fault_index": Out(32), "dma_busy": Out(1),
            "rd_error": Out(1), "rd_error_code": Out(3), "rd_error_addr": Out(aw),
            "wr_error": Out(1), "wr_error_code": Out(3), "wr_error_addr": Out(aw),
        }
        for ev in self.EVENTS:
            members[f"ev_{ev}"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        engine = m.submodules.engine = TileEngine(cfg)
        dma = m.submodules.dma = Dma(cfg)
        clients = {"fetch": fetch_fifo_beats(cfg)}
        clients.update({f"ld_{k}": v for k, v in LOADER_FIFOS.items()})
        clients.update({f"st_{k}": v for k, v in STORER_FIFOS.items()})
        router = m.submodules.router = ReadRouter(
            cfg, clients, sliced=[f"st_{k}" for k in STORER_FIFOS])
        cp = m.submodules.cmdproc = CommandProcessor(cfg)
        units = {"load": Loader(cfg), "compute": ComputeUnit(cfg), "store": Storer(cfg)}
        for name, unit in units.items():
            m.submodules[name] = unit
        loader, compute, storer = units["load"], units["compute"], units["store"]

        wiring.connect(m, dma.m_axi, wiring.flipped(self.m_axi))
        m.d.comb += dma.base.eq(self.dram_base)
        wiring.connect(m, router.dma_cmd, dma.rd_cmd)
        wiring.connect(m, dma.rd_data, router.dma_data)
        wiring.connect(m, cp.req_fetch, router.req_fetch)
        wiring.connect(m, router.data_fetch, cp.data_fetch)
        for s in "abc":
            wiring.connect(m, getattr(loader, f"req_{s}"), getattr(router, f"req_ld_{s}"))
            wiring.connect(m, getattr(router, f"data_ld_{s}"), getattr(loader, f"data_{s}"))
        for s in "wvg":
            wiring.connect(m, getattr(storer, f"req_{s}"), getattr(router, f"req_st_{s}"))
            wiring.connect(m, getattr(router, f"data_st_{s}"), getattr(storer, f"data_{s}"))
        wiring.connect(m, storer.wr_cmd, dma.wr_cmd)
        wiring.connect(m, storer.wr_data, dma.wr_data)
        wiring.connect(m, loader.ifm_load, engine.ifm_load)
        wiring.connect(m, loader.ofm_load, engine.ofm_load)
        wiring.connect(m, loader.w_load, engine.w_load)
        wiring.connect(m, compute.job, engine.job)
        wiring.connect(m, storer.drain_job, engine.drain_job)
        wiring.connect(m, engine.out, storer.drain_in)
        m.d.comb += [storer.wr_done.eq(dma.wr_done),
                     compute.engine_done.eq(engine.done),
                     compute.engine_error.eq(engine.error.as_value()),
                     dma.abort.eq(self.abort)]

        for name, unit in units.items():
            wiring.connect(m, getattr(cp, f"to_{name}"), unit.instr)
            m.d.comb += [getattr(cp, f"{name}_busy").eq(unit.busy),
                         getattr(cp, f"{name}_waiting").eq(unit.waiting)]
            for other in UNITS:
                if other == name:
                    continue
                m.d.comb += [
                    getattr(unit, f"avail_{other}").eq(getattr(cp, f"tok_{name}_avail_{other}")),
                    getattr(cp, f"tok_{name}_take_{other}").eq(getattr(unit, f"take_{other}")),
                    getattr(cp, f"tok_{name}_give_{other}").eq(getattr(unit, f"give_{other}")),
                ]
        m.d.comb += [
            cp.start.eq(self.start), cp.program_addr.eq(self.program_addr),
            cp.abort.eq(self.abort),
            cp.dma_busy.eq(dma.rd_busy | dma.wr_busy),
            self.dma_busy.eq(dma.rd_busy | dma.wr_busy),
            self.running.eq(cp.running), self.stopped.eq(cp.stopped),
            self.stop_sync.eq(cp.stop_sync), self.stop_addr.eq(cp.stop_addr),
            self.rd_error.eq(dma.rd_error), self.rd_error_code.eq(dma.rd_error_code),
            self.rd_error_addr.eq(dma.rd_error_addr),
            self.wr_error.eq(dma.wr_error), self.wr_error_code.eq(dma.wr_error_code),
            self.wr_error_addr.eq(dma.wr_error_addr),
        ]
        # Faults: the tile engine refusing a job or its drain refusing one (which the decoder's
        # checks should make impossible), else the decoder's or the watchdog's. The engine's
        # come from its job counters through the compute unit's in-flight queue: they are
        # registered here, one cycle late, so that the status registers' capture starts at
        # flip-flops. A refused job gives no tokens, so nothing can stop the program in that
        # cycle, and a registered fault is older than a command-processor fault beside it.
        rt_fault, rt_code = Signal(), Signal(ERROR_BITS)
        rt_index, rt_addr = Signal(32), Signal(cfg.addr_width)
        m.d.sync += rt_fault.eq(0)
        with m.If(compute.error):
            m.d.sync += [rt_fault.eq(1), rt_code.eq(compute.error_code),
                         rt_index.eq(compute.error_index),
                         rt_addr.eq(cp.program_base + (compute.error_index << 6))]
        with m.Elif(engine.drain_error.as_value() != 0):
            m.d.sync += [rt_fault.eq(1), rt_code.eq(ErrorCode.BAD_TILE),
                         rt_index.eq(0xFFFF_FFFF), rt_addr.eq(0)]
        with m.If(rt_fault):
            m.d.comb += [self.fault.eq(1), self.fault_code.eq(rt_code),
                         self.fault_addr.eq(rt_addr), self.fault_index.eq(rt_index)]
        with m.Elif(cp.fault):
            m.d.comb += [self.fault.eq(1), self.fault_code.eq(cp.fault_code),
                         self.fault_addr.eq(cp.fault_addr), self.fault_index.eq(cp.fault_index)]
        m.d.comb += [
            self.ev_pe_busy.eq(engine.issuing),
            self.ev_instruction.eq(cp.dispatched),
            self.ev_fetch_beat.eq(router.data_fetch.valid & router.data_fetch.ready),
            self.ev_wait_load.eq(compute.idle_wait_load),
            self.ev_wait_store.eq(compute.idle_wait_store),
            self.ev_wait_fetch.eq(compute.idle_empty & cp.running),
        ]
        return m


_DMA_CODES = {DmaError.SLVERR: None, DmaError.DECERR: None,
              DmaError.MISALIGNED: ErrorCode.MISALIGNED_ADDRESS,
              DmaError.ZERO_LENGTH: ErrorCode.BAD_LENGTH}


class Accelerator(wiring.Component):
    """The EF-Train accelerator for ``cfg`` (see the module docstring and docs/axi.md).

    Parameters
    ----------
    cfg : AcceleratorConfig
        A configuration the tile program supports (:func:`ef_train_hdl.lower.check_config`:
        a square array, ``floats_per_beat <= tn``); anything else is refused here with the
        reason.

    Members
    -------
    s_axil : ``In(AXI4LiteSignature(addr_width=12))``
        The registers (docs/axi.md, generated from ``axi.csr.CSR_MAP``).
    m_axi : ``Out(AXI4Signature(data_width=cfg.dma_data_width, addr_width=cfg.addr_width))``
        DRAM.
    irq : ``Out(1)``
        High while CTRL.irq_enable and an IRQ_STATUS bit are set.

    Latency and throughput: those of its units (docs/isa.md, docs/core.md); a fault's abort
    takes as long as the AXI transactions in flight need to complete, plus 2 cycles.
    """

    def __init__(self, cfg):
        check_config(cfg)
        self.cfg = cfg
        super().__init__({
            "s_axil": In(AXI4LiteSignature(addr_width=12)),
            "m_axi": Out(AXI4Signature(data_width=cfg.dma_data_width,
                                       addr_width=cfg.addr_width)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        aw = cfg.addr_width
        csr = m.submodules.csr = CsrBlock(cfg)
        core_reset = Signal()
        abort = Signal()
        core = Core(cfg)
        m.submodules.core = ResetInserter(core_reset)(core)
        wiring.connect(m, wiring.flipped(self.s_axil), csr.bus)
        wiring.connect(m, core.m_axi, wiring.flipped(self.m_axi))
        m.d.comb += self.irq.eq(csr.irq)

        # -- status ---------------------------------------------------------------------
        busy, done, error, sync = Signal(), Signal(), Signal(), Signal()
        error_code = Signal(ERROR_BITS)
        error_addr, stop_addr = Signal(64), Signal(64)
        error_index = Signal(32)
        done_event, error_event = Signal(), Signal()
        m.d.comb += [
            csr.status_busy.eq(busy), csr.status_done.eq(done), csr.status_error.eq(error),
            csr.status_sync.eq(sync), csr.status_error_code.eq(error_code),
            csr.error_addr.eq(error_addr), csr.error_desc.eq(error_index),
            csr.stop_addr.eq(stop_addr),
            csr.irq_status_done.eq(done_event), csr.irq_status_error.eq(error_event),
            core.program_addr.eq(csr.program_addr[:aw]),
            core.dram_base.eq(csr.dram_base[:aw]),
            core.abort.eq(abort),
        ]

        def record(code, addr, index):
            return [error_code.eq(code), error_addr.eq(addr), error_index.eq(index)]

        with m.FSM(name="status"):
            with m.State("IDLE"):
                with m.If(csr.ctrl_soft_reset):
                    m.next = "RESET"
                with m.Elif(csr.ctrl_start):
                    m.d.comb += core.start.eq(1)
                    m.d.sync += [busy.eq(1), done.eq(0), error.eq(0), sync.eq(0),
                                 *record(ErrorCode.OK, 0, 0)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(csr.ctrl_soft_reset):
                    m.next = "ABORT"
                with m.Elif(core.fault):
                    m.d.sync += [error.eq(1),
                                 *record(core.fault_code, core.fault_addr, core.fault_index)]
                    m.next = "ABORT"
                with m.Elif(core.rd_error | core.wr_error):
                    rd = core.rd_error
                    kind = Mux(rd, core.rd_error_code, core.wr_error_code)
                    code = Mux(kind == DmaError.MISALIGNED, ErrorCode.MISALIGNED_ADDRESS,
                               Mux(kind == DmaError.ZERO_LENGTH, ErrorCode.BAD_LENGTH,
                                   Mux(rd, ErrorCode.AXI_READ_ERROR, ErrorCode.AXI_WRITE_ERROR)))
                    m.d.sync += [error.eq(1),
                                 *record(code, Mux(rd, core.rd_error_addr, core.wr_error_addr),
                                         0xFFFF_FFFF)]
                    m.next = "ABORT"
                with m.Elif(core.stopped):
                    m.d.sync += [busy.eq(0), done.eq(1), sync.eq(core.stop_sync),
                                 stop_addr.eq(core.stop_addr)]
                    m.d.comb += done_event.eq(1)
                    m.next = "IDLE"
            with m.State("ABORT"):
                # Let the AXI transactions in flight finish, then reset the core.
                m.d.comb += abort.eq(1)
                with m.If(~core.dma_busy):
                    m.next = "RESET"
            with m.State("RESET"):
                m.d.comb += [abort.eq(1), core_reset.eq(1)]
                m.d.sync += busy.eq(0)
                m.d.comb += error_event.eq(error)
                m.next = "IDLE"

        # -- counters -------------------------------------------------------------------
        ax = self.m_axi
        rd_out = Signal(16)      # read bursts accepted, data not all back
        wr_data_due = Signal(16)  # write bursts addressed, data not all sent
        wr_resp_due = Signal(16)  # write bursts addressed, response not back
        ar, rl = ax.arvalid & ax.arready, ax.rvalid & ax.rready & ax.rlast
        aws, wl = ax.awvalid & ax.awready, ax.wvalid & ax.wready & ax.wlast
        b = ax.bvalid & ax.bready
        m.d.sync += [rd_out.eq(rd_out + ar - rl), wr_data_due.eq(wr_data_due + aws - wl),
                     wr_resp_due.eq(wr_resp_due + aws - b)]
        events = {
            "cycles": busy,
            "pe_busy": core.ev_pe_busy,
            "dma_rd_beats": ax.rvalid & ax.rready,
            "dma_wr_beats": ax.wvalid & ax.wready,
            "stall_rd_addr": ax.arvalid & ~ax.arready,
            "stall_rd_data": (rd_out != 0) & ~ax.rvalid,
            "stall_rd_out": ax.rvalid & ~ax.rready,
            "stall_wr_addr": ax.awvalid & ~ax.awready,
            "stall_wr_data": ax.wvalid & ~ax.wready,
            "stall_wr_resp": (wr_resp_due != 0) & (wr_data_due == 0) & ~ax.awvalid &
                             ~ax.wvalid & ~ax.bvalid,
            "stall_wr_in": (wr_data_due != 0) & ~ax.wvalid,
            "instructions": core.ev_instruction,
            "fetch_beats": core.ev_fetch_beat,
            "engine_wait_load": core.ev_wait_load & busy,
            "engine_wait_store": core.ev_wait_store & busy,
            "engine_wait_fetch": core.ev_wait_fetch & busy,
        }
        for name, event in events.items():
            counter = Signal(64, name=f"counter_{name}")
            with m.If(csr.ctrl_clear_counters):
                m.d.sync += counter.eq(0)
            with m.Elif(event):
                m.d.sync += counter.eq(counter + 1)
            m.d.comb += getattr(csr, name).eq(counter)
        return m
