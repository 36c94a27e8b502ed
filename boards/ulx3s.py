"""The ULX3S (ECP5-85F) top level: the accelerator on on-chip memory, a UART host bridge.

The ULX3S has a 16-bit SDRAM, not a DDR controller with an AXI port, so this top level gives
the accelerator the simplest memory that is honest about what it is: an :class:`AxiSram` of
the block RAM (EBR) the accelerator leaves free, as its DRAM. A host reaches the registers and
that memory through the board's FTDI UART (``/dev/ttyUSB0`` on a PC)::

    FTDI rx --> UartRx --> FIFO --> UartBridge --csr (AXI4-Lite)--> Accelerator.s_axil
    FTDI tx <-- UartTx <-- FIFO <--            --mem (AXI4)------> AxiArbiter.m1 --+
                                                 Accelerator.m_axi --> AxiArbiter.m0 --+--> AxiSram

    25 MHz oscillator --> EHXPLLL --> sync domain (reset: PLL not locked, or the PWR button)

The UART byte protocol (8N1, ``baud`` bits per second, multi-byte values little-endian):

========= ============================== =====================================================
command   request bytes                  effect
========= ============================== =====================================================
``0x01``  ``0x01 a0 a1 a2 a3``           CSR read of byte address ``a`` (bits 11:0)
``0x02``  ``0x02 a0..a3 d0..d3``         CSR write of ``d`` to ``a``
``0x03``  ``0x03 a0 a1 a2 a3``           memory read of the 32-bit word at byte address ``a``
``0x04``  ``0x04 a0..a3 d0..d3``         memory write of the 32-bit word ``d`` at ``a``
========= ============================== =====================================================

Every command is answered by five bytes: a status byte, then four data bytes (the word read;
zero for a write). The status byte is the AXI response (0 OKAY, 2 SLVERR, 3 DECERR: an
address outside the memory or the register map) or 0x80 for an unknown command byte (which is
dropped on its own). Memory addresses are byte addresses of 32-bit words (bits 1:0 ignored),
as the accelerator's DMA sees them. A command whose bytes stop coming for ``timeout_cycles``
clock cycles is dropped, so a host that lost track resynchronises by pausing (50 ms at the
defaults) before its next command. A host may keep up to three commands in flight (sent,
not yet answered): the bridge handles a command in a few cycles and buffers 16 bytes each
way, and no answer is longer than its request; the simplest host waits for each answer.

LEDs: 0 the accelerator's ``irq``, 1 its AXI traffic (``busy``: any address or data valid on
its manager port, stretched so it is visible), 2 a byte received, 3 a byte sent, 6 the PLL
locked, 7 a heartbeat (about 1.5 Hz at 50 MHz).
"""

from amaranth.hdl import Cat, ClockDomain, Const, Elaboratable, Instance, Module, \
    Mux, Signal
from amaranth.lib import fifo, io, stream, wiring
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from ef_train_hdl.accel.top import Accelerator
from ef_train_hdl.axi.signature import AXI4LiteSignature, AXI4Signature, Burst, Resp
from ef_train_hdl.axi.sram import AxiSram

__all__ = [
    "UartRx", "UartTx", "UartBridge", "AxiArbiter", "Ulx3sSoC", "Ulx3sTop", "pll_params",
    "uart_divisor", "Command", "STATUS_BAD_COMMAND", "OSC_MHZ",
]

#: The ULX3S oscillator (pin G2).
OSC_MHZ = 25.0
#: Status byte of an answer to an unknown command byte.
STATUS_BAD_COMMAND = 0x80


class Command:
    """Command bytes of the UART protocol (see the module docstring)."""
    CSR_READ = 0x01
    CSR_WRITE = 0x02
    MEM_READ = 0x03
    MEM_WRITE = 0x04


