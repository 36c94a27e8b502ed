"""The tile engine: address generator + PE array + tile buffers + drain, as one component.

Where it sits: the command processor (issue 5) turns a descriptor into loads, compute jobs
and drain jobs; the loaders write tiles into the buffers' free halves through ``ifm_load``,
``ofm_load`` (WU output gradients) and ``w_load``; the engine runs one compute job at a time
on the halves the job names; the drain reads finished results from the other halves (or, after
WU, the weight banks) and streams them to the store path (post-ops, then DMA).

Latency and throughput: a compute job costs ``setup + ops + flush`` cycles, where ``ops`` is
one per MAC step of the PE array (Tm x Tn MACs each), setup is 2 cycles of checks plus 4 per
stride phase (and 1 for a bias), and ``flush`` is the PE array's depth. The flush overlaps
the next job when it has the same phase (addrgen.py), so a chain of jobs costs its setups
and operations plus one flush. ``model.tiles.job_cycles`` / ``jobs_cycles`` give the figures;
``bench core`` measures them.
Counters: ``cycles_active`` (a job in the engine), ``cycles_busy`` (operations issued: every
PE did a MAC) — utilisation is their ratio.
"""

from amaranth.hdl import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .addrgen import AddressGenerator
from .buffers import TileBuffers, bank_load_layout
from .drain import Drain, drain_beat_layout
from .job import TileError, drain_layout, job_layout
from .pe_array import PeArray, weight_load_layout

__all__ = ["TileEngine", "job_overhead"]


def job_overhead(cfg, stride_phases=1, bias=False):
    """Cycles a job spends outside its operations (:meth:`AcceleratorConfig.job_overhead`)."""
    return cfg.job_overhead(stride_phases, bias)


class TileEngine(wiring.Component):
    """See the module docstring.

    Members
    -------
    job : ``In(stream.Signature(job_layout(cfg)))``
    drain_job : ``In(stream.Signature(drain_layout(cfg)))``
    out : ``Out(stream.Signature(drain_beat_layout(cfg)))``
    ifm_load, ofm_load, w_load : ``In(stream.Signature(...))`` loader writes.
    done : ``Out(1)``
        Pulse: a compute job finished (its results are in the buffers) or was refused.
    error, drain_error : ``Out(TileError)``
        Why the last compute / drain job was refused.
    busy, drain_busy : ``Out(1)``
    cycles_active, cycles_busy : ``Out(32)``
        Free-running counters (see the module docstring).
    issuing : ``Out(1)``
        This cycle every PE does a MAC (what ``cycles_busy`` counts).
    """

    def __init__(self, cfg):
        self._cfg = cfg
        super().__init__({
            "job": In(stream.Signature(job_layout(cfg))),
            "drain_job": In(stream.Signature(drain_layout(cfg))),
            "out": Out(stream.Signature(drain_beat_layout(cfg))),
            "ifm_load": In(stream.Signature(bank_load_layout(cfg.tn, cfg.ifm_depth))),
            "ofm_load": In(stream.Signature(bank_load_layout(cfg.tm, cfg.ofm_depth))),
            "w_load": In(stream.Signature(weight_load_layout(cfg))),
            "done": Out(1),
            "error": Out(TileError),
            "drain_error": Out(TileError),
            "busy": Out(1),
            "drain_busy": Out(1),
            "cycles_active": Out(32),
            "cycles_busy": Out(32),
            "issuing": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        tm, tn = cfg.tm, cfg.tn
        m = Module()
        array = m.submodules.array = PeArray(cfg)
        gen = m.submodules.addrgen = AddressGenerator(cfg, flush=array.depth)
        bufs = m.submodules.buffers = TileBuffers(cfg)
        drain = m.submodules.drain = Drain(cfg)

        wiring.connect(m, wiring.flipped(self.job), gen.job)
        wiring.connect(m, wiring.flipped(self.drain_job), drain.job)
        wiring.connect(m, drain.out, wiring.flipped(self.out))
        wiring.connect(m, wiring.flipped(self.ifm_load), bufs.ifm_load)
        wiring.connect(m, wiring.flipped(self.ofm_load), bufs.ofm_load)
        wiring.connect(m, wiring.flipped(self.w_load), array.w_load)

        # The halves the jobs in flight (running, and flushing) own.
        m.d.comb += [
            array.phase.eq(gen.phase), array.w_owned.eq(gen.w_owned), array.ctrl.eq(gen.ctrl),
            bufs.ifm_owned.eq(gen.ifm_owned), bufs.ofm_owned.eq(gen.ofm_owned),
            drain.engine_w_owned.eq(gen.w_owned), drain.engine_ofm_owned.eq(gen.ofm_owned),
            bufs.drain_half.eq(drain.ofm_half), bufs.drain_addr.eq(drain.ofm_addr),
            array.w_drain_addr.eq(drain.w_addr),
            self.done.eq(gen.done), self.error.eq(gen.error), self.busy.eq(gen.busy),
            self.drain_error.eq(drain.error), self.drain_busy.eq(drain.busy),
            self.issuing.eq(gen.issuing),
        ]
        for j in range(tn):
            m.d.comb += [bufs.ifm_raddr[j].eq(array.ifm_raddr[j]),
                         bufs.ifm_rhalf[j].eq(array.ifm_rhalf[j]),
                         array.ifm_rdata[j].eq(bufs.ifm_rdata[j])]
        for r in range(tm):
            m.d.comb += [bufs.ofm_raddr[r].eq(array.ofm_raddr[r]),
                         bufs.ofm_rhalf[r].eq(array.ofm_rhalf[r]),
                         array.ofm_rdata[r].eq(bufs.ofm_rdata[r]),
                         bufs.ofm_wen[r].eq(array.ofm_wen[r]),
                         bufs.ofm_waddr[r].eq(array.ofm_waddr[r]),
                         bufs.ofm_whalf[r].eq(array.ofm_whalf[r]),
                         bufs.ofm_wdata[r].eq(array.ofm_wdata[r]),
                         drain.ofm_data[r].eq(bufs.drain_data[r])]
            for j in range(tn):
                m.d.comb += drain.w_data[r][j].eq(array.w_drain_data[r][j])
        with m.If(gen.busy):
            m.d.sync += self.cycles_active.eq(self.cycles_active + 1)
        with m.If(gen.issuing):
            m.d.sync += self.cycles_busy.eq(self.cycles_busy + 1)
        return m
