"""An AXI4 subordinate on-chip memory: ``AxiSram`` — a block RAM with INCR bursts.

For designs that give the accelerator on-chip memory instead of (or before) a DDR controller:
a small SoC in simulation (docs/integration.md), or an FPGA board whose external memory is not
on AXI. It serves the accelerator's manager port fully: INCR bursts of any length, reads and
writes at the same time (one read beat and one write beat a cycle, on the two ports of a
simple dual-port memory), byte strobes, read bursts accepted one after another while the
previous one streams. Addresses outside the memory are answered DECERR (reads return 0, writes
are dropped), so a wrong address in a program shows up as the accelerator's AXI error code.

Latency: the first beat of a read burst two cycles after its address handshake; then one beat
a cycle while ``rready``. A write's response one cycle after its last beat.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from .signature import AXI4Signature, Burst, Resp

__all__ = ["AxiSram"]


class AxiSram(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    data_width, addr_width : int
        As the manager's :class:`AXI4Signature`.
    depth : int
        Beats of memory (``depth * data_width / 8`` bytes), from byte address 0.
    init : sequence of int, optional
        Initial beats (``data_width``-bit integers, the word at the lowest address in the low
        bits).

    Members
    -------
    bus : ``In(AXI4Signature(data_width=..., addr_width=...))``
    memory : :class:`amaranth.lib.memory.Memory`
        The storage, ``depth`` beats.
    """

    def __init__(self, *, data_width, addr_width, depth, init=(), id_width=1):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive number of beats, not {depth!r}")
        self.data_width, self.addr_width, self.depth = data_width, addr_width, depth
        self.init = list(init)
        if len(self.init) > depth:
            raise ValueError(f"init has {len(self.init)} beats, more than depth = {depth}")
        super().__init__({"bus": In(AXI4Signature(data_width=data_width, addr_width=addr_width,
                                                  id_width=id_width))})
        #: The memory (``memory.data[i]`` is beat ``i``: simulators read and write it).
        self.memory = Memory(shape=data_width, depth=depth, init=self.init)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        nbytes = self.data_width // 8
        lg = exact_log2(nbytes)
        mem = self.memory
        m.submodules.mem = mem
        wp = mem.write_port(granularity=8)
        rp = mem.read_port()
        limit = self.depth

        # -- reads: bursts one after another, beats through a small FIFO --------------------
        r_active = Signal()
        r_addr = Signal(self.addr_width - lg)         # beat index of the next read
        r_left = Signal(9)                            # beats still to read from memory
        r_id = Signal.like(bus.arid)
        depth = 4
        beat = data.StructLayout({"data": self.data_width, "resp": 2, "last": 1,
                                  "id": len(bus.arid)})
        rq = m.submodules.rq = fifo.SyncFIFOBuffered(width=beat.size, depth=depth)
        m.d.comb += bus.arready.eq(~r_active)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [r_active.eq(1), r_addr.eq(bus.araddr >> lg), r_left.eq(bus.arlen + 1),
                         r_id.eq(bus.arid)]
        inflight = Signal()                           # a memory read whose data comes next
        issue = r_active & (rq.level + inflight < depth - 1)
        m.d.comb += [rp.addr.eq(r_addr), rp.en.eq(issue)]
        bad, last, rid = Signal(), Signal(), Signal.like(bus.arid)
        m.d.sync += inflight.eq(issue)
        with m.If(issue):
            m.d.sync += [r_addr.eq(r_addr + 1), r_left.eq(r_left - 1), bad.eq(r_addr >= limit),
                         last.eq(r_left == 1), rid.eq(r_id)]
            with m.If(r_left == 1):
                m.d.sync += r_active.eq(0)
        entry = data.View(beat, rq.w_data)
        m.d.comb += [rq.w_en.eq(inflight), entry.data.eq(Mux(bad, 0, rp.data)),
                     entry.resp.eq(Mux(bad, Resp.DECERR, Resp.OKAY)), entry.last.eq(last),
                     entry.id.eq(rid)]
        head = data.View(beat, rq.r_data)
        m.d.comb += [bus.rvalid.eq(rq.r_rdy), bus.rdata.eq(head.data), bus.rresp.eq(head.resp),
                     bus.rlast.eq(head.last), bus.rid.eq(head.id), rq.r_en.eq(bus.rready)]

        # -- writes: address first, then its beats, then the response ---------------------
        w_active = Signal()
        w_addr = Signal(self.addr_width - lg)
        w_bad = Signal()
        w_id = Signal.like(bus.awid)
        m.d.comb += bus.awready.eq(~w_active & ~bus.bvalid)
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [w_active.eq(1), w_addr.eq(bus.awaddr >> lg), w_bad.eq(0),
                         w_id.eq(bus.awid)]
        m.d.comb += bus.wready.eq(w_active)
        ok = w_addr < limit
        m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(bus.wdata),
                     wp.en.eq(Mux(bus.wvalid & bus.wready & ok, bus.wstrb, 0))]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += w_addr.eq(w_addr + 1)
            with m.If(~ok):
                m.d.sync += w_bad.eq(1)
            with m.If(bus.wlast):
                m.d.sync += [w_active.eq(0), bus.bvalid.eq(1), bus.bid.eq(w_id),
                             bus.bresp.eq(Mux(w_bad | ~ok, Resp.DECERR, Resp.OKAY))]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        return m
