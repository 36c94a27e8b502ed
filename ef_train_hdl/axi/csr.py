"""The accelerator's control/status registers: one table, an AXI4-Lite register block, docs.

:data:`CSR_MAP` is the single definition of the register map. The gateware (:class:`CsrBlock`)
elaborates its decoder and its ports from it, the host driver looks offsets and fields up in it
(:func:`reg`, :func:`field`), and docs/axi.md carries the table :func:`csr_markdown` prints (a
test keeps the two equal). Change the map here only.

Access kinds of a field
-----------------------
``const``  read-only, a value of the configuration baked into the bitstream (host checks it);
``ro``     read-only, driven by the hardware through an input port;
``rw``     written by the host, read back, drives an output port;
``w1p``    write-1-pulse: writing 1 raises the output port for one cycle; reads 0;
``w1c``    set by a one-cycle pulse on an input port (events), cleared by the host writing 1.

Wide values (64-bit counters, addresses) are split into ``_LO`` / ``_HI`` registers on one
port. Reading ``_LO`` snapshots the port's upper bits, reading ``_HI`` returns the snapshot, so
``LO`` then ``HI`` gives one consistent 64-bit value of a running counter.
"""

from dataclasses import dataclass

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..config import AcceleratorConfig
from .signature import AXI4LiteSignature, Resp

__all__ = [
    "Field", "Reg", "CSR_MAP", "CSR_ID", "CSR_VERSION", "CsrBlock", "reg", "field",
    "csr_ports", "csr_markdown", "config_value",
]

ACCESS = ("const", "ro", "rw", "w1p", "w1c")
#: ``ID`` register: "EFTR" in ASCII.
CSR_ID = 0x45465452
#: ``VERSION`` register: major << 16 | minor. Bump the major when the map changes incompatibly.
CSR_VERSION = (2 << 16) | 1


@dataclass(frozen=True)
class Field:
    """Bits ``[lsb, lsb + width)`` of a register.

    ``port`` / ``port_lsb``: which bits of which component port the field is (default: port
    ``<register>_<field>`` in lower case, from bit 0; ``value`` fields name the port after the
    register alone). ``const`` fields carry ``value``: a function of the configuration.
    """
    name: str
    lsb: int
    width: int
    access: str
    doc: str
    port: str = None
    port_lsb: int = 0
    value: object = None

    def __post_init__(self):
        if self.access not in ACCESS:
            raise ValueError(f"access of field {self.name!r} must be one of "
                             f"{', '.join(ACCESS)}, not {self.access!r}")
        if not (0 <= self.lsb and self.width >= 1 and self.lsb + self.width <= 32):
            raise ValueError(f"field {self.name!r} bits [{self.lsb}, {self.lsb + self.width}) "
                             f"must lie within a 32-bit register")
        if (self.access == "const") != (self.value is not None):
            raise ValueError(f"field {self.name!r}: a value is given exactly for const fields")


@dataclass(frozen=True)
class Reg:
    """A 32-bit register at byte ``offset`` of the AXI4-Lite space."""
    name: str
    offset: int
    fields: tuple
    doc: str

    @property
    def writable(self):
        return any(f.access in ("rw", "w1p", "w1c") for f in self.fields)


def _const(name, offset, doc, value):
    return Reg(name, offset, (Field("value", 0, 32, "const", doc, value=value),), doc)


def _wide(name, offset, doc, access="ro"):
    """A 64-bit value as ``<name>_LO`` / ``<name>_HI`` on one port ``<name>``."""
    port = name.lower()
    return (
        Reg(f"{name}_LO", offset, (Field("value", 0, 32, access, f"{doc}, bits 31:0",
                                         port=port, port_lsb=0),), f"{doc} (bits 31:0)"),
        Reg(f"{name}_HI", offset + 4, (Field("value", 0, 32, access, f"{doc}, bits 63:32",
                                             port=port, port_lsb=32),), f"{doc} (bits 63:32)"),
    )


