"""Both DMA engines behind one AXI4 manager port ``m_axi`` — the accelerator's DRAM port.

The read half (AR, R) of ``m_axi`` belongs to :class:`~.dma_read.DmaRead`, the write half
(AW, W, B) to :class:`~.dma_write.DmaWrite`; AXI4's read and write channels are independent,
so no arbitration is needed. This is the unit the top level instantiates and the unit the
Verilator test (``tests/test_axi_dma_verilator.py``) runs against cocotbext-axi's AxiRam.
"""

from amaranth.hdl import Cat, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, flipped

from .common import command_layout
from .dma_read import DmaRead, read_beat_layout
from .dma_write import DmaWrite
from .signature import AXI4Signature

__all__ = ["Dma"]

_READ_STATUS = ("busy", "error", "error_code", "error_addr", "beats", "stall_addr",
                "stall_data", "stall_out")
_WRITE_STATUS = ("busy", "done", "error", "error_code", "error_addr", "beats", "stall_addr",
                 "stall_data", "stall_resp", "stall_in")


class Dma(wiring.Component):
    """:class:`~.dma_read.DmaRead` and :class:`~.dma_write.DmaWrite` on one AXI4 port.

    Latency and throughput are those of the two engines; they run concurrently (one read
    beat and one write beat per cycle at most).

    Members
    -------
    m_axi : Out(AXI4Signature(config.dma_data_width, config.addr_width))
    rd_cmd, rd_data, wr_cmd, wr_data : the engines' ``cmd`` / ``data`` streams
    rd_clear, wr_clear : In(1)
    abort : In(1)
        Both engines' ``abort`` (see them): drain the AXI transactions in flight safely.
    base : In(config.addr_width)
        Added to every AR and AW address (bits 11:0 ignored, so a 4 KiB-aligned offset that
        keeps every burst within its 4 KiB page): where address 0 of the commands is in the
        AXI address space. No register on the way: the engines' address outputs are.
    rd_<status>, wr_<status> : the engines' status and counter outputs (same names as the
        engines' members, e.g. ``rd_error_addr``, ``wr_stall_resp``).
    """

    def __init__(self, config, *, counter_width=64):
        self.config = config
        self.reader = DmaRead(config, counter_width=counter_width)
        self.writer = DmaWrite(config, counter_width=counter_width)
        members = {
            "m_axi": Out(AXI4Signature(data_width=config.dma_data_width,
                                       addr_width=config.addr_width)),
            "rd_cmd": In(stream.Signature(command_layout(config))),
            "rd_data": Out(stream.Signature(read_beat_layout(config))),
            "wr_cmd": In(stream.Signature(command_layout(config))),
            "rd_clear": In(1),
            "wr_clear": In(1),
            "abort": In(1),
            "base": In(config.addr_width),
        }
        members["wr_data"] = In(stream.Signature(config.dma_data_width))
        for name in _READ_STATUS:
            members[f"rd_{name}"] = Out(self.reader.signature.members[name].shape)
        for name in _WRITE_STATUS:
            members[f"wr_{name}"] = Out(self.writer.signature.members[name].shape)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = reader = self.reader
        m.submodules.writer = writer = self.writer
        wiring.connect(m, flipped(self.rd_cmd), reader.cmd)
        wiring.connect(m, reader.data, flipped(self.rd_data))
        wiring.connect(m, flipped(self.wr_cmd), writer.cmd)
        wiring.connect(m, flipped(self.wr_data), writer.data)
        for engine, sig in ((reader, reader.axi.signature), (writer, writer.axi.signature)):
            for name, member in sig.members.items():
                ours, theirs = getattr(self.m_axi, name), getattr(engine.axi, name)
                if name in ("araddr", "awaddr"):
                    m.d.comb += ours.eq(Cat(theirs[:12], theirs[12:] + self.base[12:]))
                elif member.flow == Out:
                    m.d.comb += ours.eq(theirs)
                else:
                    m.d.comb += theirs.eq(ours)
        m.d.comb += [reader.clear.eq(self.rd_clear), writer.clear.eq(self.wr_clear),
                     reader.abort.eq(self.abort), writer.abort.eq(self.abort)]
        for name in _READ_STATUS:
            m.d.comb += getattr(self, f"rd_{name}").eq(getattr(reader, name))
        for name in _WRITE_STATUS:
            m.d.comb += getattr(self, f"wr_{name}").eq(getattr(writer, name))
        return m