def uart_divisor(clock_hz, baud):
    """Clock cycles per UART bit; ``ValueError`` if the rate is off by more than 2 %.

    Parameters
    ----------
    clock_hz, baud : float
    """
    if baud <= 0 or clock_hz <= 0:
        raise ValueError(f"clock_hz and baud must be positive, not {clock_hz!r} and {baud!r}")
    divisor = round(clock_hz / baud)
    if divisor < 4:
        raise ValueError(f"baud {baud!r} is too fast for a {clock_hz / 1e6:g} MHz clock: a bit "
                         f"must last at least 4 cycles, not {clock_hz / baud:.2f}")
    error = abs(clock_hz / divisor - baud) / baud
    if error > 0.02:
        raise ValueError(f"baud {baud!r} is {100 * error:.1f} % off at {clock_hz / 1e6:g} MHz "
                         f"(divisor {divisor}); at most 2 % is allowed")
    return divisor


class UartRx(wiring.Component):
    """UART receiver, 8 data bits, no parity, one stop bit (8N1), LSB first.

    The line goes through a two-flip-flop synchroniser; a start bit is confirmed half a bit
    after the falling edge, then every bit is sampled in its middle. A byte whose stop bit is
    0 (a framing error, or a break) is dropped.

    Latency: the byte is on ``o`` half a bit time after the middle of its stop bit.
    Throughput: one byte per ten bit times. ``o`` has no back-pressure in the line: a byte not
    taken before the next one completes is overwritten (``overrun`` pulses).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (:func:`uart_divisor`).

    Members
    -------
    rx : ``In(1)``
        The serial line (idle high).
    o : ``Out(stream.Signature(8))``
    overrun : ``Out(1)``
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    overrun: Out(1)

    def __init__(self, divisor):
        if not isinstance(divisor, int) or divisor < 4:
            raise ValueError(f"divisor must be an integer of at least 4 cycles per bit, "
                             f"not {divisor!r}")
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(self.divisor))
        bit = Signal(range(10))
        shreg = Signal(8)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):                       # a glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(self.divisor - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [timer.eq(self.divisor - 1), shreg.eq(Cat(shreg[1:], line)),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(line):
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.d.comb += self.overrun.eq(self.o.valid & ~self.o.ready)
                    m.next = "IDLE"                  # wait for the line to go idle again
        return m


class UartTx(wiring.Component):
    """UART transmitter, 8N1, LSB first.

    Latency: the start bit begins the cycle after a byte is taken. Throughput: one byte per
    ten bit times (``i.ready`` is high only between bytes).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit.

    Members
    -------
    i : ``In(stream.Signature(8))``
    tx : ``Out(1)``
        The serial line (idle high).
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor):
        if not isinstance(divisor, int) or divisor < 4:
            raise ValueError(f"divisor must be an integer of at least 4 cycles per bit, "
                             f"not {divisor!r}")
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        shreg = Signal(10, init=0x3FF)               # stop bit, data, start bit: sent LSB first
        left = Signal(range(11))
        m.d.comb += [self.i.ready.eq(left == 0), self.tx.eq(shreg[0])]
        with m.If(left == 0):
            with m.If(self.i.valid):
                m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                             left.eq(10), timer.eq(self.divisor - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), left.eq(left - 1),
                         timer.eq(self.divisor - 1)]
        return m