_CONFIG_REGS = (
    ("TM", "tm", "PE array output lanes (Tm)"),
    ("TN", "tn", "PE array inputs per lane (Tn)"),
    ("K_MAX", "k_max", "largest kernel size"),
    ("STRIDE_MAX", "stride_max", "largest stride"),
    ("IFM_DEPTH", "ifm_depth", "words per input-tile bank"),
    ("WEIGHT_DEPTH", "weight_depth", "words per weight bank"),
    ("OFM_DEPTH", "ofm_depth", "words per output-tile bank"),
    ("DMA_DATA_WIDTH", "dma_data_width", "AXI4 data width in bits"),
    ("ADDR_WIDTH", "addr_width", "AXI4 address width in bits"),
    ("MAX_BURST_BEATS", "max_burst_beats", "longest DMA burst in beats"),
    ("MAX_OUTSTANDING_READS", "max_outstanding_reads", "DMA read bursts in flight"),
    ("MAX_CHANNELS", "max_channels", "largest channel count of a descriptor"),
    ("MAX_SIZE", "max_size", "largest feature-map height/width of a descriptor"),
    ("MAX_BATCH", "max_batch", "largest batch of a descriptor"),
)


def _features(config):
    return (int(config.bias) | int(config.momentum) << 1 |
            int(config.mult_format == "bf16") << 2)


#: Performance counters (64-bit, free-running from reset): (register name, meaning).
COUNTERS = (
    ("CYCLES", "clock cycles of the running (or last) program"),
    ("PE_BUSY", "cycles the PE array computed"),
    ("DMA_RD_BEATS", "DMA read beats delivered"),
    ("DMA_WR_BEATS", "DMA write beats sent"),
    ("STALL_RD_ADDR", "cycles arvalid waited for arready"),
    ("STALL_RD_DATA", "cycles a read burst waited for rvalid"),
    ("STALL_RD_OUT", "cycles read data waited for the load path (back-pressure)"),
    ("STALL_WR_ADDR", "cycles awvalid waited for awready"),
    ("STALL_WR_DATA", "cycles wvalid waited for wready"),
    ("STALL_WR_RESP", "cycles only write responses were awaited"),
    ("STALL_WR_IN", "cycles the write channel waited for the store path"),
    ("INSTRUCTIONS", "tile instructions dispatched to the units"),
    ("FETCH_BEATS", "DMA read beats of instruction fetch (included in DMA_RD_BEATS)"),
    ("ENGINE_WAIT_LOAD", "cycles the tile engine had no job: its next one waited for a load"),
    ("ENGINE_WAIT_STORE", "cycles the tile engine had no job: its next one waited for a drain"),
    ("ENGINE_WAIT_FETCH", "cycles the tile engine had no job: no COMPUTE was dispatched yet"),
)

