"""The compute unit: runs COMPUTE instructions on the tile engine.

Takes an instruction, waits for its tokens, and hands the job to the tile engine
(:class:`ef_train_hdl.core.engine.TileEngine`); at the engine's ``done`` it gives the job's
tokens, or, if the engine refused the job, reports the engine's TileError as an ErrorCode
(:data:`ef_train_hdl.model.machine.ENGINE_ERRORS`). While one job runs the next instruction
already waits for its tokens and sits at the engine's port, so the engine takes it the cycle
it is free: no gap between jobs beyond the engine's own. Up to two jobs are in the engine (one
running, one flushing, core/addrgen.py); their tokens are given at their own ``done``.

It also says, every cycle the engine has no job, why: its next instruction waits for a token
from the loader or from the storer, or there is no instruction (performance counters).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..core.job import job_layout
from ..isa import Op
from ..model.machine import ENGINE_ERRORS
from .common import ERROR_BITS, TokenWait, dispatch_layout, give, instr_view, token_members

__all__ = ["ComputeUnit"]


class ComputeUnit(wiring.Component):
    """See the module docstring.

    Members
    -------
    instr : ``In(stream.Signature(dispatch_layout()))``
    avail_*, take_*, give_* : token ports.
    job : ``Out(stream.Signature(job_layout(cfg)))``
        To the tile engine.
    engine_done : ``In(1)``, engine_error : ``In(4)``
        The engine's ``done`` pulse and ``error``.
    busy, waiting : ``Out(1)``
    error : ``Out(1)``
        A one-cycle pulse: the engine refused a job; ``error_code`` / ``error_index`` say
        which and why.
    idle_wait_load, idle_wait_store, idle_empty : ``Out(1)``
        Engine idle this cycle, and why.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "instr": In(stream.Signature(dispatch_layout())),
            **token_members("compute"),
            "job": Out(stream.Signature(job_layout(cfg))),
            "engine_done": In(1),
            "engine_error": In(4),
            "busy": Out(1),
            "waiting": Out(1),
            "error": Out(1),
            "error_code": Out(ERROR_BITS),
            "error_index": Out(32),
            "idle_wait_load": Out(1),
            "idle_wait_store": Out(1),
            "idle_empty": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        view = instr_view(self.instr.payload.bits, Op.COMPUTE)
        tokens = TokenWait(self, "compute", view)
        pending = Signal()
        p_flags = Signal(2)         # signal_load, signal_store of the pending job
        p_index = Signal(32)
        # Jobs in the engine (one running, one flushing), oldest first: their flags and
        # indices, popped at each ``done`` (the engine reports in order).
        inflight = fifo.SyncFIFO(width=34, depth=2)
        m.submodules.inflight = inflight

        can = self.instr.valid & tokens.ready() & ~pending
        m.d.comb += [self.instr.ready.eq(can),
                     # Waiting: blocked on tokens with nothing else under way (watchdog).
                     self.waiting.eq(self.instr.valid & ~pending & ~inflight.r_rdy &
                                     ~tokens.ready())]
        tokens.take(m, can)
        job = self.job.payload
        with m.If(can):
            m.d.sync += [
                pending.eq(1), p_index.eq(self.instr.payload.index),
                p_flags.eq(Cat(view.signal_load, view.signal_store)),
                job.phase.as_value().eq(view.phase), job.kernel.eq(view.kernel),
                job.stride.eq(view.stride), job.in_rows.eq(view.in_rows),
                job.in_cols.eq(view.in_cols), job.out_rows.eq(view.out_rows),
                job.out_cols.eq(view.out_cols), job.row_off.eq(view.row_off),
                job.col_off.eq(view.col_off), job.ifm_half.eq(view.ifm_half),
                job.ofm_half.eq(view.ofm_half), job.ifm_base.eq(view.ifm_base),
                job.w_base.eq(view.w_base), job.ofm_base.eq(view.ofm_base),
                job.term_base.eq(view.term_base), job.log2_p.eq(view.log2_p),
                job.bias.eq(view.bias), job.bias_addr.eq(view.bias_addr),
                job.ones.eq(view.ones),
            ]
        m.d.comb += self.job.valid.eq(pending & inflight.w_rdy)
        accepted = self.job.valid & self.job.ready
        m.d.comb += [inflight.w_en.eq(accepted), inflight.w_data.eq(Cat(p_flags, p_index))]
        with m.If(accepted):
            m.d.sync += pending.eq(0)
        done = self.engine_done & inflight.r_rdy
        f_flags, f_index = inflight.r_data[:2], inflight.r_data[2:]
        m.d.comb += inflight.r_en.eq(done)
        ok = self.engine_error == 0
        m.d.comb += [self.give_load.eq(done & ok & f_flags[0]),
                     self.give_store.eq(done & ok & f_flags[1]),
                     self.error.eq(done & ~ok), self.error_index.eq(f_index)]
        code = Const(0, ERROR_BITS)
        for tile_error, err in ENGINE_ERRORS.items():
            code = Mux(self.engine_error == tile_error, err, code)
        m.d.comb += self.error_code.eq(code)
        m.d.comb += self.busy.eq(pending | inflight.r_rdy)

        idle = ~inflight.r_rdy & ~pending
        short_load = self.avail_load < view.wait_load
        m.d.comb += [
            self.idle_wait_load.eq(idle & self.instr.valid & short_load),
            self.idle_wait_store.eq(idle & self.instr.valid & ~short_load & ~tokens.ready()),
            self.idle_empty.eq(idle & ~self.instr.valid),
        ]
        return m

