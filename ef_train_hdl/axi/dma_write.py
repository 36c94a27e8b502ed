"""DMA write engine: commands (word address, length in words) + a beat stream -> AXI4 writes.

It sits between the store path of the output buffers (after the post-ops and the un-reshape)
and the DRAM: one command per contiguous run of a tile store (docs/layout.md), its words on
``data`` in address order, and ``busy`` low once every write response is back, so that the
command processor knows the results are in memory before it starts a layer that reads them.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .common import DmaError, burst_beats, check_engine_params, command_layout, lane_bits
from .signature import AXI4Signature, Burst

__all__ = ["DmaWrite"]


class DmaWrite(wiring.Component):
    """AXI4 write DMA.

    A command ``{addr, length}`` (32-bit words; ``addr`` a multiple of the words per beat,
    ``length`` >= 1) is split into INCR bursts like :class:`~ef_train_hdl.axi.dma_read.DmaRead`
    does (at most ``max_burst_beats``, never across 4 KiB). The producer sends exactly
    ``ceil(length / floats_per_beat)`` beats on ``data`` per command, the word at the lowest
    address in bits 31:0; in a partial last beat the words past ``length`` are don't-care and
    are masked off with ``wstrb``. Up to ``max_outstanding`` bursts are in flight (address
    issued, response not back); ``done`` pulses when the last response of a command is back,
    ``busy`` is low when every response is back.

    ``abort``: no new burst is issued and the current command is dropped; the bursts already
    issued are completed with beats whose ``wstrb`` is 0 (nothing written), and ``busy``
    falls when their responses are back, so the engine can then be reset safely.

    Errors: a refused command (zero length, misaligned) is consumed, not executed; a
    SLVERR/DECERR write response reports the failing burst's byte address. After an error no
    new burst is issued, the bursts already issued still get their data (AXI requires it),
    then ``data`` is consumed and dropped and commands are consumed and dropped, so no
    neighbour hangs. Sticky until ``clear`` (honoured while ``busy`` is low).

    Latency and throughput
    ----------------------
    Command to first ``awvalid``: 2 cycles. ``W`` is registered: a beat taken from ``data`` is
    on ``wdata`` the next cycle; one beat per cycle when ``wready`` and ``data.valid`` stay
    high (``awvalid`` is raised no later than the burst's first ``wvalid``, so a subordinate
    that waits for the address before taking data does not deadlock).

    Parameters
    ----------
    config : AcceleratorConfig
    max_outstanding : int, optional
        Write bursts in flight, 1..64; default ``config.max_outstanding_reads``.
    axi_id, id_width, counter_width :
        As for :class:`~ef_train_hdl.axi.dma_read.DmaRead`.

    Members
    -------
    cmd : In(stream.Signature(command_layout(config)))
    data : In(stream.Signature(dma_data_width))
    axi : Out(AXI4Signature(..., read=False))
    busy, done : Out(1)
    error, error_code, error_addr, clear :
        As for the read engine (``error_addr``: the failing burst's first byte).
    beats : Out(counter_width)
        W beats transferred.
    stall_addr : Out(counter_width)
        Cycles with ``awvalid`` high and ``awready`` low.
    stall_data : Out(counter_width)
        Cycles with ``wvalid`` high and ``wready`` low.
    stall_resp : Out(counter_width)
        Cycles with every address and data beat sent, waiting only for write responses.
    stall_in : Out(counter_width)
        Cycles the W channel could take a beat but ``data`` had none (the producer's stall).
    """

    def __init__(self, config, *, max_outstanding=None, axi_id=0, id_width=1,
                 counter_width=64):
        if max_outstanding is None:
            max_outstanding = getattr(config, "max_outstanding_reads", None)
        check_engine_params(config, counter_width, max_outstanding, "max_outstanding")
        if not isinstance(axi_id, int) or not 0 <= axi_id < (1 << id_width):
            raise ValueError(f"axi_id must be an integer in 0..{(1 << id_width) - 1}, "
                             f"not {axi_id!r}")
        self.config = config
        self.max_outstanding = max_outstanding
        self.axi_id = axi_id
        super().__init__({
            "cmd": In(stream.Signature(command_layout(config))),
            "data": In(stream.Signature(unsigned(config.dma_data_width))),
            "axi": Out(AXI4Signature(data_width=config.dma_data_width,
                                     addr_width=config.addr_width, id_width=id_width,
                                     read=False)),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "error_code": Out(3),
            "error_addr": Out(config.addr_width),
            "clear": In(1),
            "abort": In(1),
            "beats": Out(counter_width),
            "stall_addr": Out(counter_width),
            "stall_data": Out(counter_width),
            "stall_resp": Out(counter_width),
            "stall_in": Out(counter_width),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        words_per_beat = cfg.floats_per_beat
        log_words = exact_log2(words_per_beat)
        log_bytes = exact_log2(cfg.bytes_per_beat)
        aw = cfg.addr_width
        axi = self.axi

        w_entry = data.StructLayout({"arlen": 8, "last_burst": 1,
                                     "last_words": lane_bits(cfg)})
        b_entry = data.StructLayout({"addr": aw, "last_burst": 1})
        m.submodules.w_bursts = w_bursts = fifo.SyncFIFO(width=w_entry.size,
                                                        depth=self.max_outstanding)
        m.submodules.b_bursts = b_bursts = fifo.SyncFIFO(width=b_entry.size,
                                                        depth=self.max_outstanding)

        # -- issue stage -----------------------------------------------------------------
        active = Signal()
        addr = Signal(aw)
        beats_left = Signal(aw - log_bytes + 1)
        last_words = Signal(lane_bits(cfg))
        burst = burst_beats(m, cfg, addr, beats_left)

        m.d.comb += [
            axi.awid.eq(self.axi_id),
            axi.awsize.eq(log_bytes),
            axi.awburst.eq(Burst.INCR),
            axi.awcache.eq(0b0011),
        ]
        load = Signal()
        m.d.comb += load.eq(active & ~self.error & ~self.abort & w_bursts.w_rdy &
                            b_bursts.w_rdy & (~axi.awvalid | axi.awready))
        is_last = Signal()
        m.d.comb += is_last.eq(beats_left == burst)
        w_in = data.View(w_entry, w_bursts.w_data)
        b_in = data.View(b_entry, b_bursts.w_data)
        m.d.comb += [
            w_bursts.w_en.eq(load), b_bursts.w_en.eq(load),
            w_in.arlen.eq(burst - 1), w_in.last_burst.eq(is_last),
            w_in.last_words.eq(last_words),
            b_in.addr.eq(addr), b_in.last_burst.eq(is_last),
        ]
        with m.If(load):
            m.d.sync += [
                axi.awaddr.eq(addr),
                axi.awlen.eq(burst - 1),
                axi.awvalid.eq(1),
                addr.eq(addr + (burst << log_bytes)),
                beats_left.eq(beats_left - burst),
            ]
            with m.If(is_last):
                m.d.sync += active.eq(0)
        with m.Elif(axi.awready):
            m.d.sync += axi.awvalid.eq(0)
        with m.If((self.error | self.abort) & ~axi.awvalid):
            m.d.sync += active.eq(0)

        cmd = self.cmd.payload
        m.d.comb += self.cmd.ready.eq(~active)
        set_error = Signal()
        new_code = Signal(3)
        new_addr = Signal(aw)
        with m.If(self.cmd.valid & ~active & ~self.error):
            misaligned = cmd.addr[:log_words] != 0 if log_words else 0
            with m.If(cmd.length == 0):
                m.d.comb += [set_error.eq(1), new_code.eq(DmaError.ZERO_LENGTH),
                             new_addr.eq(cmd.addr << 2)]
            with m.Elif(misaligned):
                m.d.comb += [set_error.eq(1), new_code.eq(DmaError.MISALIGNED),
                             new_addr.eq(cmd.addr << 2)]
            with m.Else():
                m.d.sync += [
                    active.eq(1),
                    addr.eq(cmd.addr << 2),
                    beats_left.eq((cmd.length + words_per_beat - 1) >> log_words),
                    last_words.eq(Mux(cmd.length[:log_words] == 0, words_per_beat,
                                      cmd.length[:log_words]) if log_words else 1),
                ]

        # -- W stage: a registered beat per cycle, wlast/wstrb from the burst queue --------
        w_head = data.View(w_entry, w_bursts.r_data)
        beat_index = Signal(8)
        w_free = Signal()
        m.d.comb += w_free.eq(~axi.wvalid | axi.wready)
        is_wlast = Signal()
        m.d.comb += is_wlast.eq(beat_index == w_head.arlen)
        strb = Signal(cfg.bytes_per_beat)
        partial = w_head.last_burst & is_wlast
        m.d.comb += strb.eq(Cat(
            (~partial | (i < w_head.last_words)).replicate(4) for i in range(words_per_beat)))
        sink = Signal()  # after an error with nothing left to send: drop the producer's data
        m.d.comb += sink.eq(self.error & ~active & ~w_bursts.r_rdy)
        take = Signal()
        # On abort, the bursts already issued get beats with no byte enabled (AXI needs
        # their W data; nothing is written), whatever the producer does.
        m.d.comb += [
            take.eq(w_free & w_bursts.r_rdy & (self.data.valid | self.abort)),
            self.data.ready.eq(((w_free & w_bursts.r_rdy) | sink) & ~self.abort),
            axi.bready.eq(1),
        ]
        with m.If(take):
            m.d.sync += [
                axi.wdata.eq(self.data.payload), axi.wstrb.eq(Mux(self.abort, 0, strb)),
                axi.wlast.eq(is_wlast), axi.wvalid.eq(1),
                beat_index.eq(Mux(is_wlast, 0, beat_index + 1)),
            ]
            m.d.comb += w_bursts.r_en.eq(is_wlast)
        with m.Elif(axi.wready):
            m.d.sync += axi.wvalid.eq(0)

        # -- B stage ---------------------------------------------------------------------
        b_head = data.View(b_entry, b_bursts.r_data)
        m.d.comb += b_bursts.r_en.eq(axi.bvalid)
        m.d.comb += self.done.eq(axi.bvalid & b_bursts.r_rdy & b_head.last_burst)
        with m.If(axi.bvalid & axi.bresp[1] & ~self.error):
            m.d.comb += [
                set_error.eq(1),
                new_code.eq(Mux(axi.bresp[0], DmaError.DECERR, DmaError.SLVERR)),
                new_addr.eq(b_head.addr),
            ]

        with m.If(set_error):
            m.d.sync += [self.error.eq(1), self.error_code.eq(new_code),
                         self.error_addr.eq(new_addr)]
        with m.Elif(self.clear & ~self.busy):
            m.d.sync += [self.error.eq(0), self.error_code.eq(DmaError.NONE),
                         self.error_addr.eq(0)]

        m.d.comb += self.busy.eq(active | b_bursts.r_rdy)

        # -- performance counters ------------------------------------------------------------
        with m.If(axi.wvalid & axi.wready):
            m.d.sync += self.beats.eq(self.beats + 1)
        with m.If(axi.awvalid & ~axi.awready):
            m.d.sync += self.stall_addr.eq(self.stall_addr + 1)
        with m.If(axi.wvalid & ~axi.wready):
            m.d.sync += self.stall_data.eq(self.stall_data + 1)
        with m.If(b_bursts.r_rdy & ~w_bursts.r_rdy & ~axi.wvalid & ~axi.awvalid &
                  ~axi.bvalid):
            m.d.sync += self.stall_resp.eq(self.stall_resp + 1)
        with m.If(w_free & w_bursts.r_rdy & ~self.data.valid):
            m.d.sync += self.stall_in.eq(self.stall_in + 1)
        return m
