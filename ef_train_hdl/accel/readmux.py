"""The DRAM read router: several clients share the one DMA read engine, none can block another.

Clients (the instruction fetcher, the loader's three streams, the storer's SGD streams) send
read requests ``{addr, length}`` (word address, words) on their own ``req`` stream and receive
the words on their own ``data`` stream, in request order. The router passes a request to the
DMA read engine only when that client's FIFO has room for all of its beats, reserving the
room; the engine returns data in command order, a tag FIFO says whose it is, and every beat
lands in space kept for it. So the DMA's data channel never waits for a slow client, and a
client that stops consuming (a loader waiting for its next token, a join waiting for its
other stream) holds up only itself: no head-of-line blocking, no deadlock between clients.

A client must not ask for more beats than its FIFO holds in one request (it splits a long run
into pieces; :func:`piece_words`). Arbitration is round robin among clients whose request
fits.

Latency: a request reaches ``dma_cmd`` the cycle after it is granted (registered), a
``sliced`` client's one cycle later (its register slice). Data goes
from ``dma_data`` into the client's FIFO in one cycle and out of it the next.
Throughput: one request per cycle, one data beat per cycle.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from ..axi.common import command_layout
from ..axi.dma_read import read_beat_layout
from .gearbox import Skid

__all__ = ["ReadRouter", "piece_words"]


def piece_words(cfg, depth_beats):
    """Largest request (words) for a FIFO of ``depth_beats``: half of it, so that two
    requests can be in flight (one arriving while the other is consumed)."""
    return max(1, depth_beats // 2) * cfg.floats_per_beat


class ReadRouter(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    cfg : AcceleratorConfig
    clients : dict
        ``{name: fifo_depth_beats}`` in priority order for round robin's first turn.
    sliced : iterable of str
        Clients whose requests pass a register slice (:class:`~.gearbox.Skid`) on the way in:
        one cycle more from request to ``dma_cmd``, no combinational path from the client's
        request logic through the grant. Only for clients that never take a request back:
        the instruction fetcher withdraws its prefetch at the end of a program, which a
        slice would already have latched (and read past the program). Not the loader's
        streams either: with a slice the loader queues two pieces a stream ahead, and in the
        batch-1 FC weight update of the small CNN on the tiny array its reads then crowd out
        the storer's SGD reads (6,644 cycles became 7,453).

    Members
    -------
    req_<name> : ``In(stream.Signature(command_layout(cfg)))``
    data_<name> : ``Out(stream.Signature(read_beat_layout(cfg)))``
    dma_cmd : ``Out(stream.Signature(command_layout(cfg)))``
    dma_data : ``In(stream.Signature(read_beat_layout(cfg)))``
    beats_<name> : ``Out(32)``
        Free-running count of the beats delivered to the client (a performance counter).
    """

    def __init__(self, cfg, clients, sliced=()):
        if not clients:
            raise ValueError("a ReadRouter needs at least one client")
        for name, depth in clients.items():
            if not isinstance(depth, int) or depth < 2:
                raise ValueError(f"client {name!r}: FIFO depth must be an integer >= 2 "
                                 f"beats, not {depth!r}")
        self.cfg = cfg
        self.clients = dict(clients)
        self.sliced = frozenset(sliced)
        unknown = self.sliced - set(self.clients)
        if unknown:
            raise ValueError(f"sliced names clients that do not exist: {sorted(unknown)}; "
                             f"the clients are {list(self.clients)}")
        members = {
            "dma_cmd": Out(stream.Signature(command_layout(cfg))),
            "dma_data": In(stream.Signature(read_beat_layout(cfg))),
        }
        for name in clients:
            members[f"req_{name}"] = In(stream.Signature(command_layout(cfg)))
            members[f"data_{name}"] = Out(stream.Signature(read_beat_layout(cfg)))
            members[f"beats_{name}"] = Out(32)
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        names = list(self.clients)
        n = len(names)
        lg_f = exact_log2(cfg.floats_per_beat)
        beat_layout = read_beat_layout(cfg)

        # -- per client: FIFO and credits -------------------------------------------------
        free, fifos, wants, beats_of, reqs = [], [], [], [], []
        for i, name in enumerate(names):
            depth = self.clients[name]
            f = fifo.SyncFIFOBuffered(width=beat_layout.size, depth=depth)
            m.submodules[f"fifo_{name}"] = f
            fifos.append(f)
            out = getattr(self, f"data_{name}")
            m.d.comb += [out.payload.eq(f.r_data), out.valid.eq(f.r_rdy),
                         f.r_en.eq(out.ready)]
            with m.If(out.valid & out.ready):
                m.d.sync += getattr(self, f"beats_{name}").eq(
                    getattr(self, f"beats_{name}") + 1)
            # A ``sliced`` client's request goes through a register slice, its beat count
            # worked out on the way in: the grant then starts from flip-flops, and the
            # client's ready is one (before it a 16-LUT path ran from the storer's request
            # through the grant into the loader's issue state).
            port = getattr(self, f"req_{name}")
            held = data.StructLayout({
                "cmd": command_layout(cfg),
                "beats": unsigned(len(port.payload.length) + 1)})
            if name in self.sliced:
                skid = m.submodules[f"req_skid_{name}"] = Skid(held)
            else:
                skid = m.submodules[f"req_pass_{name}"] = _Pass(held)
            m.d.comb += [skid.i.valid.eq(port.valid), skid.i.payload.cmd.eq(port.payload),
                         skid.i.payload.beats.eq(
                             (port.payload.length + cfg.floats_per_beat - 1) >> lg_f),
                         port.ready.eq(skid.i.ready)]
            req = skid.o
            reqs.append(req)
            beats = req.payload.beats
            beats_of.append(beats)
            credit = Signal(range(depth + 1), init=depth, name=f"credit_{name}")
            free.append(credit)
            wants.append(req.valid & (beats <= credit))

        # -- grant: round robin, into a registered command --------------------------------
        # One tag per command in flight: the DMA's bursts in flight (a command is one burst
        # or more) and the commands queued in front of them.
        tags = fifo.SyncFIFOBuffered(width=max(1, ceil_log2(n)),
                                     depth=max(16, cfg.max_outstanding_reads + 4))
        m.submodules.tags = tags
        cmd_full = Signal()
        take = ~cmd_full | self.dma_cmd.ready
        m.d.comb += [self.dma_cmd.valid.eq(cmd_full)]
        with m.If(self.dma_cmd.valid & self.dma_cmd.ready):
            m.d.sync += cmd_full.eq(0)
        last = Signal(range(n), init=n - 1)
        grant = Signal(range(n + 1))
        granted = Signal()
        # Round robin: the first wanting client after ``last``.
        m.d.comb += [grant.eq(n), granted.eq(0)]
        for offset in reversed(range(1, n + 1)):
            idx = Signal(range(n), name=f"rr{offset}")
            m.d.comb += idx.eq(Mux(last + offset >= n, last + offset - n, last + offset))
            want = Cat(*wants).bit_select(idx, 1)
            with m.If(want):
                m.d.comb += [grant.eq(idx), granted.eq(1)]
        do_grant = granted & take & tags.w_rdy
        m.d.comb += [tags.w_en.eq(do_grant), tags.w_data.eq(grant)]
        with m.If(do_grant):
            m.d.sync += [cmd_full.eq(1), last.eq(grant)]
        for i, name in enumerate(names):
            req = reqs[i]
            chosen = do_grant & (grant == i)
            m.d.comb += req.ready.eq(chosen)
            with m.If(chosen):
                m.d.sync += self.dma_cmd.payload.eq(req.payload.cmd)
            popped = fifos[i].r_en & fifos[i].r_rdy
            # Both outcomes worked out beside the grant, which then only selects one.
            m.d.sync += free[i].eq(Mux(chosen, free[i] - beats_of[i] + popped,
                                       free[i] + popped))

        # -- data: to the FIFO of the command's client --------------------------------------
        m.d.comb += [self.dma_data.ready.eq(tags.r_rdy), tags.r_en.eq(
            self.dma_data.valid & tags.r_rdy & self.dma_data.payload.last)]
        for i in range(n):
            m.d.comb += [fifos[i].w_data.eq(self.dma_data.payload),
                         fifos[i].w_en.eq(self.dma_data.valid & tags.r_rdy &
                                          (tags.r_data == i))]
        return m


class _Pass(wiring.Component):
    """A stream straight through (an unsliced client)."""

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid),
                     self.i.ready.eq(self.o.ready)]
        return m
