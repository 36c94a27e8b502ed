"""Address generator: turns one tile job into the PE array's operations, one per cycle.

All the transposing, flipping, striding and padding of docs/numerics.md sections 5-7 happens
here, as index arithmetic on the buffers; no data is rearranged anywhere.

Loop nests (outer to inner), each level stepping every quantity by a fixed increment:

====  ============================================  =========================================
FP    kernel row, kernel column, output row, column  one weight word per tap, all pixels
BP    stride phase; flipped kernel row, column of    taps of matching parity only (index
      the phase; input-gradient rows, columns of     arithmetic, no zero insertion); a phase
      the phase                                      with no tap writes +0 (``null``)
WU    output row, column; kernel row, column         a PE cycles through its K*K taps
====  ============================================  =========================================

A quantity (activation row/column and linear address, weight word, pixel, term index) keeps
its value at the start of the current iteration of each of the four levels; stepping level
``l`` sets levels ``l..3`` to that start plus level ``l``'s increment. So every address is an
addition per cycle, no multiplier in the loop; the few products (start row times width, the
group's term base) are made once per job or stride phase, in registered setup steps.

Every result is P partial sums in consecutive words, and the drain adds all P. A slot no term
reaches must therefore hold +0, not what an earlier tile left in the buffer: when the first job
of a chain (``term_base == 0``) brings fewer terms per result than P (FP/BP: taps of the phase;
WU: pixels of the tile; e.g. a fully connected layer, whose P is 8, at batch 1), the phase
starts with a *fill pass* of null operations that writes +0 into all P slots of each result
(P x pixels operations, or P x taps in WU), then runs its real pass. Later jobs reach the
remaining slots with their first terms, which overwrite the +0. Null operations (fill passes
and tapless BP phases) are not counted as busy cycles.

Latency and throughput: a job is checked in 2 cycles (a refused one
ends in a third), each stride phase set up in 4 (a fill pass in 2; a phase with nothing to
issue takes 5 in all), then one operation per cycle with no gap until the phase ends; a FP job
with a bias adds one preamble cycle. The next phase's set-up starts the cycle after a phase's
last operation. After the job's last operation its ``flush`` (the PE array's depth, plus 2)
runs in the *background*: in that same cycle the generator takes the next job if it is
waiting and of the same phase (the PE array's mode does not change under operations in
flight), so back-to-back jobs are 6 cycles apart plus their operations; the first job's
``done`` comes when its last write has landed. Consecutive jobs of one tile continue one reduction
(``term_base``), so the P rule that keeps a slot's revisits ``L`` cycles apart inside a job
keeps them apart across the boundary too; jobs of different tiles use different halves or
regions, which the command processor orders with tokens. At most one job flushes in the
background; ``done`` pulses come in the order the jobs were taken (a refused job waits for the
flush before it reports).
"""

from amaranth.hdl import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import ACC_LOOP_LATENCY
from .job import Phase, TileError, ctrl_layout, job_layout

__all__ = ["AddressGenerator"]

_QW = 9                 # saturating term counter: only "below P (<= 8)" and the slot matter
_QMAX = (1 << _QW) - 1


