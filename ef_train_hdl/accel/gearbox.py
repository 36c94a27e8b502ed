"""Width converters between DMA beats and pixels (:class:`Widen`, :class:`Narrow`), and a
register slice that cuts a stream's combinational valid/ready path (:class:`Skid`).

A DMA beat carries ``floats_per_beat`` words; a pixel of the tile buffers Tn (or Tm) words, a
whole multiple of it (lower.check_config). The loader widens ``factor`` beats into one pixel
word by word in address order (the first beat is the low words); the storer narrows a pixel
into beats. Both pass one beat per cycle with no bubble: full DMA bandwidth.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Widen", "Narrow", "Skid", "words"]


def words(n, width=32):
    """``n`` words of ``width`` bits: the payload of a beat or a pixel."""
    return data.ArrayLayout(width, n)


class Widen(wiring.Component):
    """``factor`` beats of ``lanes`` words -> one beat of ``lanes * factor`` words.

    Latency: the wide beat is valid the cycle after its last narrow beat is taken.
    Throughput: one narrow beat per cycle (the last one of a wide beat waits while ``o`` is
    full and not ready). With ``factor == 1`` it is a register stage.

    Members
    -------
    i : ``In(stream.Signature(words(lanes, width)))``
    o : ``Out(stream.Signature(words(lanes * factor, width)))``
    """

    def __init__(self, lanes, factor, width=32):
        for name, v in (("lanes", lanes), ("factor", factor)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        self.lanes, self.factor, self.width = lanes, factor, width
        super().__init__({
            "i": In(stream.Signature(words(lanes, width))),
            "o": Out(stream.Signature(words(lanes * factor, width))),
        })

    def elaborate(self, platform):
        m = Module()
        f, n = self.factor, self.lanes
        count = Signal(range(max(2, f)))
        hold = Signal(words(n * f, self.width))
        space = ~self.o.valid | self.o.ready
        last = count == f - 1
        m.d.comb += self.i.ready.eq(~last | space)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.Switch(count):
                for k in range(f):
                    with m.Case(k):
                        for lane in range(n):
                            if k == f - 1:
                                m.d.sync += self.o.payload[k * n + lane].eq(
                                    self.i.payload[lane])
                            else:
                                m.d.sync += hold[k * n + lane].eq(self.i.payload[lane])
            with m.If(last):
                m.d.sync += [count.eq(0), self.o.valid.eq(1)]
                for k in range(f - 1):
                    for lane in range(n):
                        m.d.sync += self.o.payload[k * n + lane].eq(hold[k * n + lane])
            with m.Else():
                m.d.sync += count.eq(count + 1)
        return m


class Narrow(wiring.Component):
    """One beat of ``lanes * factor`` words -> ``factor`` beats of ``lanes`` words, the low
    words first.

    Latency 0 (the first narrow beat is combinational from the wide one); throughput one
    narrow beat per cycle.

    Members
    -------
    i : ``In(stream.Signature(words(lanes * factor, width)))``
    o : ``Out(stream.Signature(words(lanes, width)))``
    """

    def __init__(self, lanes, factor, width=32):
        for name, v in (("lanes", lanes), ("factor", factor)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        self.lanes, self.factor, self.width = lanes, factor, width
        super().__init__({
            "i": In(stream.Signature(words(lanes * factor, width))),
            "o": Out(stream.Signature(words(lanes, width))),
        })

    def elaborate(self, platform):
        m = Module()
        f, n = self.factor, self.lanes
        count = Signal(range(max(2, f)))
        m.d.comb += self.o.valid.eq(self.i.valid)
        with m.Switch(count):
            for k in range(f):
                with m.Case(k):
                    for lane in range(n):
                        m.d.comb += self.o.payload[lane].eq(self.i.payload[k * n + lane])
        last = count == f - 1
        m.d.comb += self.i.ready.eq(self.o.ready & last)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += count.eq(0 if f == 1 else count + 1)
            with m.If(last):
                m.d.sync += count.eq(0)
        return m


class Skid(wiring.Component):
    """A register slice (skid buffer): ``i`` -> ``o`` with ``o.valid``, ``o.payload`` and
    ``i.ready`` all straight from flip-flops, so no combinational path crosses it either way.

    Latency one cycle; throughput one transfer a cycle while ``o`` is ready. When ``o`` stalls
    the word in flight goes into the skid register (nothing is lost); the cycle the skid
    empties into ``o``, ``i`` is not ready.

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(shape))``
    busy : ``Out(1)``
        A word is held (in ``o`` or in the skid register).
    """

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape)),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self.shape)
        skid_valid = Signal()
        m.d.comb += [self.i.ready.eq(~skid_valid), self.busy.eq(self.o.valid | skid_valid)]
        with m.If(~self.o.valid | self.o.ready):
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m
