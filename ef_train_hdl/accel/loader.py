"""The loader: runs LOAD instructions — DRAM runs into the tile buffers, with the BP/WU
load-path post-ops.

Two stages, so that the next instruction's DRAM reads are in flight while this one's words go
into the banks:

1. *Issue*: take an instruction, wait for its tokens (docs/isa.md), then request its DRAM runs
   from the read router in pieces: stream A (the data), and in the ReLU / pool modes streams B
   (the stored ReLU output) and C (the pool indices) piece by piece alongside, so the three
   arrive together. The router grants a piece only when its FIFO has room for it.
2. *Write*: accept exactly the instruction's beats on each stream and write the banks:
   weights a beat (``floats_per_beat`` words) at a time into consecutive PEs of a row (or,
   transposed, of a column: BP; the bias in column 0), or pixels (Tn / Tm words, widened from
   beats) into the IFM / OFM banks, through ReLU backward (A where B is not +0) and max-pool
   backward (A and C -> the full-resolution map) as the mode says. At the last write it gives
   its tokens.

Latency and throughput: one DMA beat per cycle into the banks in every mode (a pooled map
writes four pixels per pooled beat it reads); an instruction's own overhead is about four
cycles in each stage, overlapped with the previous instruction's writes.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .. import isa
from ..axi.common import command_layout
from ..axi.dma_read import read_beat_layout
from ..config import LOADER_FIFO_BEATS
from ..core.buffers import bank_load_layout
from ..core.pe_array import weight_load_layout, weight_load_lanes
from ..core.postops import MaxPoolBackward, ReluBackward, word_lanes
from ..isa import LoadMode, Op, Target, pool_max_width
from .common import TokenWait, dispatch_layout, give, instr_view, token_members
from .gearbox import Skid, Widen
from .readmux import piece_words

__all__ = ["Loader", "LOADER_FIFOS", "pool_max_width"]

#: Read-router FIFO depth (beats) of the loader's streams A, B, C (config.LOADER_FIFO_BEATS).
LOADER_FIFOS = dict(LOADER_FIFO_BEATS)



class Loader(wiring.Component):
    """See the module docstring.

    Members
    -------
    instr : ``In(stream.Signature(dispatch_layout()))``
        LOAD instructions from the command processor.
    avail_*, take_*, give_* : token ports (:func:`.common.token_members`).
    req_a, req_b, req_c : ``Out(stream.Signature(command_layout(cfg)))``
        Read requests to the router; ``data_a``, ``data_b``, ``data_c`` the words back.
    ifm_load, ofm_load, w_load : the tile engine's load ports.
    busy : ``Out(1)``
        An instruction is in either stage.
    waiting : ``Out(1)``
        An instruction waits for tokens (for the deadlock watchdog).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        t = cfg.tm
        members = {
            "instr": In(stream.Signature(dispatch_layout())),
            **token_members("load"),
            "busy": Out(1),
            "waiting": Out(1),
            "ifm_load": Out(stream.Signature(bank_load_layout(cfg.tn, cfg.ifm_depth))),
            "ofm_load": Out(stream.Signature(bank_load_layout(cfg.tm, cfg.ofm_depth))),
            "w_load": Out(stream.Signature(weight_load_layout(cfg))),
        }
        for s in "abc":
            members[f"req_{s}"] = Out(stream.Signature(command_layout(cfg)))
            members[f"data_{s}"] = In(stream.Signature(read_beat_layout(cfg)))
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.cfg
        t, f = cfg.tm, cfg.floats_per_beat
        lg_f = exact_log2(f)
        lg_tt = exact_log2(t * t)
        lg_t = exact_log2(t)
        m = Module()
        piece = min(piece_words(cfg, d) for d in LOADER_FIFOS.values())

        # ==== stage 1: tokens and read requests ================================================
        stage2 = Signal()                   # stage 2 holds an instruction
        handoff = fifo.SyncFIFOBuffered(width=32 * isa.INSTR_WORDS, depth=2)
        m.submodules.handoff = handoff
        view = instr_view(self.instr.payload.bits, Op.LOAD)
        tokens = TokenWait(self, "load", view)
        cur = Signal(isa.amaranth_layout(Op.LOAD))
        run = Signal(16)
        run_base = Signal(32)               # addr_a + run * dram_stride
        run_words = Signal(32)
        stream_sel = Signal(2)              # 0 A, 1 B, 2 C of the current piece
        # The request in flip-flops: each stream's next address, the words of the run left
        # (``rest``), the next piece's length (``chunk`` = min(rest, piece)) and whether it is
        # the run's last (``last_piece``), so that the read router's grant and credit logic
        # sees registers, not this unit's subtract-compare-select.
        addr_a, addr_b, addr_c = Signal(32), Signal(32), Signal(32)
        rest, chunk, last_piece = Signal(32), Signal(32), Signal()
        relu = (cur.mode == LoadMode.RELU_BP) | (cur.mode == LoadMode.RELU_POOL_BP)
        pool = (cur.mode == LoadMode.POOL_BP) | (cur.mode == LoadMode.RELU_POOL_BP)

        def first_piece():
            return [rest.eq(run_words), chunk.eq(Mux(run_words > piece, piece, run_words)),
                    last_piece.eq(run_words <= piece)]
        issuing = Signal()
        with m.FSM(name="issue"):
            with m.State("IDLE"):
                can = self.instr.valid & handoff.w_rdy & tokens.ready()
                # Waiting: blocked on tokens with nothing else under way (the watchdog).
                m.d.comb += [self.waiting.eq(self.instr.valid & ~tokens.ready() &
                                             ~handoff.r_rdy & ~stage2),
                             self.instr.ready.eq(can),
                             handoff.w_en.eq(can), handoff.w_data.eq(self.instr.payload.bits)]
                tokens.take(m, can)
                with m.If(can):
                    m.d.sync += [cur.eq(view), run.eq(0), stream_sel.eq(0),
                                 run_base.eq(view.addr_a), addr_a.eq(view.addr_a),
                                 addr_b.eq(view.addr_b), addr_c.eq(view.addr_c)]
                    with m.Switch(view.target):
                        with m.Case(Target.WEIGHT):
                            m.d.sync += run_words.eq((view.count * view.taps) << lg_tt)
                        with m.Case(Target.BIAS):
                            m.d.sync += run_words.eq(t)
                        with m.Default():
                            m.d.sync += run_words.eq(view.count << lg_t)
                    m.next = "SIZE"
            with m.State("SIZE"):
                m.d.comb += issuing.eq(1)
                m.d.sync += first_piece()
                m.next = "REQUEST"
            with m.State("REQUEST"):
                m.d.comb += issuing.eq(1)
                reqs = [self.req_a, self.req_b, self.req_c]
                for i, (req, addr) in enumerate(zip(reqs, (addr_a, addr_b, addr_c))):
                    m.d.comb += [req.payload.addr.eq(addr), req.payload.length.eq(chunk),
                                 req.valid.eq(stream_sel == i)]
                accepted = Mux(stream_sel == 0, self.req_a.ready,
                               Mux(stream_sel == 1, self.req_b.ready, self.req_c.ready))
                with m.If(accepted):
                    # Next stream of this piece, or the next piece.
                    nxt_b = (stream_sel == 0) & relu
                    nxt_c = ((stream_sel == 0) & ~relu & pool) | ((stream_sel == 1) & pool)
                    with m.If(nxt_b):
                        m.d.sync += stream_sel.eq(1)
                    with m.Elif(nxt_c):
                        m.d.sync += stream_sel.eq(2)
                    with m.Else():
                        m.d.sync += stream_sel.eq(0)
                        with m.If(last_piece):
                            # Modes with B or C streams have one run (the decoder checks).
                            nxt_run = run_base + cur.dram_stride
                            m.d.sync += [run.eq(run + 1), run_base.eq(nxt_run),
                                         addr_a.eq(nxt_run), addr_b.eq(cur.addr_b),
                                         addr_c.eq(cur.addr_c), *first_piece()]
                            with m.If(run + 1 >= cur.runs):
                                m.next = "IDLE"
                        with m.Else():
                            # Not the last piece, so chunk == piece.
                            m.d.sync += [addr_a.eq(addr_a + piece), addr_b.eq(addr_b + piece),
                                         addr_c.eq(addr_c + piece), rest.eq(rest - piece),
                                         chunk.eq(Mux(rest > 2 * piece, piece, rest - piece)),
                                         last_piece.eq(rest <= 2 * piece)]

        # ==== stage 2: beats into the banks =======================================================
        w = Signal(isa.amaranth_layout(Op.LOAD))
        a_left, b_left = Signal(32, name="a_left"), Signal(32, name="b_left")
        c_left = Signal(32, name="c_left")
        out_left = Signal(32)
        # Bank addressing: ``addr`` the next word, ``run_addr`` the current run's first,
        # ``blk_addr`` the current weight block's first.
        addr, run_addr = Signal(20, name="addr"), Signal(20, name="run_addr")
        blk_addr = Signal(20, name="blk_addr")
        pix, tap = Signal(32, name="pix"), Signal(8, name="tap")
        beat, blk = Signal(16, name="beat"), Signal(32, name="blk")
        writing = Signal()                  # in WRITE, as a flip-flop (not a state decode)
        wview = data.View(isa.amaranth_layout(Op.LOAD), handoff.r_data)
        # The instruction's target and mode, decoded into flip-flops when stage 2 takes it, so
        # that the beat path's valid/ready select on registers, not on decoders of ``w``.
        pixel_target, to_ofm = Signal(name="pixel_target"), Signal(name="to_ofm")
        is_bias = Signal(name="is_bias")
        w_relu, w_pool = Signal(name="w_relu"), Signal(name="w_pool")
        decoded = [
            pixel_target.eq((wview.target == Target.IFM) | (wview.target == Target.OFM)),
            to_ofm.eq(wview.target == Target.OFM),
            is_bias.eq(wview.target == Target.BIAS),
            w_relu.eq((wview.mode == LoadMode.RELU_BP) | (wview.mode == LoadMode.RELU_POOL_BP)),
            w_pool.eq((wview.mode == LoadMode.POOL_BP) | (wview.mode == LoadMode.RELU_POOL_BP)),
        ]
        # A register slice on each stream from the read router: the loader's ready chain
        # (post-ops, wideners, the bank write) ends here instead of running on into the
        # router's FIFO level counters (before it the deepest path of the ultra96 design:
        # 18 LUT levels). One cycle on the data's latency, no throughput lost.
        srcs = {}
        for s in "abc":
            skid = m.submodules[f"skid_{s}"] = Skid(read_beat_layout(cfg))
            wiring.connect(m, wiring.flipped(getattr(self, f"data_{s}")), skid.i)
            srcs[s] = skid.o

        # Pixel path: beats -> pixels (A, B as words; C as 2-bit indices), then the post-ops.
        per_px = t // f
        widen = {s: Widen(f, per_px) for s in "abc"}
        for s, g in widen.items():
            m.submodules[f"widen_{s}"] = g
        relu_u = m.submodules.relu = ReluBackward(t)
        pool_u = m.submodules.pool = MaxPoolBackward(t, pool_max_width(cfg))
        m.d.comb += [pool_u.width.eq(w.pool_width), pool_u.height.eq(w.pool_height)]
        lefts = {"a": a_left, "b": b_left, "c": c_left}
        # "Beats left on this stream" (``left != 0``), in flip-flops stepped with the counts,
        # as the storer keeps its ``src_left != 0``: the ready path selects on a register.
        nz = {s: Signal(name=f"{s}_any") for s in "abc"}
        out_any = Signal()
        for s in "abc":
            src = srcs[s]
            g = widen[s]
            # Beats of this instruction only: a widener must not run into the next one's.
            to_pixels = writing & nz[s] & (pixel_target if s == "a" else 1)
            m.d.comb += [g.i.valid.eq(src.valid & to_pixels),
                         g.i.payload.eq(src.payload.data)]
            if s != "a":
                m.d.comb += src.ready.eq(g.i.ready & to_pixels)
        a_px, b_px, c_px = widen["a"].o, widen["b"].o, widen["c"].o
        idx = Signal(data.ArrayLayout(2, t))
        for lane in range(t):
            m.d.comb += idx[lane].eq(c_px.payload[lane][:2])

        out_valid, out_data = Signal(), Signal(word_lanes(t))
        out_ready = Signal()
        # Mode routing (the mode is constant while an instruction writes).
        with m.If(w_relu):
            m.d.comb += [relu_u.grad_y.valid.eq(a_px.valid), relu_u.grad_y.payload.eq(
                a_px.payload), a_px.ready.eq(relu_u.grad_y.ready),
                relu_u.y.valid.eq(b_px.valid), relu_u.y.payload.eq(b_px.payload),
                b_px.ready.eq(relu_u.y.ready)]
        relu_out = relu_u.grad_x
        pool_src_valid = Mux(w_relu, relu_out.valid, a_px.valid)
        pool_src = Mux(w_relu, relu_out.payload.as_value(), a_px.payload.as_value())
        with m.If(w_pool):
            m.d.comb += [pool_u.grad_y.valid.eq(pool_src_valid),
                         pool_u.grad_y.payload.eq(pool_src),
                         pool_u.idx.valid.eq(c_px.valid), pool_u.idx.payload.eq(idx),
                         c_px.ready.eq(pool_u.idx.ready),
                         out_valid.eq(pool_u.grad_x.valid), out_data.eq(pool_u.grad_x.payload),
                         pool_u.grad_x.ready.eq(out_ready)]
            with m.If(w_relu):
                m.d.comb += relu_out.ready.eq(pool_u.grad_y.ready)
            with m.Else():
                m.d.comb += a_px.ready.eq(pool_u.grad_y.ready)
        with m.Elif(w_relu):
            m.d.comb += [out_valid.eq(relu_out.valid), out_data.eq(relu_out.payload),
                         relu_out.ready.eq(out_ready)]
        with m.Else():
            m.d.comb += [out_valid.eq(a_px.valid), out_data.eq(a_px.payload),
                         a_px.ready.eq(out_ready)]

        # Pixel writes, through a register slice with their bank address: the post-ops'
        # ready chain (pool, ReLU, wideners, the stream slices) starts at its flip-flops, not
        # at the buffers' ownership and this unit's write-state decode (before it 14 LUT levels
        # from ``write_state`` into the wideners). ``w`` and ``to_ofm`` stay until GIVE, which
        # waits until the slice is empty after the cycle, so they need not travel with it.
        px_skid = m.submodules.px_skid = Skid(data.StructLayout({
            "data": word_lanes(t), "addr": len(addr)}))
        px_in = writing & pixel_target & out_any
        m.d.comb += [px_skid.i.valid.eq(out_valid & px_in),
                     px_skid.i.payload.data.eq(out_data), px_skid.i.payload.addr.eq(addr),
                     out_ready.eq(px_skid.i.ready & px_in)]
        for port, here in ((self.ifm_load, ~to_ofm), (self.ofm_load, to_ofm)):
            m.d.comb += [port.payload.half.eq(w.half), port.payload.addr.eq(px_skid.o.payload.addr),
                         port.payload.data.eq(px_skid.o.payload.data),
                         port.valid.eq(px_skid.o.valid & here)]
            with m.If(here):
                m.d.comb += px_skid.o.ready.eq(port.ready)
        px_drained = ~px_skid.busy | (px_skid.o.ready & px_skid.i.ready)
        px_done = out_valid & out_ready

        # Weight path: a beat straight into ``lanes`` PEs.
        lanes = weight_load_lanes(cfg)
        assert lanes == f
        q_row = Signal(range(t))
        q_col = Signal(range(t))
        wl = self.w_load.payload
        weight_target = ~pixel_target       # WEIGHT or BIAS
        m.d.comb += [
            q_row.eq((beat << lg_f) >> lg_t), q_col.eq((beat << lg_f) & (t - 1)),
            wl.addr.eq(addr), wl.data.eq(srcs["a"].payload.data), wl.en.eq((1 << lanes) - 1),
            wl.transpose.eq(w.transpose | is_bias),
            # Normal: DRAM word (mi, nj..) -> PE row mi, columns nj..; transposed: PE column
            # mi, rows nj..; bias: column 0, rows from the beat's first lane.
            wl.row.eq(Mux(is_bias, beat << lg_f, Mux(w.transpose, q_col, q_row))),
            wl.col.eq(Mux(is_bias, 0, Mux(w.transpose, q_row, q_col))),
        ]
        w_sel = writing & weight_target & nz["a"]
        m.d.comb += self.w_load.valid.eq(srcs["a"].valid & w_sel)
        with m.If(w_sel):
            m.d.comb += srcs["a"].ready.eq(self.w_load.ready)
        with m.Elif(writing & pixel_target):
            m.d.comb += srcs["a"].ready.eq(widen["a"].i.ready & nz["a"])
        w_done = self.w_load.valid & self.w_load.ready

        for s in "abc":
            src = srcs[s]
            with m.If(src.valid & src.ready):
                m.d.sync += [lefts[s].eq(lefts[s] - 1), nz[s].eq(lefts[s] != 1)]

        beats_per_word = t * t // f
        # "The counter is at its last value", kept in flip-flops stepped with the counters
        # (the same compares, one cycle ahead), so that the bank-address updates below select
        # on registers rather than on 32-bit compares (before them the deepest path of the
        # ultra96 design after the storer's: 19 LUT levels through these If/Elif chains).
        # The "next value is the last" tests compare the counter itself with ``last - 1``
        # (``count - 2``, ``taps - 2``: registers set with the instruction), not the counter's
        # increment with ``last``: an equality, not an adder, a subtractor and an equality in
        # a ripple (17-18 LUT levels in the ultra96 build before).
        pix_last, blk_last = Signal(name="pix_last"), Signal(name="blk_last")
        tap_last, beat_last = Signal(name="tap_last"), Signal(name="beat_last")
        count_m2 = Signal(signed(len(w.count) + 2), name="count_m2")
        taps_m2 = Signal(signed(len(w.taps) + 2), name="taps_m2")
        count_is1, taps_is1 = Signal(name="count_is1"), Signal(name="taps_is1")
        beat_m2 = beats_per_word - 2 if beats_per_word >= 2 else None

        def beat_next_last():
            return (beat == beat_m2) if beat_m2 is not None else Const(0)

        def step(counter):
            return (counter + 1)[:len(counter)]

        with m.FSM(name="write"):
            with m.State("IDLE"):
                m.d.comb += handoff.r_en.eq(1)
                with m.If(handoff.r_rdy):
                    m.d.sync += [w.eq(wview), addr.eq(wview.bank_base),
                                 *decoded,
                                 run_addr.eq(wview.bank_base), blk_addr.eq(wview.bank_base),
                                 pix.eq(0), tap.eq(0), beat.eq(0), blk.eq(0),
                                 pix_last.eq(wview.count == 1), blk_last.eq(wview.count == 1),
                                 tap_last.eq(wview.taps == 1),
                                 beat_last.eq(beats_per_word == 1),
                                 count_m2.eq(wview.count - 2), taps_m2.eq(wview.taps - 2),
                                 count_is1.eq(wview.count == 1), taps_is1.eq(wview.taps == 1)]
                    m.next = "SETUP"
            # Sizes in three registered steps (one multiplier each, off the data path).
            words_run, units = Signal(32), Signal(32)
            with m.State("SETUP"):
                m.d.comb += stage2.eq(1)
                with m.Switch(w.target):
                    with m.Case(Target.WEIGHT):
                        m.d.sync += words_run.eq(w.count * w.taps)      # weight words a run
                    with m.Case(Target.BIAS):
                        m.d.sync += words_run.eq(1)
                    with m.Default():
                        m.d.sync += words_run.eq(w.count)               # pixels a run
                m.d.sync += units.eq(Mux(w_pool, w.pool_width * w.pool_height, 0))
                m.next = "SETUP2"
            with m.State("SETUP2"):
                m.d.comb += stage2.eq(1)
                total = words_run * w.runs
                m.d.sync += [words_run.eq(total),
                             units.eq(Mux(w_pool, units, total))]
                m.next = "SETUP3"
            with m.State("SETUP3"):
                m.d.comb += stage2.eq(1)
                beats_a = Signal(32)
                with m.Switch(w.target):
                    with m.Case(Target.WEIGHT):
                        m.d.comb += beats_a.eq(words_run << (lg_tt - lg_f))
                    with m.Case(Target.BIAS):
                        m.d.comb += beats_a.eq(t // f)
                    with m.Default():
                        m.d.comb += beats_a.eq(words_run << exact_log2(per_px))
                m.d.sync += [a_left.eq(beats_a), b_left.eq(Mux(w_relu, beats_a, 0)),
                             c_left.eq(Mux(w_pool, beats_a, 0)),
                             out_left.eq(Mux(pixel_target, units, 0)),
                             nz["a"].eq(beats_a != 0), nz["b"].eq(w_relu & (beats_a != 0)),
                             nz["c"].eq(w_pool & (beats_a != 0)),
                             out_any.eq(pixel_target & (units != 0)), writing.eq(1)]
                m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += stage2.eq(1)
                with m.If(px_done):
                    m.d.sync += [out_left.eq(out_left - 1), out_any.eq(out_left != 1)]
                    # Next pixel: along the run, or the next run's first word.
                    with m.If(~w_pool & pix_last):
                        m.d.sync += [pix.eq(0), run_addr.eq(run_addr + w.bank_run_stride),
                                     addr.eq(run_addr + w.bank_run_stride),
                                     pix_last.eq(count_is1)]
                    with m.Else():
                        m.d.sync += [pix.eq(step(pix)), addr.eq(addr + w.bank_step),
                                     pix_last.eq(pix == count_m2)]
                with m.If(w_done):
                    with m.If(is_bias):
                        m.d.sync += [beat.eq(step(beat)), beat_last.eq(beat_next_last())]
                    with m.Elif(beat_last):
                        m.d.sync += [beat.eq(0), beat_last.eq(beats_per_word == 1)]
                        with m.If(tap_last):
                            m.d.sync += [tap.eq(0), tap_last.eq(taps_is1)]
                            with m.If(blk_last):
                                # Next run: its first block's first tap.
                                m.d.sync += [blk.eq(0), blk_last.eq(count_is1),
                                             run_addr.eq(run_addr + w.bank_run_stride),
                                             blk_addr.eq(run_addr + w.bank_run_stride),
                                             addr.eq(run_addr + w.bank_run_stride)]
                            with m.Else():
                                m.d.sync += [blk.eq(step(blk)),
                                             blk_last.eq(blk == count_m2),
                                             blk_addr.eq(blk_addr + w.bank_step),
                                             addr.eq(blk_addr + w.bank_step)]
                        with m.Else():
                            m.d.sync += [tap.eq(step(tap)), tap_last.eq(tap == taps_m2),
                                         addr.eq(addr + 1)]
                    with m.Else():
                        m.d.sync += [beat.eq(step(beat)), beat_last.eq(beat_next_last())]
                finished = Signal()
                m.d.comb += finished.eq(
                    Mux(pixel_target, (out_left == 0) | ((out_left == 1) & px_done),
                        (a_left == 0) | ((a_left == 1) & w_done)))
                with m.If(finished):
                    m.d.sync += writing.eq(0)
                    m.next = "GIVE"
            with m.State("GIVE"):
                m.d.comb += stage2.eq(1)
                # The last pixel is in the buffer bank at the end of this cycle.
                give(m, self, "load", w, px_drained)
                with m.If(px_drained):
                    m.next = "IDLE"

        # Busy: an instruction in either stage or between them (not one still queued).
        m.d.comb += self.busy.eq(issuing | handoff.r_rdy | stage2)
        return m
