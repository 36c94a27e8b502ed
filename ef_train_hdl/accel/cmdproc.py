"""The command processor: fetches the tile program, checks each instruction, hands it to its
unit, keeps the tokens, and stops at END / HOST_SYNC or at the first fault.

Data flow::

    DRAM --read router--> fetch FIFO --(beats -> 16 words)--> decoder (isa.check in gateware)
        --> dispatch: LOAD -> loader queue, COMPUTE -> compute queue, STORE -> storer queue
                      END / HOST_SYNC -> barrier: wait until every queue and unit is idle and
                      every write acknowledged, then stop

- **Fetch.** From ``start`` at ``program_addr`` the fetcher requests blocks of
  :data:`FETCH_BLOCK` instructions while the fetch FIFO (:data:`FETCH_INSTRS` instructions)
  has room, so it reads at most that many instructions past the one being decoded: the
  compiler reserves them after every program (``compiler.FETCH_SLACK``).
- **Tokens.** Six counters, one per ordered pair of units (docs/isa.md); each unit sees the
  two counters of the tokens given to it, takes from them and gives to the others.
- **Faults.** A decoder error stops dispatching and is reported with the instruction's index
  and byte address (``fault``); so does a unit's runtime error (the tile engine refusing a
  job) through the top level. A program whose units all wait for tokens while nothing moves
  for :data:`WATCHDOG_CYCLES` cycles is reported as ``BAD_DEPENDENCY``.

Latency: an instruction reaches its unit about ``DECODE_LATENCY + 3`` cycles after its last
word arrives; one instruction is dispatched every ``DECODE_LATENCY + 1`` cycles at most.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .. import isa
from ..axi.common import command_layout
from ..axi.dma_read import read_beat_layout
from ..descriptor import ErrorCode
from ..isa import Op
from .common import ERROR_BITS, TOKEN_BITS, UNITS, dispatch_layout
from .decoder import Decoder
from .gearbox import Widen

__all__ = ["CommandProcessor", "FETCH_INSTRS", "FETCH_BLOCK", "WATCHDOG_CYCLES",
           "QUEUE_DEPTH", "fetch_fifo_beats"]

#: Instructions the fetch FIFO holds (the fetcher reads at most this many ahead).
FETCH_INSTRS = 8
#: Instructions per fetch request.
FETCH_BLOCK = 4
#: Depth of each unit's instruction queue.
QUEUE_DEPTH = 4
#: Cycles of no progress with units waiting for tokens before BAD_DEPENDENCY.
WATCHDOG_CYCLES = 1024


def fetch_fifo_beats(cfg):
    return FETCH_INSTRS * isa.INSTR_WORDS // cfg.floats_per_beat


class CommandProcessor(wiring.Component):
    """See the module docstring.

    Members
    -------
    start : ``In(1)``
        Pulse: run the program at ``program_addr`` (byte address, 64-byte aligned).
    program_addr : ``In(cfg.addr_width)``
    req_fetch / data_fetch : read-router client ports.
    to_load, to_compute, to_store : ``Out(stream.Signature(dispatch_layout()))``
        The units' instruction queues (their FIFOs are here).
    <unit>_busy, <unit>_waiting : ``In(1)``
        The units' status (``busy``: an instruction inside the unit; ``waiting``: it waits
        for tokens).
    dma_busy : ``In(1)``
        A DMA engine has transactions in flight.
    tok_* : token ports of the three units (``tok_<unit>_avail_<from>`` out,
        ``tok_<unit>_take_<from>`` and ``tok_<unit>_give_<to>`` in).
    running : ``Out(1)``
    stopped : ``Out(1)``
        Pulse: the program reached END (``stop_sync`` low) or HOST_SYNC (high) and everything
        before it is done; ``stop_addr`` is that instruction's byte address.
    fault : ``Out(1)``
        Pulse: a decoder error or the watchdog; ``fault_code``, ``fault_addr`` (the
        instruction's byte address), ``fault_index``.
    dispatched : ``Out(1)``
        Pulse: an instruction went to a unit (the INSTRUCTIONS counter).
    program_base : ``Out(cfg.addr_width)``
        The byte address the program was started at (instruction ``i`` is at
        ``program_base + 64 * i``).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        aw = cfg.addr_width
        members = {
            "start": In(1),
            "program_addr": In(aw),
            "abort": In(1),
            "req_fetch": Out(stream.Signature(command_layout(cfg))),
            "data_fetch": In(stream.Signature(read_beat_layout(cfg))),
            "dma_busy": In(1),
            "running": Out(1),
            "stopped": Out(1),
            "stop_sync": Out(1),
            "stop_addr": Out(aw),
            "fault": Out(1),
            "fault_code": Out(ERROR_BITS),
            "fault_addr": Out(aw),
            "fault_index": Out(32),
            "dispatched": Out(1),
            "program_base": Out(aw),
        }
        for unit in UNITS:
            members[f"to_{unit}"] = Out(stream.Signature(dispatch_layout()))
            members[f"{unit}_busy"] = In(1)
            members[f"{unit}_waiting"] = In(1)
            for other in UNITS:
                if other != unit:
                    members[f"tok_{unit}_avail_{other}"] = Out(TOKEN_BITS)
                    members[f"tok_{unit}_take_{other}"] = In(4)
                    members[f"tok_{unit}_give_{other}"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        f = cfg.floats_per_beat
        iw = isa.INSTR_WORDS
        aw = cfg.addr_width
        running = Signal()
        m.d.comb += self.running.eq(running)

        # -- fetch ----------------------------------------------------------------------
        ptr = Signal(aw - 2)                 # word address of the next block to request
        outstanding = Signal(16)             # beats requested and not yet taken
        block_words = FETCH_BLOCK * iw
        fetching = Signal()                  # the dispatcher still wants instructions
        m.d.comb += [self.req_fetch.valid.eq(running & fetching),
                     self.req_fetch.payload.addr.eq(ptr),
                     self.req_fetch.payload.length.eq(block_words)]
        req_done = self.req_fetch.valid & self.req_fetch.ready
        beat_in = self.data_fetch.valid & self.data_fetch.ready
        m.d.sync += outstanding.eq(outstanding + Mux(req_done, block_words // f, 0) - beat_in)
        with m.If(req_done):
            m.d.sync += ptr.eq(ptr + block_words)

        # Beats -> 16-word instructions. ``flush`` drops the instructions fetched past a stop;
        # requests are whole instructions, so once they are all in, the assembler is empty.
        flush = Signal()
        asm = m.submodules.assemble = Widen(f, iw // f)
        m.d.comb += [asm.i.valid.eq(self.data_fetch.valid),
                     asm.i.payload.eq(self.data_fetch.payload.data),
                     self.data_fetch.ready.eq(asm.i.ready)]
        index = Signal(32)
        dec = m.submodules.decoder = Decoder(cfg)
        m.d.comb += [dec.i.valid.eq(asm.o.valid & running & fetching),
                     dec.i.payload.bits.eq(asm.o.payload), dec.i.payload.index.eq(index),
                     asm.o.ready.eq((dec.i.ready & running & fetching) | flush)]
        with m.If(dec.i.valid & dec.i.ready):
            m.d.sync += index.eq(index + 1)

        # -- dispatch ---------------------------------------------------------------------
        queues = {}
        for unit in UNITS:
            q = fifo.SyncFIFOBuffered(width=dispatch_layout().size, depth=QUEUE_DEPTH)
            m.submodules[f"queue_{unit}"] = q
            queues[unit] = q
            port = getattr(self, f"to_{unit}")
            m.d.comb += [port.payload.eq(q.r_data), port.valid.eq(q.r_rdy),
                         q.r_en.eq(port.ready)]
        base = Signal(aw)                    # byte address of instruction 0
        out = dec.o.payload
        op = data.View(isa.amaranth_layout(Op.END), out.instr.bits).opcode
        here = Signal(aw)
        m.d.comb += [here.eq(base + (out.instr.index << exact_log2(isa.INSTR_BYTES))),
                     self.program_base.eq(base)]
        target = {"load": Op.LOAD, "compute": Op.COMPUTE, "store": Op.STORE}

        all_idle = Signal()
        m.d.comb += all_idle.eq(
            Cat(*[~queues[u].r_rdy & ~getattr(self, f"{u}_busy") for u in UNITS]).all() &
            ~self.dma_busy)
        stop_op = Signal(4)
        with m.FSM(name="dispatch"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [ptr.eq(self.program_addr >> 2), base.eq(self.program_addr),
                                 index.eq(0)]
                    # An instruction-aligned start, or MISALIGNED_ADDRESS.
                    with m.If(self.program_addr[:exact_log2(isa.INSTR_BYTES)] != 0):
                        m.next = "BAD_START"
                    with m.Else():
                        m.d.sync += running.eq(1)
                        m.next = "RUN"
            with m.State("BAD_START"):
                m.d.comb += [self.fault.eq(1), self.fault_code.eq(ErrorCode.MISALIGNED_ADDRESS),
                             self.fault_addr.eq(base), self.fault_index.eq(0)]
                m.next = "HALT"
            with m.State("RUN"):
                m.d.comb += fetching.eq(1)
                with m.If(dec.o.valid):
                    with m.If(out.code != ErrorCode.OK):
                        m.d.comb += [self.fault.eq(1), self.fault_code.eq(out.code),
                                     self.fault_addr.eq(here),
                                     self.fault_index.eq(out.instr.index),
                                     dec.o.ready.eq(1)]
                        m.next = "HALT"
                    with m.Elif((op == Op.END) | (op == Op.HOST_SYNC)):
                        m.d.comb += dec.o.ready.eq(1)
                        m.d.sync += [stop_op.eq(op), self.stop_addr.eq(here)]
                        m.next = "BARRIER"
                    with m.Else():
                        for unit, code in target.items():
                            with m.If(op == code):
                                m.d.comb += [queues[unit].w_en.eq(1),
                                             queues[unit].w_data.eq(out.instr),
                                             dec.o.ready.eq(queues[unit].w_rdy),
                                             self.dispatched.eq(queues[unit].w_rdy)]
            with m.State("BARRIER"):
                # Everything before the END / HOST_SYNC done; the prefetched words dropped.
                m.d.comb += flush.eq(1)
                with m.If(all_idle & (outstanding == 0) & ~asm.o.valid & ~dec.o.valid):
                    m.d.comb += [self.stopped.eq(1), self.stop_sync.eq(stop_op == Op.HOST_SYNC)]
                    m.d.sync += running.eq(0)
                    m.next = "IDLE"
            with m.State("HALT"):
                # After a fault: nothing more is dispatched; the top level aborts and resets.
                m.d.comb += flush.eq(1)
        with m.If(self.abort):
            m.d.sync += running.eq(0)

        # -- tokens ----------------------------------------------------------------------
        for src in UNITS:
            for dst in UNITS:
                if src == dst:
                    continue
                count = Signal(TOKEN_BITS, name=f"tokens_{src}_to_{dst}")
                inc = getattr(self, f"tok_{src}_give_{dst}")
                dec_ = getattr(self, f"tok_{dst}_take_{src}")
                m.d.sync += count.eq(count + inc - dec_)
                with m.If(self.start):
                    m.d.sync += count.eq(0)
                m.d.comb += getattr(self, f"tok_{dst}_avail_{src}").eq(count)

        # -- watchdog: units waiting for tokens, nothing moving ------------------------------
        stuck = Signal()
        waiting_any = Cat(*[getattr(self, f"{u}_waiting") for u in UNITS]).any()
        quiet = Cat(*[getattr(self, f"{u}_waiting") | ~getattr(self, f"{u}_busy")
                      for u in UNITS]).all()
        m.d.comb += stuck.eq(running & waiting_any & quiet & ~self.dma_busy &
                             ~self.dispatched & ~beat_in)
        quiet_for = Signal(range(WATCHDOG_CYCLES + 1))
        with m.If(stuck):
            m.d.sync += quiet_for.eq(quiet_for + 1)
        with m.Else():
            m.d.sync += quiet_for.eq(0)
        with m.If(quiet_for == WATCHDOG_CYCLES):
            m.d.comb += [self.fault.eq(1), self.fault_code.eq(ErrorCode.BAD_DEPENDENCY),
                         self.fault_addr.eq(here), self.fault_index.eq(index)]
            m.d.sync += quiet_for.eq(0)
        return m