class UartBridge(wiring.Component):
    """The host's way in: UART bytes (the protocol of the module docstring) to AXI transfers.

    One command at a time: collect its bytes, do one AXI4-Lite transfer on ``csr`` or one
    single-beat AXI4 transfer on ``mem`` (a 4-byte narrow transfer, ``arsize``/``awsize`` = 2,
    in the byte lane its address selects, as AXI defines narrow transfers), then send the
    five answer bytes.

    Latency: the answer's first byte a few cycles (bus latency + 2) after the request's last
    byte. Throughput: one command per request on the line (its answer is never longer).

    Parameters
    ----------
    data_width, addr_width : int
        Of ``mem`` (the accelerator's ``m_axi`` widths).
    timeout_cycles : int
        Cycles without a byte after which a partly received command is dropped.

    Members
    -------
    rx : ``In(stream.Signature(8))``
        Request bytes.
    tx : ``Out(stream.Signature(8))``
        Answer bytes.
    csr : ``Out(AXI4LiteSignature(addr_width=12))``
    mem : ``Out(AXI4Signature(data_width=data_width, addr_width=addr_width))``
    """

    def __init__(self, *, data_width, addr_width, timeout_cycles=1 << 21):
        if data_width not in (32, 64, 128, 256, 512):
            raise ValueError(f"data_width must be one of 32, 64, 128, 256, 512 bits, "
                             f"not {data_width!r}")
        if not isinstance(timeout_cycles, int) or timeout_cycles < 16:
            raise ValueError(f"timeout_cycles must be an integer of at least 16, "
                             f"not {timeout_cycles!r}")
        self.data_width, self.addr_width = data_width, addr_width
        self.timeout_cycles = timeout_cycles
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "csr": Out(AXI4LiteSignature(addr_width=12)),
            "mem": Out(AXI4Signature(data_width=data_width, addr_width=addr_width)),
        })

    def elaborate(self, platform):
        m = Module()
        csr, mem = self.csr, self.mem
        lanes = self.data_width // 32
        lane_lsb = 2
        lane_bits = exact_log2(lanes)

        cmd = Signal(8)
        addr = Signal(32)
        wdata = Signal(32)
        rdata = Signal(32)
        status = Signal(8)
        count = Signal(3)
        aw_done, w_done = Signal(), Signal()
        idle = Signal(range(self.timeout_cycles + 1))
        lane = addr[lane_lsb:lane_lsb + lane_bits] if lane_bits else Const(0, 1)
        is_write = (cmd == Command.CSR_WRITE) | (cmd == Command.MEM_WRITE)

        rx_take = self.rx.valid & self.rx.ready
        byte = self.rx.payload

        # Fixed fields of the memory transfers: one beat, 4 bytes, INCR.
        m.d.comb += [
            mem.araddr.eq(Cat(Const(0, 2), addr[2:self.addr_width])),
            mem.arlen.eq(0), mem.arsize.eq(2), mem.arburst.eq(Burst.INCR), mem.arid.eq(0),
            mem.awaddr.eq(Cat(Const(0, 2), addr[2:self.addr_width])),
            mem.awlen.eq(0), mem.awsize.eq(2), mem.awburst.eq(Burst.INCR), mem.awid.eq(0),
            mem.wdata.eq(Cat(*[wdata] * lanes)), mem.wlast.eq(1),
            mem.wstrb.eq(Const(0xF, self.data_width // 8) << (lane * 4) if lane_bits
                         else 0xF),
            csr.araddr.eq(addr[:12]), csr.awaddr.eq(addr[:12]),
            csr.wdata.eq(wdata), csr.wstrb.eq(0xF),
        ]

        def start_op():
            """Leave the receiving states for the transfer ``cmd`` names."""
            m.d.sync += [aw_done.eq(0), w_done.eq(0)]
            with m.Switch(cmd):
                with m.Case(Command.CSR_READ):
                    m.next = "CSR_AR"
                with m.Case(Command.CSR_WRITE):
                    m.next = "CSR_W"
                with m.Case(Command.MEM_READ):
                    m.next = "MEM_AR"
                with m.Default():
                    m.next = "MEM_W"

        with m.FSM():
            with m.State("CMD"):
                m.d.comb += self.rx.ready.eq(1)
                m.d.sync += idle.eq(0)
                with m.If(rx_take):
                    m.d.sync += [cmd.eq(byte), count.eq(0), rdata.eq(0)]
                    with m.If((byte >= Command.CSR_READ) & (byte <= Command.MEM_WRITE)):
                        m.next = "ADDR"
                    with m.Else():
                        m.d.sync += status.eq(STATUS_BAD_COMMAND)
                        m.next = "ANSWER"
            with m.State("ADDR"):
                m.d.comb += self.rx.ready.eq(1)
                m.d.sync += idle.eq(Mux(rx_take, 0, idle + 1))
                with m.If(rx_take):
                    m.d.sync += [addr.eq(Cat(addr[8:], byte)), count.eq(count + 1)]
                    with m.If(count == 3):
                        m.d.sync += count.eq(0)
                        with m.If(is_write):
                            m.next = "DATA"
                        with m.Else():
                            start_op()
                with m.Elif(idle == self.timeout_cycles):
                    m.next = "CMD"
            with m.State("DATA"):
                m.d.comb += self.rx.ready.eq(1)
                m.d.sync += idle.eq(Mux(rx_take, 0, idle + 1))
                with m.If(rx_take):
                    m.d.sync += [wdata.eq(Cat(wdata[8:], byte)), count.eq(count + 1)]
                    with m.If(count == 3):
                        m.d.sync += count.eq(0)
                        start_op()
                with m.Elif(idle == self.timeout_cycles):
                    m.next = "CMD"

            with m.State("CSR_AR"):
                m.d.comb += csr.arvalid.eq(1)
                with m.If(csr.arready):
                    m.next = "CSR_R"
            with m.State("CSR_R"):
                m.d.comb += csr.rready.eq(1)
                with m.If(csr.rvalid):
                    m.d.sync += [rdata.eq(csr.rdata), status.eq(csr.rresp)]
                    m.next = "ANSWER"
            with m.State("CSR_W"):
                m.d.comb += [csr.awvalid.eq(~aw_done), csr.wvalid.eq(~w_done)]
                aw_now = aw_done | csr.awready
                w_now = w_done | csr.wready
                m.d.sync += [aw_done.eq(aw_now), w_done.eq(w_now)]
                with m.If(aw_now & w_now):
                    m.next = "CSR_B"
            with m.State("CSR_B"):
                m.d.comb += csr.bready.eq(1)
                with m.If(csr.bvalid):
                    m.d.sync += status.eq(csr.bresp)
                    m.next = "ANSWER"

            with m.State("MEM_AR"):
                m.d.comb += mem.arvalid.eq(1)
                with m.If(mem.arready):
                    m.next = "MEM_R"
            with m.State("MEM_R"):
                m.d.comb += mem.rready.eq(1)
                with m.If(mem.rvalid):
                    m.d.sync += [rdata.eq(mem.rdata.word_select(lane, 32)),
                                 status.eq(mem.rresp)]
                    with m.If(mem.rlast):
                        m.next = "ANSWER"
            with m.State("MEM_W"):
                m.d.comb += [mem.awvalid.eq(~aw_done), mem.wvalid.eq(~w_done)]
                aw_now = aw_done | mem.awready
                w_now = w_done | mem.wready
                m.d.sync += [aw_done.eq(aw_now), w_done.eq(w_now)]
                with m.If(aw_now & w_now):
                    m.next = "MEM_B"
            with m.State("MEM_B"):
                m.d.comb += mem.bready.eq(1)
                with m.If(mem.bvalid):
                    m.d.sync += status.eq(mem.bresp)
                    m.next = "ANSWER"

            with m.State("ANSWER"):
                m.d.comb += [self.tx.valid.eq(1),
                             self.tx.payload.eq(Mux(count == 0, status,
                                                    rdata.word_select((count - 1)[:2], 8)))]
                with m.If(self.tx.ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == 4):
                        m.d.sync += count.eq(0)
                        m.next = "CMD"
        return m


_AR = ("araddr", "arlen", "arsize", "arburst", "arlock", "arcache", "arprot", "arqos")
_AW = ("awaddr", "awlen", "awsize", "awburst", "awlock", "awcache", "awprot", "awqos")
_W = ("wdata", "wstrb", "wlast")


class AxiArbiter(wiring.Component):
    """Two AXI4 managers onto one subordinate (the accelerator and the host bridge onto the
    on-chip memory).

    Reads and writes are arbitrated separately. An address is granted round-robin between the
    managers that request; a grant holds while the subordinate has not taken the address, so
    what it sees stays stable. Read bursts of the two managers may be in flight together: the
    subordinate's ID carries the manager in its top bit, and read data and write responses go
    back by it. A granted write holds the write channel until its response, so write data
    always follows its address.

    Latency: none added (the paths are combinational). Throughput: as the subordinate's;
    the write path handles one write at a time.

    Parameters
    ----------
    data_width, addr_width, id_width : int
        Of the managers; the subordinate port has ``id_width + 1`` ID bits.

    Members
    -------
    m0, m1 : ``In(AXI4Signature(...))``
        The managers (``m0`` the accelerator).
    s : ``Out(AXI4Signature(..., id_width=id_width + 1))``
    """

    def __init__(self, *, data_width, addr_width, id_width=1):
        sig = AXI4Signature(data_width=data_width, addr_width=addr_width, id_width=id_width)
        self.id_width = id_width
        super().__init__({
            "m0": In(sig), "m1": In(sig),
            "s": Out(AXI4Signature(data_width=data_width, addr_width=addr_width,
                                   id_width=id_width + 1)),
        })

    def _grant(self, m, valid0, valid1, taken, waiting, name):
        """The manager granted an address channel this cycle (0 or 1)."""
        sel, owner, hold, prefer1 = (Signal(name=f"{name}_sel"), Signal(name=f"{name}_owner"),
                                     Signal(name=f"{name}_hold"), Signal(name=f"{name}_prefer1"))
        with m.If(hold):
            m.d.comb += sel.eq(owner)
        with m.Elif(valid0 & valid1):
            m.d.comb += sel.eq(prefer1)
        with m.Else():
            m.d.comb += sel.eq(valid1)
        m.d.sync += [owner.eq(sel), hold.eq(waiting)]
        with m.If(taken):
            m.d.sync += prefer1.eq(~sel)
        return sel

    def elaborate(self, platform):
        m = Module()
        m0, m1, s = self.m0, self.m1, self.s
        top = self.id_width

        # -- reads --------------------------------------------------------------------------
        ar = self._grant(m, m0.arvalid, m1.arvalid, s.arvalid & s.arready,
                         s.arvalid & ~s.arready, "ar")
        for name in _AR:
            m.d.comb += getattr(s, name).eq(Mux(ar, getattr(m1, name), getattr(m0, name)))
        m.d.comb += [
            s.arid.eq(Cat(Mux(ar, m1.arid, m0.arid), ar)),
            s.arvalid.eq(Mux(ar, m1.arvalid, m0.arvalid)),
            m0.arready.eq(s.arready & ~ar), m1.arready.eq(s.arready & ar),
        ]
        r_to1 = s.rid[top]
        for mgr, mine in ((m0, ~r_to1), (m1, r_to1)):
            m.d.comb += [mgr.rid.eq(s.rid[:top]), mgr.rdata.eq(s.rdata), mgr.rresp.eq(s.rresp),
                         mgr.rlast.eq(s.rlast), mgr.rvalid.eq(s.rvalid & mine)]
        m.d.comb += s.rready.eq(Mux(r_to1, m1.rready, m0.rready))

        # -- writes: one at a time, from the address handshake to the response -------------
        w_busy, w_owner = Signal(), Signal()
        aw = self._grant(m, m0.awvalid & ~w_busy, m1.awvalid & ~w_busy,
                         s.awvalid & s.awready, s.awvalid & ~s.awready, "aw")
        for name in _AW:
            m.d.comb += getattr(s, name).eq(Mux(aw, getattr(m1, name), getattr(m0, name)))
        m.d.comb += [
            s.awid.eq(Cat(Mux(aw, m1.awid, m0.awid), aw)),
            s.awvalid.eq(~w_busy & Mux(aw, m1.awvalid, m0.awvalid)),
            m0.awready.eq(~w_busy & s.awready & ~aw), m1.awready.eq(~w_busy & s.awready & aw),
        ]
        with m.If(s.awvalid & s.awready):
            m.d.sync += [w_busy.eq(1), w_owner.eq(aw)]
        for name in _W:
            m.d.comb += getattr(s, name).eq(Mux(w_owner, getattr(m1, name), getattr(m0, name)))
        m.d.comb += [
            s.wvalid.eq(w_busy & Mux(w_owner, m1.wvalid, m0.wvalid)),
            m0.wready.eq(w_busy & s.wready & ~w_owner),
            m1.wready.eq(w_busy & s.wready & w_owner),
        ]
        b_to1 = s.bid[top]
        for mgr, mine in ((m0, ~b_to1), (m1, b_to1)):
            m.d.comb += [mgr.bid.eq(s.bid[:top]), mgr.bresp.eq(s.bresp),
                         mgr.bvalid.eq(s.bvalid & mine)]
        m.d.comb += s.bready.eq(Mux(b_to1, m1.bready, m0.bready))
        with m.If(s.bvalid & s.bready):
            m.d.sync += w_busy.eq(0)
        return m


class Ulx3sSoC(wiring.Component):
    """Everything of the ULX3S design that runs in the accelerator's clock domain: the
    accelerator, its on-chip memory, the arbiter, the UART bridge and its FIFOs, the LED
    drivers. :class:`Ulx3sTop` adds the pins, the PLL and the reset; the simulator tests
    drive this component's ``uart_rx`` line directly.

    Parameters
    ----------
    cfg : AcceleratorConfig
    dram_bytes : int
        Size of the on-chip memory the accelerator sees as its DRAM, from byte address 0; a
        multiple of ``cfg.bytes_per_beat``.
    divisor : int
        Clock cycles per UART bit.
    timeout_cycles : int
        The bridge's command timeout.
    led_stretch : int
        Cycles an activity LED stays lit after an event.

    Members
    -------
    uart_rx : ``In(1)``, uart_tx : ``Out(1)``
    leds : ``Out(4)``
        irq, AXI traffic, byte received, byte sent.
    accel, ram, bridge : the submodules (tests read ``ram.memory``).
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    leds: Out(4)

    def __init__(self, cfg, *, dram_bytes, divisor, timeout_cycles=1 << 21,
                 led_stretch=1 << 20):
        if not isinstance(dram_bytes, int) or dram_bytes <= 0 \
                or dram_bytes % cfg.bytes_per_beat:
            raise ValueError(f"dram_bytes must be a positive multiple of the "
                             f"{cfg.bytes_per_beat}-byte DMA beat, not {dram_bytes!r}")
        if dram_bytes > 1 << cfg.addr_width:
            raise ValueError(f"dram_bytes {dram_bytes} exceeds the {cfg.addr_width}-bit "
                             f"address space")
        if not isinstance(led_stretch, int) or led_stretch < 1:
            raise ValueError(f"led_stretch must be a positive number of cycles, "
                             f"not {led_stretch!r}")
        self.cfg, self.dram_bytes, self.divisor = cfg, dram_bytes, divisor
        self.led_stretch = led_stretch
        self.accel = Accelerator(cfg)
        self.ram = AxiSram(data_width=cfg.dma_data_width, addr_width=cfg.addr_width,
                           depth=dram_bytes // cfg.bytes_per_beat, id_width=2)
        self.bridge = UartBridge(data_width=cfg.dma_data_width, addr_width=cfg.addr_width,
                                 timeout_cycles=timeout_cycles)
        super().__init__()

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        m.submodules.accel = accel = self.accel
        m.submodules.ram = self.ram
        m.submodules.bridge = bridge = self.bridge
        m.submodules.arbiter = arbiter = AxiArbiter(data_width=cfg.dma_data_width,
                                                    addr_width=cfg.addr_width)
        m.submodules.uart_rx = rx = UartRx(self.divisor)
        m.submodules.uart_tx = tx = UartTx(self.divisor)
        # The answers never outgrow the requests, so the receive FIFO only has to cover the
        # few cycles a bus transfer takes; 16 bytes also absorb a host's burst of requests.
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=16)
        m.submodules.tx_fifo = tx_fifo = fifo.SyncFIFOBuffered(width=8, depth=16)

        wiring.connect(m, accel.m_axi, arbiter.m0)
        wiring.connect(m, bridge.mem, arbiter.m1)
        wiring.connect(m, arbiter.s, self.ram.bus)
        wiring.connect(m, bridge.csr, accel.s_axil)

        m.d.comb += [
            rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx),
            rx_fifo.w_data.eq(rx.o.payload), rx_fifo.w_en.eq(rx.o.valid),
            rx.o.ready.eq(rx_fifo.w_rdy),
            bridge.rx.payload.eq(rx_fifo.r_data), bridge.rx.valid.eq(rx_fifo.r_rdy),
            rx_fifo.r_en.eq(bridge.rx.ready),
            tx_fifo.w_data.eq(bridge.tx.payload), tx_fifo.w_en.eq(bridge.tx.valid),
            bridge.tx.ready.eq(tx_fifo.w_rdy),
            tx.i.payload.eq(tx_fifo.r_data), tx.i.valid.eq(tx_fifo.r_rdy),
            tx_fifo.r_en.eq(tx.i.ready),
        ]

        def stretch(event, name):
            left = Signal(range(self.led_stretch + 1), name=f"{name}_left")
            with m.If(event):
                m.d.sync += left.eq(self.led_stretch)
            with m.Elif(left != 0):
                m.d.sync += left.eq(left - 1)
            return left != 0

        axi = accel.m_axi
        m.d.comb += self.leds.eq(Cat(
            accel.irq,
            stretch(axi.arvalid | axi.awvalid | axi.wvalid | axi.rvalid, "busy"),
            stretch(rx.o.valid & rx.o.ready, "rx"),
            stretch(tx.i.valid & tx.i.ready, "tx")))
        return m


def pll_params(fin_mhz, fout_mhz):
    """EHXPLLL dividers for ``fout_mhz`` from ``fin_mhz``, as Project Trellis's ``ecppll``
    searches them: the closest output frequency, then the VCO closest to 600 MHz.

    The PLL runs ``f_pfd = fin / CLKI_DIV`` (3.125..400 MHz) and
    ``f_vco = f_pfd * CLKFB_DIV * CLKOP_DIV`` (400..800 MHz) with CLKOP as its feedback, so
    ``fout = f_pfd * CLKFB_DIV``.

    Returns
    -------
    dict
        ``clki_div``, ``clkfb_div``, ``clkop_div``, ``clkop_cphase``, ``fout_mhz`` (achieved),
        ``fvco_mhz``.

    Raises
    ------
    ValueError
        If no setting comes within 0.5 % of ``fout_mhz``.
    """
    if not 8 <= fout_mhz <= 400:
        raise ValueError(f"the PLL output must be between 8 and 400 MHz, not {fout_mhz!r}")
    best = None
    for clki_div in range(1, 129):
        fpfd = fin_mhz / clki_div
        if not 3.125 <= fpfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            fout = fpfd * clkfb_div
            for clkop_div in range(1, 129):
                fvco = fout * clkop_div
                if not 400 <= fvco <= 800:
                    continue
                key = (abs(fout - fout_mhz), abs(fvco - 600))
                if best is None or key < best[0]:
                    best = (key, clki_div, clkfb_div, clkop_div, fout, fvco)
    (error, _), clki_div, clkfb_div, clkop_div, fout, fvco = best
    if error > 0.005 * fout_mhz:
        raise ValueError(f"the PLL cannot make {fout_mhz} MHz from {fin_mhz} MHz within 0.5 % "
                         f"(closest {fout:.4f} MHz)")
    # With CLKOP as its own feedback the coarse phase does not move CLKOP against CLKI; this
    # is the mid-period setting ecppll writes for most dividers.
    return {"clki_div": clki_div, "clkfb_div": clkfb_div, "clkop_div": clkop_div,
            "clkop_cphase": (clkop_div - 1) // 2, "fout_mhz": fout, "fvco_mhz": fvco}


class Ulx3sTop(Elaboratable):
    """The ULX3S bitstream's top level (for ``amaranth_boards.ulx3s.ULX3S_85F_Platform``).

    Parameters
    ----------
    cfg : AcceleratorConfig
    dram_bytes : int
        On-chip memory as the accelerator's DRAM (:class:`Ulx3sSoC`).
    clock_mhz : float
        The accelerator clock. 25.0 runs from the oscillator directly; anything else from an
        EHXPLLL (:func:`pll_params`).
    baud : int
        UART bit rate of the host bridge.

    Attributes
    ----------
    soc : Ulx3sSoC
    pll : dict or None
        The PLL setting (:func:`pll_params`), ``None`` at 25 MHz.
    """

    def __init__(self, cfg, *, dram_bytes, clock_mhz, baud=115_200):
        if not isinstance(clock_mhz, (int, float)) or clock_mhz <= 0:
            raise ValueError(f"clock_mhz must be a positive number, not {clock_mhz!r}")
        self.cfg, self.dram_bytes, self.baud = cfg, dram_bytes, baud
        self.pll = None if clock_mhz == OSC_MHZ else pll_params(OSC_MHZ, clock_mhz)
        self.clock_mhz = OSC_MHZ if self.pll is None else self.pll["fout_mhz"]
        clock_hz = self.clock_mhz * 1e6
        self.soc = Ulx3sSoC(cfg, dram_bytes=dram_bytes, divisor=uart_divisor(clock_hz, baud),
                            timeout_cycles=int(clock_hz * 0.040),   # 40 ms
                            led_stretch=int(clock_hz * 0.020))

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd_sync = ClockDomain("sync")
        m.submodules.clk25 = clk25 = io.Buffer("i", platform.request("clk25", 0, dir="-"))
        locked = Signal()
        if self.pll is None:
            m.d.comb += [cd_sync.clk.eq(clk25.i), locked.eq(1)]
        else:
            p = self.pll
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{OSC_MHZ:g}",
                a_FREQUENCY_PIN_CLKOP=f"{p['fout_mhz']:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=p["clki_div"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["clkop_div"],
                p_CLKOP_CPHASE=p["clkop_cphase"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                p_CLKFB_DIV=p["clkfb_div"],
                i_RST=0, i_STDBY=0, i_CLKI=clk25.i, o_CLKOP=cd_sync.clk,
                i_CLKFB=cd_sync.clk, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1,
                i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_LOCK=locked)
            # No clock constraint of our own: nextpnr derives CLKOP's from CLKI's (25 MHz).
        # Reset while the PLL is not locked or the PWR button is held (the platform inverts
        # its active-low pin), released synchronously.
        m.submodules.button = button = io.Buffer("i", platform.request("button_pwr", 0,
                                                                        dir="-"))
        m.submodules.reset = ResetSynchronizer(~locked | button.i, domain="sync")

        m.submodules.soc = soc = self.soc
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        m.d.comb += [soc.uart_rx.eq(uart_rx.i), uart_tx.o.eq(soc.uart_tx)]

        heartbeat = Signal(ceil_log2(int(self.clock_mhz * 1e6 / 1.5)))
        m.d.sync += heartbeat.eq(heartbeat + 1)
        leds = []
        for i in range(8):
            m.submodules[f"led{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            leds.append(led)
        for i in range(4):
            m.d.comb += leds[i].o.eq(soc.leds[i])
        m.d.comb += [leds[6].o.eq(locked), leds[7].o.eq(heartbeat[-1])]
        return m
