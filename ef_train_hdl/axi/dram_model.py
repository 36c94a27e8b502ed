"""An AXI4 subordinate RAM for the Amaranth simulator, backed by a numpy array.

It stands for the DRAM behind the accelerator's AXI4 manager port in the simulator tests of
the DMA engines and, later, in the ``sim`` runtime backend. It runs as one async testbench
(``sim.add_testbench(ram.run, background=True)``) that drives the subordinate side of an
:class:`~ef_train_hdl.axi.signature.AXI4Signature` port, every cycle:

- accepts addresses with random ``arready`` / ``awready`` stalls and data with random
  ``wready`` stalls,
- answers each read burst after a random latency (``read_latency``: cycles from the address
  handshake to the first beat may be offered), with random idle cycles between beats
  (``r_gap``: the read bandwidth is ``1 - r_gap`` beats per cycle) and answers writes after
  ``write_latency`` with random ``bvalid`` gaps,
- injects SLVERR/DECERR responses for beats touching given byte ranges (``errors``), and
  answers DECERR outside the memory,
- checks the manager's protocol and raises :class:`AxiProtocolError` (an AssertionError, so
  the simulation and the test fail loudly) on: a burst crossing 4 KiB, more than
  ``max_burst_beats`` beats, a burst type other than INCR, a size other than the bus width, an
  address not aligned to the beat, ``wlast`` anywhere but the last beat of its burst, and a
  manager that drops ``valid`` or changes the payload before the handshake.

Data lanes are little-endian: the word at the lowest address is bits 31:0 of a beat. W beats
may arrive before their AW (AXI allows it); they wait for it.

Statistics for tests: ``reads`` / ``writes`` (lists of ``(byte address, beats)`` per burst),
``max_reads_in_flight`` (most read bursts accepted and not completed at once),
``read_beats``, ``write_beats``, ``cycles``.
"""

import random
from collections import deque

import numpy as np

from .signature import BOUNDARY_4K, Burst, Resp

__all__ = ["AxiRamModel", "AxiProtocolError"]


class AxiProtocolError(AssertionError):
    """The manager broke an AXI4 rule (or one of the accelerator's own burst rules)."""


def _latency(rng, latency):
    if isinstance(latency, int):
        return latency
    lo, hi = latency
    return rng.randint(lo, hi)