class AddressGenerator(wiring.Component):
    """Issues the operations of one compute job at a time (see the module docstring).

    Parameters
    ----------
    cfg : AcceleratorConfig
    flush : int
        Cycles from the last operation until all of its writes have landed.

    Members
    -------
    job : ``In(stream.Signature(job_layout(cfg)))``
        Jobs; one is taken when the previous one is done.
    ctrl : ``Out(ctrl_layout(cfg))``
        The operation of this cycle (``valid`` low in bubbles), registered.
    phase : ``Out(Phase)``
        The phase of the job in flight (the PE array's mode; stable until ``done``).
    busy : ``Out(1)``
        A job is being set up, issued or flushed (in the foreground or the background).
    done : ``Out(1)``
        One-cycle pulse: a job has finished (or was refused, see ``error``), in order.
    error : ``Out(TileError)``
        With ``done``: why that job was refused (``NONE`` if it ran).
    ifm_owned, ofm_owned : ``Out(2)``
        Bit h: a job in flight (foreground or flushing) reads IFM half h / uses OFM half h;
        the buffers keep loader and drain away from them.
    w_owned : ``Out(2)``
        Bit s: a job in flight reads (FP/BP weights, bias) or accumulates into (WU) weight
        region s, the half ``s`` of the weight banks' words.
    issuing : ``Out(1)``
        ``ctrl.valid`` this cycle: one MAC per PE (the busy-cycle counter's input).
    """

    def __init__(self, cfg, flush):
        self._cfg = cfg
        self._flush = int(flush)
        super().__init__({
            "job": In(stream.Signature(job_layout(cfg))),
            "ctrl": Out(ctrl_layout(cfg)),
            "phase": Out(Phase),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(TileError),
            "issuing": Out(1),
            "ifm_owned": Out(2),
            "ofm_owned": Out(2),
            "w_owned": Out(2),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        aw = 28
        job = Signal(job_layout(cfg))
        ph = Signal(2)                      # stride phase (py, px) = (ph[1], ph[0])
        p = Signal(4)                       # P
        m.d.comb += p.eq(1 << job.log2_p)
        s2 = job.stride == 2                # stride is 1 or 2 (checked)
        bp = job.phase == Phase.BP
        wu = job.phase == Phase.WU
        k = job.kernel

        # -- checks (2 registered steps) ------------------------------------------------------
        area_in = Signal(2 * 17)
        area_out = Signal(2 * 17)
        kk = Signal(8)
        m.d.sync += [area_in.eq(job.in_rows * job.in_cols),
                     area_out.eq(job.out_rows * job.out_cols),
                     kk.eq(k * k)]
        # The checks in their order, in two registered steps: those of the job's fields alone
        # (``err_early``, with the room each buffer has above the job's base) in CHECK0, the
        # ones that need the products in CHECK1, each a single comparison with a room.
        err_early = Signal(TileError)
        early = Const(TileError.NONE, TileError)
        for cond, code in reversed([
                (job.phase.as_value() == 3, TileError.PHASE),
                ((k == 0) | (k > cfg.k_max), TileError.KERNEL),
                ((job.stride == 0) | (job.stride > cfg.stride_max), TileError.STRIDE),
                ((job.in_rows == 0) | (job.in_cols == 0) | (job.out_rows == 0) |
                 (job.out_cols == 0), TileError.SHAPE),
                (p > cfg.acc_interleave, TileError.INTERLEAVE)]):
            early = Mux(cond, code, early)
        room_bits = max(len(job.ifm_base), len(job.w_base), len(job.ofm_base)) + 2
        ifm_room, w_room, ofm_room = (Signal(signed(room_bits), name=f"{n}_room")
                                      for n in ("ifm", "w", "ofm"))
        early_regs = [err_early.eq(early), ifm_room.eq(cfg.ifm_depth - job.ifm_base),
                      w_room.eq(cfg.weight_depth - job.w_base),
                      ofm_room.eq(cfg.ofm_depth - job.ofm_base)]
        err = Signal(TileError)
        with m.If(err_early != TileError.NONE):
            m.d.comb += err.eq(err_early)
        with m.Elif(((job.phase == Phase.FP) & ((area_out << job.log2_p) < ACC_LOOP_LATENCY)) |
                    (wu & ((kk << job.log2_p) < ACC_LOOP_LATENCY))):
            m.d.comb += err.eq(TileError.INTERLEAVE)
        with m.Elif(area_in > ifm_room):
            m.d.comb += err.eq(TileError.IFM_RANGE)
        with m.Elif(Mux(wu, kk << job.log2_p, kk) > w_room):
            m.d.comb += err.eq(TileError.WEIGHT_RANGE)
        with m.Elif(Mux(wu, area_out, area_out << job.log2_p) > ofm_room):
            m.d.comb += err.eq(TileError.OFM_RANGE)

        # -- stride-phase setup (3 registered steps) -------------------------------------------
        py, px = Mux(bp & s2, ph[1], 0), Mux(bp & s2, ph[0], 0)
        # A: first pixel of the phase, first (flipped) tap of its parity, counts.
        y0, x0 = Signal(1), Signal(1)
        kyf, kxf = Signal(signed(6)), Signal(signed(6))
        n = [Signal(18, name=f"n{i}") for i in range(4)]
        npy, npx, nty, ntx = Signal(18), Signal(18), Signal(5), Signal(5)
        # B: start values, products.
        r0, c0 = Signal(signed(aw)), Signal(signed(aw))
        w0 = Signal(signed(aw))
        pix0 = Signal(signed(aw))
        ntaps = Signal(8)
        gq = Signal(_QW + 8)           # group x taps, saturated: the term index q at start
        gq_lo = Signal(3)              # ... modulo 8 (the slot), exact
        # C: linear start address; counts and increments per level.
        ia0 = Signal(signed(aw))
        null = Signal()
        skip = Signal()
        hazard = Signal()
        # Slot fill: a pass of null operations that writes +0 into every partial-sum slot
        # before the real pass of a chain's first job, when the job has fewer terms than
        # there are slots (see the module docstring); ``filled`` once it has run this phase.
        fill = Signal()
        filled = Signal()

        def parity_start(offset, parity):
            return Mux(s2, parity ^ offset[0], 0)

        def first_tap(par):
            return Mux(s2, k - 1 - ((k - 1 - par) & 1), k - 1)

        # Per-level increments of each quantity: (r, c, ia, w, pix, q).
        s_ = Mux(s2, 2, 1)
        cols = job.in_cols
        ocols = job.out_cols
        inc = {name: [Signal(signed(aw), name=f"inc_{name}{i}") for i in range(4)]
               for name in ("r", "c", "ia", "w", "pix", "q")}

        # -- loop state ------------------------------------------------------------------------
        names = ("r", "c", "ia", "w", "pix", "qs", "ql")
        save = {name: [Signal(signed(aw), name=f"{name}_l{i}") for i in range(4)]
                for name in names}
        idx = [Signal(18, name=f"i{i}") for i in range(4)]
        # ``last[i]``: level i is at its last count (idx == n - 1), kept in flip-flops: set
        # from ``n_is_1`` when the levels restart and from ``idx == n - 2`` when a level steps,
        # so that the loop's step decisions start at registers, not at subtract-and-compare.
        last = [Signal(name=f"last{i}") for i in range(4)]
        n_m2 = [Signal(signed(19), name=f"n{i}_m2") for i in range(4)]
        n_is_1 = [Signal(name=f"n{i}_is_1") for i in range(4)]
        # The background flush of the previous job: its halves, phase and error, and the
        # cycles until its last write lands.
        bg_active = Signal()
        bg_count = Signal(range(self._flush + 2))
        bg_phase = Signal(2)
        bg_ifm, bg_ofm = Signal(), Signal()
        bg_error = Signal(TileError)
        bg_w, fg_w = Signal(2), Signal(2)   # the weight regions of the two jobs
        fg = Signal()                       # a job in the foreground (checks .. last op)
        job_error = Signal(TileError)       # the foreground job's
        self._debug = {"n": n, "idx": idx}

        ctrl = Signal(ctrl_layout(cfg))
        m.d.sync += self.ctrl.eq(ctrl)
        # Busy cycles count MACs that add a term, not the +0 writes of null operations.
        m.d.comb += [self.phase.eq(job.phase),
                     self.issuing.eq(self.ctrl.valid & ~self.ctrl.null),
                     self.busy.eq(fg | bg_active)]
        m.d.comb += self.w_owned.eq(Mux(fg, fg_w, 0) | Mux(bg_active, bg_w, 0))
        for h in range(2):
            m.d.comb += [
                self.ifm_owned[h].eq((fg & (job.ifm_half == h)) | (bg_active & (bg_ifm == h))),
                self.ofm_owned[h].eq((fg & (job.ofm_half == h)) | (bg_active & (bg_ofm == h))),
            ]

        # -- background flush: done (with the job's error) when its count runs out ----------
        bg_done = Signal()
        m.d.comb += bg_done.eq(bg_active & (bg_count == 0))
        with m.If(bg_active & (bg_count != 0)):
            m.d.sync += bg_count.eq(bg_count - 1)
        with m.If(bg_done):
            m.d.sync += bg_active.eq(0)
        refuse_done = Signal()
        m.d.comb += [self.done.eq(bg_done | refuse_done),
                     self.error.eq(Mux(bg_done, bg_error, job_error))]

        def to_background(direct=False):
            """Statements moving the foreground job's flush to the background slot: from the
            cycle of its last operation (``direct``), or a cycle or more later from FLUSH.
            Either way its ``done`` comes ``flush + 2`` cycles after that operation, or
            later (as when FLUSH and IDLE followed every job)."""
            count = self._flush + 1 if direct else self._flush
            return [bg_active.eq(1), bg_count.eq(count), bg_phase.eq(job.phase),
                    bg_ifm.eq(job.ifm_half), bg_ofm.eq(job.ofm_half), bg_error.eq(job_error),
                    bg_w.eq(fg_w)]

        with m.FSM():
            with m.State("IDLE"):
                # With a job flushing in the background, only one of the same phase.
                incoming = self.job.payload.phase.as_value()
                m.d.comb += self.job.ready.eq(~bg_active | bg_done | (incoming == bg_phase))
                with m.If(self.job.valid & self.job.ready):
                    m.d.sync += [job.eq(self.job.payload), job_error.eq(TileError.NONE),
                                 fg.eq(1)]
                    m.next = "CHECK0"
            with m.State("CHECK0"):
                m.d.sync += early_regs      # with the products
                m.next = "CHECK1"
            with m.State("CHECK1"):
                m.d.sync += ph.eq(0)
                # The weight regions of the job: its taps (WU: their partial sums), its bias.
                wtop = len(job.w_base) - 1
                w_end = Mux(wu, job.w_base + (kk << job.log2_p), job.w_base + kk) - 1
                use_bias = job.bias & (job.phase == Phase.FP)
                m.d.sync += fg_w.eq((1 << job.w_base[wtop]) | (1 << w_end[wtop]) |
                                    Mux(use_bias, 1 << job.bias_addr[wtop], 0))
                with m.If(err != TileError.NONE):
                    m.d.sync += job_error.eq(err)
                    m.next = "REFUSE"
                with m.Elif(job.bias & (job.phase == Phase.FP)):
                    m.next = "PREAMBLE"
                with m.Else():
                    m.next = "SETUP_A"
            with m.State("REFUSE"):
                # After the flushing job's done, so that the pulses keep the jobs' order.
                with m.If(~bg_active):
                    m.d.comb += refuse_done.eq(1)      # error is valid with done
                    m.d.sync += fg.eq(0)
                    m.next = "IDLE"
            with m.State("PREAMBLE"):
                m.d.comb += [ctrl.bias_load.eq(1), ctrl.w_addr.eq(job.bias_addr)]
                m.next = "SETUP_A"
            with m.State("SETUP_A"):
                m.d.sync += [fill.eq(0), filled.eq(0)]
                yy = parity_start(job.row_off, py)
                xx = parity_start(job.col_off, px)
                ky_f, kx_f = first_tap(py), first_tap(px)
                m.d.sync += [
                    y0.eq(Mux(bp, yy, 0)), x0.eq(Mux(bp, xx, 0)),
                    kyf.eq(Mux(bp, ky_f, 0)), kxf.eq(Mux(bp, kx_f, 0)),
                    npy.eq(Mux(bp & s2, (job.out_rows - yy + 1) >> 1, job.out_rows)),
                    npx.eq(Mux(bp & s2, (job.out_cols - xx + 1) >> 1, job.out_cols)),
                    nty.eq(Mux(bp, Mux(ky_f < 0, 0, Mux(s2, ky_f >> 1, ky_f) + 1), k)),
                    ntx.eq(Mux(bp, Mux(kx_f < 0, 0, Mux(s2, kx_f >> 1, kx_f) + 1), k)),
                ]
                m.next = "SETUP_B"
            with m.State("SETUP_B"):
                num_r = y0 + job.row_off - kyf
                num_c = x0 + job.col_off - kxf
                m.d.sync += [
                    r0.eq(Mux(bp, Mux(s2, num_r >> 1, num_r), job.row_off)),
                    c0.eq(Mux(bp, Mux(s2, num_c >> 1, num_c), job.col_off)),
                    w0.eq(kyf * k + kxf),
                    pix0.eq(Mux(y0, ocols, 0) + x0),
                    ntaps.eq(nty * ntx),
                    gq.eq(Mux(job.term_base[_QW:].any(), _QMAX,
                              job.term_base[:_QW] * nty * ntx)),
                    gq_lo.eq(job.term_base[:3] * nty * ntx),
                ]
                m.next = "SETUP_C"
            with m.State("SETUP_C"):
                empty = (npy == 0) | (npx == 0)
                tapless = ntaps == 0
                # Terms this job adds to each result (FP/BP: taps of the phase; WU: pixels).
                few_terms = Mux(wu, area_out < p, ~tapless & (ntaps < p))
                fill_now = ~filled & ~empty & (job.term_base == 0) & few_terms
                # A tapless phase and a fill pass are the same loop: +0 into all P slots.
                notaps = tapless | fill_now
                m.d.sync += [
                    ia0.eq(job.ifm_base + r0 * cols + c0),
                    null.eq(notaps),
                    fill.eq(fill_now),
                    skip.eq(empty | (tapless & (job.term_base != 0))),
                    hazard.eq(~empty & ~notaps & bp &
                              (((npy * npx) << job.log2_p) < ACC_LOOP_LATENCY)),
                ]
                counts = (
                    (Mux(fill_now, 1, job.out_rows), Mux(fill_now, p, job.out_cols),
                     k, k),                                                # WU
                    (Mux(notaps, 1, nty), Mux(notaps, p, ntx), npy, npx),  # FP/BP
                )
                for i in range(4):
                    count = Mux(wu, counts[0][i], counts[1][i])
                    m.d.sync += [n[i].eq(count), n_m2[i].eq(count - 2),
                                 n_is_1[i].eq(count == 1)]
                fpbp = {
                    "r": (1, 0, Mux(bp, 1, s_), 0),
                    "c": (0, 1, 0, Mux(bp, 1, s_)),
                    "ia": (cols, 1, Mux(bp, cols, cols << s2), Mux(bp, 1, s_)),
                    "w": (Mux(notaps, 0, Mux(bp, -(k << s2), k)),
                          Mux(notaps, 0, Mux(bp, -s_, 1)), 0, 0),
                    "pix": (0, 0, Mux(bp, ocols << s2, ocols), Mux(bp, s_, 1)),
                    "q": (Mux(notaps, 1, ntx), 1, 0, 0),
                }
                wuinc = {
                    "r": (s_, 0, 1, 0),
                    "c": (0, s_, 0, 1),
                    "ia": (cols << s2, s_, cols, 1),
                    "w": (0, 0, k, 1),
                    "pix": (Mux(fill_now, 0, ocols), Mux(fill_now, 0, 1), 0, 0),
                    "q": (Mux(fill_now, 0, ocols), 1, 0, 0),
                }
                for name, sigs in inc.items():
                    for i in range(4):
                        m.d.sync += sigs[i].eq(Mux(wu, wuinc[name][i], fpbp[name][i]))
                m.next = "START"
            with m.State("START"):
                qs0 = Mux(wu, Mux(job.term_base[_QW:].any(), _QMAX, job.term_base[:_QW]),
                          Mux(gq > _QMAX, _QMAX, gq))
                ql0 = Mux(wu, job.term_base[:3], gq_lo)
                start = {"r": r0, "c": c0, "ia": ia0, "w": w0, "pix": pix0,
                         "qs": qs0, "ql": ql0}
                for name in names:
                    for i in range(4):
                        m.d.sync += save[name][i].eq(start[name])
                for i in range(4):
                    m.d.sync += [idx[i].eq(0), last[i].eq(n_is_1[i])]
                with m.If(hazard):
                    m.d.sync += job_error.eq(TileError.INTERLEAVE)
                    m.next = "FLUSH"
                with m.Elif(skip):
                    m.next = "NEXT_PHASE"
                with m.Else():
                    m.next = "RUN"
            with m.State("RUN"):
                cur = {name: save[name][3] for name in names}
                inb = ((cur["r"] >= 0) & (cur["r"] < job.in_rows) &
                       (cur["c"] >= 0) & (cur["c"] < job.in_cols))
                slot = cur["ql"][:3] & (p - 1)
                first = cur["qs"] < p
                m.d.comb += [
                    ctrl.valid.eq(1),
                    ctrl.null.eq(null),
                    ctrl.first.eq(first),
                    ctrl.bias_use.eq(job.bias & first & (slot == 0) &
                                     (job.phase == Phase.FP)),
                    ctrl.ones.eq(job.ones),
                    ctrl.ifm_half.eq(job.ifm_half),
                    ctrl.ofm_half.eq(job.ofm_half),
                    ctrl.ifm_zero.eq(~inb | null),
                    ctrl.ifm_addr.eq(cur["ia"]),
                    ctrl.w_addr.eq(job.w_base + cur["w"]),
                    ctrl.ofm_addr.eq(job.ofm_base + cur["pix"]),
                    ctrl.acc_addr.eq(Mux(wu, job.w_base + (cur["w"] << job.log2_p) + slot,
                                         job.ofm_base + (cur["pix"] << job.log2_p) + slot)),
                ]
                # The innermost level that has not reached its last count steps; the levels
                # inside it restart from the new value.
                steps = [last[3] & last[2] & last[1] & ~last[0],    # by level, outer first
                         last[3] & last[2] & ~last[1], last[3] & ~last[2], ~last[3]]
                for lvl in range(4):
                    with m.If(steps[lvl]):
                        m.d.sync += [idx[lvl].eq(idx[lvl] + 1), last[lvl].eq(idx[lvl] == n_m2[lvl])]
                        for i in range(lvl + 1, 4):
                            m.d.sync += [idx[i].eq(0), last[i].eq(n_is_1[i])]
                        for name in names:
                            step = inc["q" if name in ("qs", "ql") else name][lvl]
                            new = save[name][lvl] + step
                            if name == "qs":
                                new = Mux(new > _QMAX, _QMAX, new)
                            for i in range(lvl, 4):
                                m.d.sync += save[name][i].eq(new)
                with m.If(last[0] & last[1] & last[2] & last[3]):
                    # The pass's last operation. What follows is decided in this cycle, so
                    # that the next pass, or the next job, starts in the next one.
                    with m.If(fill):
                        # The slots are +0: now the phase's real pass.
                        m.d.sync += [fill.eq(0), filled.eq(1)]
                        m.next = "SETUP_C"
                    with m.Elif(bp & s2 & (ph != 3)):
                        m.d.sync += ph.eq(ph + 1)
                        m.next = "SETUP_A"
                    with m.Elif(~bg_active | bg_done):
                        # The job's writes finish in the background; a waiting job of the
                        # same phase is taken in this cycle (one of another phase waits in
                        # IDLE for this job's flush).
                        m.d.sync += to_background(direct=True)
                        incoming = self.job.payload.phase.as_value()
                        m.d.comb += self.job.ready.eq(incoming == job.phase.as_value())
                        with m.If(self.job.valid & self.job.ready):
                            m.d.sync += [job.eq(self.job.payload),
                                         job_error.eq(TileError.NONE)]
                            m.next = "CHECK0"
                        with m.Else():
                            m.d.sync += fg.eq(0)
                            m.next = "IDLE"
                    with m.Else():
                        m.next = "FLUSH"
            with m.State("NEXT_PHASE"):
                # A phase with nothing to issue (``skip``) ends here.
                with m.If(bp & s2 & (ph != 3)):
                    m.d.sync += ph.eq(ph + 1)
                    m.next = "SETUP_A"
                with m.Else():
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                # The job is over (its last operation issued while the previous job still
                # flushed, a last phase with nothing to issue, or a refused start): its writes
                # finish in the background once the previous job's have.
                with m.If(~bg_active | bg_done):
                    m.d.sync += [*to_background(), fg.eq(0)]
                    m.next = "IDLE"
        return m
