"""Tile buffers: the IFM banks (Tn) and OFM/accumulator banks (Tm), each in two halves.

Each half of each bank is one :class:`~amaranth.lib.memory.Memory` with one read and one
write port (a simple dual-port block RAM). The tile engine owns the halves its job names while
the job is in flight; the loader writes and the drain reads the other halves meanwhile, so the
next tile loads and the previous one drains while this one computes (ping-pong). A load into a
half the engine owns waits (``ready`` low) instead of corrupting it. The weight banks live in
the PEs (:mod:`.pe_array`).

Latency: a read returns its word in the next cycle; a write is visible to a read of the next
cycle (and to a read of the same cycle through the transparent read port).
"""

from amaranth.hdl import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .job import addr_bits

__all__ = ["TileBuffers", "bank_load_layout"]


def bank_load_layout(banks, depth):
    """One pixel for half ``half``: word ``addr`` of every bank, ``data[j]`` into bank ``j``.

    A loader writes a whole pixel (all ``banks`` lanes) per beat, so a tile loads at the rate
    the DMA delivers it (one beat of ``floats_per_beat`` words a cycle, ``banks`` a multiple of
    it), not one word a cycle."""
    return data.StructLayout({
        "half": unsigned(1),
        "addr": unsigned(addr_bits(depth)),
        "data": data.ArrayLayout(32, banks),
    })


class TileBuffers(wiring.Component):
    """IFM and OFM banks with their port arbitration (see the module docstring).

    Members
    -------
    ifm_owned, ofm_owned : ``In(2)``
        Bit h: the tile engine's jobs in flight use half h (loads into it wait; the engine
        drives its OFM ports).
    ifm_raddr, ifm_rhalf / ifm_rdata : engine reads of IFM bank j (data one cycle later).
    ofm_raddr, ofm_rhalf / ofm_rdata, ofm_wen, ofm_waddr, ofm_whalf, ofm_wdata :
        engine reads and writes of OFM bank m.
    ifm_load, ofm_load : ``In(stream.Signature(bank_load_layout(...)))``
        Loader writes, one pixel (a word into every bank) per beat (the OFM ones carry WU's
        output gradients).
    drain_half, drain_addr / drain_data : drain reads of every OFM bank of the half the engine
        does not own (data one cycle later).
    """

    def __init__(self, cfg):
        self._cfg = cfg
        tm, tn = cfg.tm, cfg.tn
        iab, oab = addr_bits(cfg.ifm_depth), addr_bits(cfg.ofm_depth)
        super().__init__({
            "ifm_owned": In(2), "ofm_owned": In(2),
            "ifm_raddr": In(iab).array(tn), "ifm_rhalf": In(1).array(tn),
            "ifm_rdata": Out(32).array(tn),
            "ofm_raddr": In(oab).array(tm), "ofm_rhalf": In(1).array(tm),
            "ofm_rdata": Out(32).array(tm),
            "ofm_wen": In(1).array(tm), "ofm_waddr": In(oab).array(tm),
            "ofm_whalf": In(1).array(tm), "ofm_wdata": In(32).array(tm),
            "ifm_load": In(stream.Signature(bank_load_layout(tn, cfg.ifm_depth))),
            "ofm_load": In(stream.Signature(bank_load_layout(tm, cfg.ofm_depth))),
            "drain_half": In(1), "drain_addr": In(oab),
            "drain_data": Out(32).array(tm),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        il, ol = self.ifm_load.payload, self.ofm_load.payload
        m.d.comb += [
            self.ifm_load.ready.eq(~self.ifm_owned.bit_select(il.half, 1)),
            self.ofm_load.ready.eq(~self.ofm_owned.bit_select(ol.half, 1)),
        ]
        drain_half = Signal()
        m.d.sync += drain_half.eq(self.drain_half)
        for j in range(cfg.tn):
            rhalf = Signal(name=f"ifm_rhalf_d{j}")
            m.d.sync += rhalf.eq(self.ifm_rhalf[j])
            data_ = []
            for h in range(2):
                mem = Memory(shape=32, depth=cfg.ifm_depth, init=[])
                m.submodules[f"ifm{h}_{j}"] = mem
                wp = mem.write_port()
                rp = mem.read_port(transparent_for=(wp,))
                m.d.comb += [
                    rp.addr.eq(self.ifm_raddr[j]),
                    wp.addr.eq(il.addr), wp.data.eq(il.data[j]),
                    wp.en.eq(self.ifm_load.valid & self.ifm_load.ready & (il.half == h)),
                ]
                data_.append(rp.data)
            m.d.comb += self.ifm_rdata[j].eq(Mux(rhalf, data_[1], data_[0]))
        for r in range(cfg.tm):
            rhalf = Signal(name=f"ofm_rhalf_d{r}")
            m.d.sync += rhalf.eq(self.ofm_rhalf[r])
            data_ = []
            for h in range(2):
                mem = Memory(shape=32, depth=cfg.ofm_depth, init=[])
                m.submodules[f"ofm{h}_{r}"] = mem
                wp = mem.write_port()
                rp = mem.read_port(transparent_for=(wp,))
                owned = self.ofm_owned[h]
                with m.If(owned):
                    m.d.comb += [
                        rp.addr.eq(self.ofm_raddr[r]),
                        wp.addr.eq(self.ofm_waddr[r]), wp.data.eq(self.ofm_wdata[r]),
                        wp.en.eq(self.ofm_wen[r] & (self.ofm_whalf[r] == h)),
                    ]
                with m.Else():
                    m.d.comb += [
                        rp.addr.eq(self.drain_addr),
                        wp.addr.eq(ol.addr), wp.data.eq(ol.data[r]),
                        wp.en.eq(self.ofm_load.valid & self.ofm_load.ready & (ol.half == h)),
                    ]
                data_.append(rp.data)
            m.d.comb += [self.ofm_rdata[r].eq(Mux(rhalf, data_[1], data_[0])),
                         self.drain_data[r].eq(Mux(drain_half, data_[1], data_[0]))]
        return m