class AxiRamModel:
    """AXI4 subordinate memory model (see the module docstring).

    Parameters
    ----------
    bus : the AXI4 manager interface of the design (``dut.axi``)
    mem : numpy.ndarray of uint32
        The memory, one 32-bit word per element, byte address 0 at ``mem[0]``. Writes go
        into this array (it is not copied).
    max_burst_beats : int
        Longest burst the manager may issue (the accelerator's ``config.max_burst_beats``).
    read_latency, write_latency : int or (int, int)
        Cycles from address (write: last data) handshake to the first response offered;
        a pair draws uniformly per burst.
    ar_stall, aw_stall, w_stall : float
        Probability that the ready of the channel is low in a cycle.
    r_gap, b_gap : float
        Probability of an idle cycle before each R beat / B response.
    errors : iterable of (lo, hi, Resp)
        Byte ranges ``[lo, hi)``; a beat touching one is answered with that response (and a
        write burst touching one is not written).
    rng : random.Random or int
    """

    def __init__(self, bus, mem, *, max_burst_beats=256, read_latency=(1, 8),
                 write_latency=(1, 8), ar_stall=0.3, aw_stall=0.3, w_stall=0.3, r_gap=0.3,
                 b_gap=0.3, errors=(), rng=0):
        if not isinstance(mem, np.ndarray) or mem.dtype != np.uint32 or mem.ndim != 1:
            raise TypeError(f"mem must be a 1-D numpy uint32 array, not {type(mem).__name__} "
                            f"{getattr(mem, 'dtype', '')}")
        for name, p in (("ar_stall", ar_stall), ("aw_stall", aw_stall),
                        ("w_stall", w_stall), ("r_gap", r_gap), ("b_gap", b_gap)):
            if not 0 <= p < 1:
                raise ValueError(f"{name} must be a probability in [0, 1), not {p!r}")
        self.bus = bus
        self.mem = mem
        self.sig = bus.signature
        self.data_width = self.sig.data_width
        self.bytes_per_beat = self.data_width // 8
        self.words_per_beat = self.data_width // 32
        self.max_burst_beats = max_burst_beats
        self.read_latency = read_latency
        self.write_latency = write_latency
        self.ar_stall, self.aw_stall, self.w_stall = ar_stall, aw_stall, w_stall
        self.r_gap, self.b_gap = r_gap, b_gap
        self.errors = [(int(lo), int(hi), Resp(resp)) for lo, hi, resp in errors]
        self.rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        self.reads = []
        self.writes = []
        self.max_reads_in_flight = 0
        self.read_beats = 0
        self.write_beats = 0
        self.cycles = 0

    # -- memory --------------------------------------------------------------------------------

    def _resp(self, byte_addr):
        for lo, hi, resp in self.errors:
            if byte_addr < hi and byte_addr + self.bytes_per_beat > lo:
                return resp
        if byte_addr + self.bytes_per_beat > self.mem.size * 4:
            return Resp.DECERR
        return Resp.OKAY

    def _read_beat(self, byte_addr):
        resp = self._resp(byte_addr)
        if resp != Resp.OKAY:
            return 0, resp
        w = byte_addr // 4
        value = 0
        for i, word in enumerate(self.mem[w:w + self.words_per_beat]):
            value |= int(word) << (32 * i)
        return value, resp

    def _write_burst(self, addr, beats):
        resps = [self._resp(addr + i * self.bytes_per_beat) for i in range(len(beats))]
        bad = [r for r in resps if r != Resp.OKAY]
        if bad:
            return max(bad)
        view = self.mem.view(np.uint8)
        for i, (data, strb, _) in enumerate(beats):
            base = addr + i * self.bytes_per_beat
            for b in range(self.bytes_per_beat):
                if strb >> b & 1:
                    view[base + b] = (data >> (8 * b)) & 0xFF
        return Resp.OKAY

    # -- protocol checks -----------------------------------------------------------------------

    def _check_burst(self, kind, addr, length, size, burst):
        beats = length + 1
        where = f"{kind} burst at 0x{addr:x} of {beats} beats"
        if burst != Burst.INCR:
            raise AxiProtocolError(f"{where}: burst type {burst}, expected INCR (1)")
        if (1 << size) != self.bytes_per_beat:
            raise AxiProtocolError(f"{where}: size {size} ({1 << size} bytes) is not the bus "
                                   f"width ({self.bytes_per_beat} bytes)")
        if addr % self.bytes_per_beat:
            raise AxiProtocolError(f"{where}: address not aligned to the "
                                   f"{self.bytes_per_beat}-byte beat")
        if beats > self.max_burst_beats:
            raise AxiProtocolError(f"{where}: longer than max_burst_beats = "
                                   f"{self.max_burst_beats}")
        if addr % BOUNDARY_4K + beats * self.bytes_per_beat > BOUNDARY_4K:
            raise AxiProtocolError(f"{where}: crosses a 4 KiB boundary")

    @staticmethod
    def _check_stable(name, pending, valid, payload):
        """A valid that was not accepted must stay high with the same payload."""
        if pending is not None:
            if not valid:
                raise AxiProtocolError(f"{name}valid dropped before the handshake")
            if payload != pending:
                raise AxiProtocolError(f"{name} payload changed before the handshake: "
                                       f"{pending} -> {payload}")

    # -- the testbench -------------------------------------------------------------------------

    async def run(self, ctx):
        bus, rng = self.bus, self.rng
        has_read, has_write = self.sig.read, self.sig.write
        ar_pending = aw_pending = w_pending = None
        read_q = deque()      # [addr, beats, id, ready_at, next_beat]
        r_offer = None        # (data, resp, last, id) held on R until rready
        aw_q = deque()        # [addr, beats, id] waiting for their W beats
        w_beats = deque()     # (data, strb, last)
        b_q = deque()         # [ready_at, resp, id]
        b_offer = None
        in_flight = 0

        ar_in = [bus.arvalid, bus.araddr, bus.arlen, bus.arsize, bus.arburst, bus.arid,
                 bus.rready] if has_read else []
        aw_in = [bus.awvalid, bus.awaddr, bus.awlen, bus.awsize, bus.awburst, bus.awid,
                 bus.wvalid, bus.wdata, bus.wstrb, bus.wlast, bus.bready] if has_write else []
        while True:
            cycle = self.cycles
            # -- drive the subordinate's outputs for this cycle ------------------------
            if has_read:
                arready = rng.random() >= self.ar_stall
                ctx.set(bus.arready, arready)
                if r_offer is None and read_q and read_q[0][3] <= cycle and \
                        not (self.r_gap and rng.random() < self.r_gap):
                    burst = read_q[0]
                    addr, beats, rid, _, index = burst
                    value, resp = self._read_beat(addr + index * self.bytes_per_beat)
                    r_offer = (value, resp, index == beats - 1, rid)
                    burst[4] += 1
                if r_offer is not None:
                    value, resp, last, rid = r_offer
                    ctx.set(bus.rdata, value)
                    ctx.set(bus.rresp, resp)
                    ctx.set(bus.rlast, last)
                    ctx.set(bus.rid, rid)
                ctx.set(bus.rvalid, r_offer is not None)
            if has_write:
                awready = rng.random() >= self.aw_stall
                wready = rng.random() >= self.w_stall
                ctx.set(bus.awready, awready)
                ctx.set(bus.wready, wready)
                if b_offer is None and b_q and b_q[0][0] <= cycle and \
                        not (self.b_gap and rng.random() < self.b_gap):
                    b_offer = b_q.popleft()
                if b_offer is not None:
                    ctx.set(bus.bresp, b_offer[1])
                    ctx.set(bus.bid, b_offer[2])
                ctx.set(bus.bvalid, b_offer is not None)

            sampled = await ctx.tick().sample(*ar_in, *aw_in)
            values = list(sampled[2:])
            self.cycles += 1

            # -- read channels ------------------------------------------------------------
            if has_read:
                arvalid, araddr, arlen, arsize, arburst, arid, rready = values[:7]
                values = values[7:]
                ar = (araddr, arlen, arsize, arburst, arid)
                self._check_stable("ar", ar_pending, arvalid, ar)
                if arvalid and arready:
                    self._check_burst("read", araddr, arlen, arsize, arburst)
                    read_q.append([araddr, arlen + 1, arid,
                                   cycle + _latency(rng, self.read_latency), 0])
                    self.reads.append((araddr, arlen + 1))
                    in_flight += 1
                    self.max_reads_in_flight = max(self.max_reads_in_flight, in_flight)
                    ar_pending = None
                else:
                    ar_pending = ar if arvalid else None
                if r_offer is not None and rready:
                    self.read_beats += 1
                    if r_offer[2]:
                        read_q.popleft()
                        in_flight -= 1
                    r_offer = None

            # -- write channels -----------------------------------------------------------
            if has_write:
                (awvalid, awaddr, awlen, awsize, awburst, awid, wvalid, wdata, wstrb, wlast,
                 bready) = values[:11]
                aw = (awaddr, awlen, awsize, awburst, awid)
                self._check_stable("aw", aw_pending, awvalid, aw)
                if awvalid and awready:
                    self._check_burst("write", awaddr, awlen, awsize, awburst)
                    aw_q.append([awaddr, awlen + 1, awid])
                    self.writes.append((awaddr, awlen + 1))
                    aw_pending = None
                else:
                    aw_pending = aw if awvalid else None
                w = (wdata, wstrb, wlast)
                self._check_stable("w", w_pending, wvalid, w)
                if wvalid and wready:
                    w_beats.append(w)
                    self.write_beats += 1
                    w_pending = None
                else:
                    w_pending = w if wvalid else None
                if b_offer is not None and bready:
                    b_offer = None
                while aw_q:
                    addr, beats, wid = aw_q[0]
                    for i, (_, _, last) in enumerate(w_beats):
                        if i >= beats:
                            break
                        if last and i != beats - 1:
                            raise AxiProtocolError(
                                f"write burst at 0x{addr:x} of {beats} beats: wlast on beat "
                                f"{i + 1}")
                    if len(w_beats) < beats:
                        break
                    if not w_beats[beats - 1][2]:
                        raise AxiProtocolError(f"write burst at 0x{addr:x} of {beats} beats: "
                                               f"no wlast on its last beat")
                    burst = [w_beats.popleft() for _ in range(beats)]
                    aw_q.popleft()
                    resp = self._write_burst(addr, burst)
                    b_q.append([self.cycles + _latency(rng, self.write_latency), resp, wid])
                if not aw_q and any(last for _, _, last in w_beats) and \
                        len(w_beats) > 4 * self.max_burst_beats:
                    raise AxiProtocolError("W beats without any write address")
