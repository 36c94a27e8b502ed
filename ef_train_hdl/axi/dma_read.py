"""DMA read engine: commands (word address, length in words) -> AXI4 INCR bursts -> a beat stream.

It sits between the DRAM (through the top-level AXI4 manager port) and the reshaping load path
of the tile buffers: the command processor (or an address generator) issues one command per
contiguous run of a tile transfer (docs/layout.md) and receives the words in address order.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .common import DmaError, burst_beats, check_engine_params, command_layout, lane_bits
from .signature import AXI4Signature, Burst

__all__ = ["DmaRead", "read_beat_layout"]


def read_beat_layout(config):
    """Payload of the data stream: ``data`` (one bus beat, the word at the lowest address in
    bits 31:0), ``words`` (valid words in the beat, low words first: ``floats_per_beat``
    except in the partial last beat of a command) and ``last`` (last beat of a command)."""
    return data.StructLayout({
        "data": unsigned(config.dma_data_width),
        "words": unsigned(lane_bits(config)),
        "last": unsigned(1),
    })


class DmaRead(wiring.Component):
    """AXI4 read DMA with several bursts in flight.

    A command ``{addr, length}`` (in 32-bit words; ``addr`` a multiple of the words per beat,
    ``length`` >= 1) is split into INCR bursts of at most ``config.max_burst_beats`` beats that
    never cross a 4 KiB boundary. Up to ``max_outstanding`` bursts are in flight (address
    accepted or waiting, data not yet all back); the data comes out on ``data`` in address
    order, one beat per transfer, with the valid-word count of a partial last beat in
    ``words`` and ``last`` on the command's last beat. All bursts use ID ``axi_id``, so the
    subordinate returns them in order.

    A bad command (zero length, misaligned address) is consumed, not executed, and sets the
    error; the bursts of earlier commands still complete and deliver their data. A
    SLVERR/DECERR response sets the error with the byte address of the failing beat and from
    then on the bursts in flight are drained (their data, and the failing beat, are dropped,
    not forwarded). After either error no burst is issued and commands are consumed and
    dropped, so no neighbour hangs. The error is sticky: ``error``, ``error_code``, ``error_addr`` hold until
    ``clear`` is pulsed while ``busy`` is low (a clear while busy is ignored, so the drain can
    not be mistaken for new data).

    Latency and throughput
    ----------------------
    A command is accepted one cycle after the previous command's last burst was issued; its
    first ``arvalid`` rises the cycle after acceptance (address to AR: 1 cycle, registered).
    One burst address per cycle. Data: one beat per cycle, combinational from ``rvalid`` /
    ``rdata`` to ``data`` (``rready`` is ``data.ready``) — 0 cycles of latency, full bus
    bandwidth when the consumer is always ready.

    Parameters
    ----------
    config : AcceleratorConfig
        Bus width (``dma_data_width``), ``addr_width``, ``max_burst_beats``.
    max_outstanding : int, optional
        Bursts in flight, 1..64; default ``config.max_outstanding_reads``.
    axi_id : int
        The ``arid`` of every burst.
    id_width : int
        Width of ``arid`` / ``rid``.
    counter_width : int
        Width of the performance counters (16..64; they wrap).

    Members
    -------
    cmd : In(stream.Signature(command_layout(config)))
    data : Out(stream.Signature(read_beat_layout(config)))
    axi : Out(AXI4Signature(..., write=False))
    busy : Out(1)
        A command is being issued or a burst is in flight.
    error, error_code, error_addr : Out
        Sticky error flag, :class:`DmaError` code, byte address of the failing beat (or of the
        refused command).
    clear : In(1)
        Clears the error (only while not busy).
    abort : In(1)
        Stop: no new burst is issued, the current command is dropped, the data of the
        bursts in flight is taken from the bus and dropped; ``busy`` falls when the last of
        them is back, so the engine can then be reset without breaking the AXI protocol.
    beats : Out(counter_width)
        Beats delivered on ``data``.
    stall_addr : Out(counter_width)
        Cycles with ``arvalid`` high and ``arready`` low.
    stall_data : Out(counter_width)
        Cycles with a burst accepted by the subordinate, its data not all back, ``rvalid`` low.
    stall_out : Out(counter_width)
        Cycles with a beat on ``rvalid`` that the consumer did not take (back-pressure).
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
            "data": Out(stream.Signature(read_beat_layout(config))),
            "axi": Out(AXI4Signature(data_width=config.dma_data_width,
                                     addr_width=config.addr_width, id_width=id_width,
                                     write=False)),
            "busy": Out(1),
            "error": Out(1),
            "error_code": Out(3),
            "error_addr": Out(config.addr_width),
            "clear": In(1),
            "abort": In(1),
            "beats": Out(counter_width),
            "stall_addr": Out(counter_width),
            "stall_data": Out(counter_width),
            "stall_out": Out(counter_width),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        words_per_beat = cfg.floats_per_beat
        log_words = exact_log2(words_per_beat)
        log_bytes = exact_log2(cfg.bytes_per_beat)
        aw = cfg.addr_width
        axi = self.axi

        entry = data.StructLayout({
            "last_burst": 1, "last_words": lane_bits(cfg), "addr": aw})
        m.submodules.bursts = bursts = fifo.SyncFIFO(width=entry.size,
                                                    depth=self.max_outstanding)
        head = data.View(entry, bursts.r_data)

        # -- issue stage: one command at a time, one burst address per cycle -------------
        active = Signal()
        addr = Signal(aw)                    # byte address of the next burst
        beats_left = Signal(aw - log_bytes + 1)
        last_words = Signal(lane_bits(cfg))
        burst = burst_beats(m, cfg, addr, beats_left)

        m.d.comb += [
            axi.arid.eq(self.axi_id),
            axi.arsize.eq(log_bytes),
            axi.arburst.eq(Burst.INCR),
            axi.arcache.eq(0b0011),  # normal, non-cacheable, bufferable (as Xilinx DMAs)
        ]
        ar_free = ~axi.arvalid | axi.arready
        load = Signal()
        m.d.comb += load.eq(active & ~self.error & ~self.abort & bursts.w_rdy & ar_free)
        is_last = Signal()
        m.d.comb += is_last.eq(beats_left == burst)
        entry_in = data.View(entry, bursts.w_data)
        m.d.comb += [
            bursts.w_en.eq(load),
            entry_in.last_burst.eq(is_last),
            entry_in.last_words.eq(last_words),
            entry_in.addr.eq(addr),
        ]
        with m.If(load):
            m.d.sync += [
                axi.araddr.eq(addr),
                axi.arlen.eq(burst - 1),
                axi.arvalid.eq(1),
                addr.eq(addr + (burst << log_bytes)),
                beats_left.eq(beats_left - burst),
            ]
            with m.If(is_last):
                m.d.sync += active.eq(0)
        with m.Elif(axi.arready):
            m.d.sync += axi.arvalid.eq(0)
        with m.If((self.error | self.abort) & ~axi.arvalid):
            # After an error (or on abort) the rest of the current command is dropped.
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

        # -- data stage: R beats go straight to the data stream, in order ---------------
        beat_index = Signal(8)
        bad = Signal()
        m.d.comb += bad.eq(axi.rresp[1])  # SLVERR or DECERR
        # Only a bus error drains the data in flight; a refused command lets the earlier
        # (good) commands finish.
        draining = Signal()
        drop = draining | bad | self.abort
        last = Signal()
        m.d.comb += [
            last.eq(head.last_burst & axi.rlast),
            self.data.payload.data.eq(axi.rdata),
            self.data.payload.last.eq(last),
            self.data.payload.words.eq(Mux(last, head.last_words, words_per_beat)),
            self.data.valid.eq(axi.rvalid & ~drop),
            axi.rready.eq(Mux(drop, 1, self.data.ready)),
        ]
        with m.If(axi.rvalid & axi.rready):
            with m.If(axi.rlast):
                m.d.comb += bursts.r_en.eq(1)
                m.d.sync += beat_index.eq(0)
            with m.Else():
                m.d.sync += beat_index.eq(beat_index + 1)
            with m.If(bad):
                m.d.sync += draining.eq(1)
            with m.If(bad & ~self.error):
                m.d.comb += [
                    set_error.eq(1),
                    new_code.eq(Mux(axi.rresp[0], DmaError.DECERR, DmaError.SLVERR)),
                    new_addr.eq(head.addr + (beat_index << log_bytes)),
                ]

        with m.If(set_error):
            m.d.sync += [self.error.eq(1), self.error_code.eq(new_code),
                         self.error_addr.eq(new_addr)]
        with m.Elif(self.clear & ~self.busy):
            m.d.sync += [self.error.eq(0), draining.eq(0), self.error_code.eq(DmaError.NONE),
                         self.error_addr.eq(0)]

        m.d.comb += self.busy.eq(active | bursts.r_rdy)

        # -- performance counters ------------------------------------------------------------
        accepted = Signal()  # a burst the subordinate has accepted is still missing data
        m.d.comb += accepted.eq(bursts.level > axi.arvalid)
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.beats.eq(self.beats + 1)
        with m.If(axi.arvalid & ~axi.arready):
            m.d.sync += self.stall_addr.eq(self.stall_addr + 1)
        with m.If(accepted & ~axi.rvalid):
            m.d.sync += self.stall_data.eq(self.stall_data + 1)
        with m.If(self.data.valid & ~self.data.ready):
            m.d.sync += self.stall_out.eq(self.stall_out + 1)
        return m