#: The register map: the one definition for gateware, host driver and docs.
CSR_MAP = (
    _const("ID", 0x000, "identifies the accelerator: 0x45465452 (\"EFTR\")",
           lambda config: CSR_ID),
    _const("VERSION", 0x004, "register map version, major << 16 | minor",
           lambda config: CSR_VERSION),
    Reg("CTRL", 0x008, (
        Field("start", 0, 1, "w1p", "start the program at PROGRAM_ADDR"),
        Field("soft_reset", 1, 1, "w1p", "reset the datapath, DMA and command processor "
                                         "(not the CSRs)"),
        Field("irq_enable", 2, 1, "rw", "raise irq while IRQ_STATUS is not zero"),
        Field("clear_counters", 3, 1, "w1p", "zero the performance counters"),
    ), "control"),
    Reg("STATUS", 0x00C, (
        Field("busy", 0, 1, "ro", "a program is running (or stopping after a fault)"),
        Field("done", 1, 1, "ro", "the last program stopped at END or HOST_SYNC"),
        Field("error", 2, 1, "ro", "the last program stopped on an error"),
        Field("sync", 3, 1, "ro", "the last program stopped at a HOST_SYNC (resume at "
                                  "STOP_ADDR + 64)"),
        Field("error_code", 8, 8, "ro", "descriptor.ErrorCode of the error"),
    ), "status"),
    Reg("IRQ_STATUS", 0x010, (
        Field("done", 0, 1, "w1c", "a program stopped at END or HOST_SYNC"),
        Field("error", 1, 1, "w1c", "a program stopped on an error"),
    ), "interrupt causes (write 1 to clear)"),
    *_wide("PROGRAM_ADDR", 0x018, "byte address of the first instruction (64-byte aligned)",
           access="rw"),
    *_wide("ERROR_ADDR", 0x020, "byte address of the failing instruction, or of the DMA beat "
                                "an AXI error answered"),
    Reg("ERROR_DESC", 0x028, (
        Field("value", 0, 32, "ro", "index (from PROGRAM_ADDR) of the failing instruction; "
                                    "0xFFFFFFFF for an AXI error"),
    ), "index of the instruction that failed"),
    *_wide("STOP_ADDR", 0x030, "byte address of the END / HOST_SYNC the last program stopped "
                               "at"),
    *_wide("DRAM_BASE", 0x038, "byte address added to every DMA address: every other address "
                               "(programs, descriptors, errors) is relative to it, so a DRAM "
                               "image built from 0 runs wherever the buffer is (a board's DMA "
                               "buffer); 4 KiB aligned: bits 11:0 are ignored",
           access="rw"),
    *(_const(name, 0x040 + 4 * i, doc, (lambda attr: lambda config: getattr(config, attr))(a))
      for i, (name, a, doc) in enumerate(_CONFIG_REGS)),
    _const("FEATURES", 0x040 + 4 * len(_CONFIG_REGS),
           "bit 0 bias, bit 1 momentum, bit 2 bf16 multiplier operands", _features),
    *(r for i, (name, doc) in enumerate(COUNTERS) for r in _wide(name, 0x100 + 8 * i, doc)),
)


def _check_map(csr_map):
    offsets, names = set(), set()
    for r in csr_map:
        if r.offset % 4 or r.offset in offsets:
            raise ValueError(f"register {r.name}: offset 0x{r.offset:x} not word-aligned "
                             f"or used twice")
        if r.name in names:
            raise ValueError(f"register name {r.name} used twice")
        offsets.add(r.offset)
        names.add(r.name)
        bits = 0
        for f in r.fields:
            mask = ((1 << f.width) - 1) << f.lsb
            if bits & mask:
                raise ValueError(f"register {r.name}: field {f.name} overlaps another")
            bits |= mask


_check_map(CSR_MAP)


def reg(name, csr_map=CSR_MAP):
    """The :class:`Reg` called ``name``."""
    for r in csr_map:
        if r.name == name:
            return r
    raise KeyError(f"no register {name!r} in the CSR map")


def field(reg_name, field_name, csr_map=CSR_MAP):
    """The :class:`Field` ``field_name`` of register ``reg_name``."""
    for f in reg(reg_name, csr_map).fields:
        if f.name == field_name:
            return f
    raise KeyError(f"register {reg_name!r} has no field {field_name!r}")


def _port_name(r, f):
    if f.port is not None:
        return f.port
    return r.name.lower() if f.name == "value" else f"{r.name}_{f.name}".lower()


def csr_ports(csr_map=CSR_MAP):
    """``{port name: (access, width)}`` of the block's hardware-side ports."""
    ports = {}
    for r in csr_map:
        for f in r.fields:
            if f.access == "const":
                continue
            name = _port_name(r, f)
            width = max(ports.get(name, (None, 0))[1], f.port_lsb + f.width)
            ports[name] = (f.access, width)
    return ports


def config_value(f, config):
    """The value of const field ``f`` for ``config``."""
    return f.value(config) & ((1 << f.width) - 1)


def csr_markdown(csr_map=CSR_MAP):
    """The register map as the markdown table of docs/axi.md."""
    lines = ["| Offset | Register | Bits | Field | Access | Description |",
             "|---|---|---|---|---|---|"]
    for r in csr_map:
        for f in r.fields:
            bits = f"{f.lsb}" if f.width == 1 else f"{f.lsb + f.width - 1}:{f.lsb}"
            name = _port_name(r, f)
            if f.port is not None:
                name += f"[{f.port_lsb + f.width - 1}:{f.port_lsb}]"
            port = "" if f.access == "const" else f" (port `{name}`)"
            doc = f.doc.replace("|", "\\|")
            lines.append(f"| 0x{r.offset:03X} | {r.name} | {bits} | {f.name} | {f.access} | "
                         f"{doc}{port} |")
    return "\n".join(lines) + "\n"


class CsrBlock(wiring.Component):
    """AXI4-Lite register block generated from :data:`CSR_MAP`.

    Ports: ``bus`` (an AXI4-Lite subordinate), ``irq`` (high while ``CTRL.irq_enable`` and any
    ``IRQ_STATUS`` bit is set), and per field of the map (see :func:`csr_ports`): ``ro`` and
    ``w1c`` fields are inputs (``w1c``: a one-cycle pulse sets the bit), ``rw`` and ``w1p``
    fields outputs; 64-bit values have one port for their ``_LO`` / ``_HI`` registers.

    Responses: OKAY; DECERR for an address with no register; SLVERR for a write to a register
    without writable fields or an address that is not a multiple of 4 (nothing is written).
    ``wstrb`` selects the bytes written (``w1p`` / ``w1c`` bits too).

    Latency and throughput
    ----------------------
    AW and W are taken in either order (each held in its own register until both are there);
    the write happens the cycle after both are held, ``bvalid`` with it. A read answers
    ``rvalid`` the cycle after the ``ar`` handshake. One write and one read every two cycles.

    Parameters
    ----------
    config : AcceleratorConfig
        Gives the ``const`` registers.
    addr_width : int
        Address bits of the AXI4-Lite port (12: a 4 KiB window).
    """

    def __init__(self, config, *, addr_width=12, csr_map=CSR_MAP):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        top = max(r.offset for r in csr_map) + 4
        if not isinstance(addr_width, int) or (1 << addr_width) < top:
            raise ValueError(f"addr_width must be an integer of at least "
                             f"{(top - 1).bit_length()} bits to reach offset 0x{top - 4:x}, "
                             f"not {addr_width!r}")
        _check_map(csr_map)
        self.config = config
        self.csr_map = csr_map
        members = {"bus": In(AXI4LiteSignature(addr_width=addr_width)), "irq": Out(1)}
        for name, (access, width) in csr_ports(csr_map).items():
            members[name] = (Out if access in ("rw", "w1p") else In)(width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        # Host-visible state of rw and w1c fields, and the LO-read snapshots of wide ports.
        state = {}
        shadow = {}
        for r in self.csr_map:
            for f in r.fields:
                name = _port_name(r, f)
                if f.access in ("rw", "w1c"):
                    state[(r.name, f.name)] = Signal(f.width, name=f"{r.name}_{f.name}".lower())
                if f.access == "ro" and f.port_lsb >= 32:
                    shadow[name] = Signal(f.width, name=f"{name}_hi_snapshot")
        for r in self.csr_map:
            for f in r.fields:
                if f.access == "rw":
                    port = getattr(self, _port_name(r, f))
                    m.d.comb += port[f.port_lsb:f.port_lsb + f.width].eq(state[(r.name, f.name)])

        # -- write path: AW and W in any order ----------------------------------------------
        aw_held, w_held = Signal(), Signal()
        aw_addr = Signal(len(bus.awaddr))
        w_data, w_strb = Signal(32), Signal(4)
        m.d.comb += [bus.awready.eq(~aw_held), bus.wready.eq(~w_held)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_held.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_held.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        mask = Signal(32)
        m.d.comb += mask.eq(_byte_mask(w_strb))
        do_write = Signal()
        m.d.comb += do_write.eq(aw_held & w_held & ~bus.bvalid)
        cleared = {}  # w1c bits the host clears this cycle
        with m.If(do_write):
            m.d.sync += [aw_held.eq(0), w_held.eq(0), bus.bvalid.eq(1)]
            with m.If(aw_addr[:2] != 0):
                m.d.sync += bus.bresp.eq(Resp.SLVERR)
            with m.Else():
                with m.Switch(aw_addr[2:]):
                    for r in self.csr_map:
                        with m.Case(r.offset >> 2):
                            m.d.sync += bus.bresp.eq(Resp.OKAY if r.writable else Resp.SLVERR)
                            for f in r.fields:
                                bits = slice(f.lsb, f.lsb + f.width)
                                if f.access == "rw":
                                    s = state[(r.name, f.name)]
                                    m.d.sync += s.eq((s & ~mask[bits]) |
                                                     (w_data[bits] & mask[bits]))
                                elif f.access == "w1p":
                                    port = getattr(self, _port_name(r, f))
                                    m.d.comb += port.eq(w_data[bits] & mask[bits])
                                elif f.access == "w1c":
                                    c = Signal(f.width, name=f"{r.name}_{f.name}_clear".lower())
                                    m.d.comb += c.eq(w_data[bits] & mask[bits])
                                    cleared[(r.name, f.name)] = c
                    with m.Default():
                        m.d.sync += bus.bresp.eq(Resp.DECERR)
        for r in self.csr_map:
            for f in r.fields:
                if f.access == "w1c":
                    s = state[(r.name, f.name)]
                    port = getattr(self, _port_name(r, f))
                    c = cleared.get((r.name, f.name), Const(0, f.width))
                    # An event in the same cycle as the host's clear is kept, not lost.
                    m.d.sync += s.eq((s & ~c) | port[f.port_lsb:f.port_lsb + f.width])

        # -- read path ----------------------------------------------------------------------
        m.d.comb += bus.arready.eq(~bus.rvalid)
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.rvalid.eq(1), bus.rdata.eq(0)]
            with m.If(bus.araddr[:2] != 0):
                m.d.sync += bus.rresp.eq(Resp.SLVERR)
            with m.Else():
                with m.Switch(bus.araddr[2:]):
                    for r in self.csr_map:
                        with m.Case(r.offset >> 2):
                            m.d.sync += bus.rresp.eq(Resp.OKAY)
                            m.d.sync += self._read_value(m, r, state, shadow)
                    with m.Default():
                        m.d.sync += bus.rresp.eq(Resp.DECERR)

        irq_bits = [state[(r.name, f.name)] for r in self.csr_map for f in r.fields
                    if f.access == "w1c"]
        enable = [state[(r.name, f.name)] for r in self.csr_map for f in r.fields
                  if f.access == "rw" and f.name == "irq_enable"]
        if irq_bits and enable:
            m.d.comb += self.irq.eq(enable[0] & (sum(b.any() for b in irq_bits) != 0))
        return m

    def _read_value(self, m, r, state, shadow):
        """Statements loading ``rdata`` with register ``r`` (and taking LO snapshots)."""
        stmts = []
        for f in r.fields:
            bits = slice(f.lsb, f.lsb + f.width)
            name = _port_name(r, f)
            if f.access == "const":
                value = Const(config_value(f, self.config), f.width)
            elif f.access in ("rw", "w1c"):
                value = state[(r.name, f.name)]
            elif f.access == "w1p":
                continue
            else:  # ro
                port = getattr(self, name)
                if f.port_lsb >= 32:
                    value = shadow[name]
                else:
                    value = port[f.port_lsb:f.port_lsb + f.width]
                    if name in shadow:
                        stmts.append(shadow[name].eq(port[32:]))
            stmts.append(self.bus.rdata[bits].eq(value))
        return stmts


def _byte_mask(strb):
    from amaranth.hdl import Cat
    return Cat(strb[i].replicate(8) for i in range(len(strb)))
