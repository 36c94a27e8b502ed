"""The storer: runs STORE instructions — a drain (or a DRAM run) through the store-path post-ops
into DRAM.

For each instruction: wait for its tokens (docs/isa.md); start its source (a drain job to the
tile engine, or, for a stand-alone SGD, a DRAM read of the gradient); pass the words through
the post-ops — ReLU, 2x2 max-pool (the index kept in a FIFO and written after the values),
SGD (the old weights, and the momentum, read from DRAM piece by piece alongside) — and write
the result with the DMA write engine, one command per run or per piece. The weight-bank
drain can also keep only PE (m, 0)'s word of every row: a bias gradient (``bias_select``).

Tokens: the compute unit gets its token when the drain has delivered its last word (the
buffers are free again); the loader gets its token only when every write of the instruction
is acknowledged (a response tracker counts the DMA's completed commands), so a later LOAD of
the same DRAM words reads the new ones. The storer goes on with the next instruction while the
responses are outstanding.

Throughput: one beat of ``floats_per_beat`` words a cycle through every post-op (a pool
writes one pooled beat per four it reads; SGD with momentum writes two beats, w' and v', per
gradient beat, and so runs at half rate). Per instruction about five cycles of set-up and the
DMA write engine's command latency per run.

Timing: register slices (:class:`~.gearbox.Skid`) sit on the drain and DRAM-gradient inputs,
between the post-ops and the write sequencer, and on the write data output, and the
instruction's kind is decoded into flip-flops when it is taken: no valid/ready path runs
combinationally from the DMA write engine back through the post-ops into the drain's or the
read router's FIFOs (before them, the deepest path of the whole ``ultra96`` design, 24 LUT
levels; 19 after them). They add three cycles of latency a store, no throughput.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .. import isa
from ..config import STORER_FIFO_BEATS
from ..axi.common import command_layout
from ..axi.dma_read import read_beat_layout
from ..core.drain import drain_beat_layout
from ..core.job import drain_layout
from ..core.postops import MaxPoolForward, ReluForward, SgdUpdate, word_lanes
from ..isa import Op, Post, Source, pool_max_width
from .common import TokenWait, dispatch_layout, give, instr_view, token_members
from .gearbox import Narrow, Skid, Widen, words
from .readmux import piece_words

__all__ = ["Storer", "STORER_FIFOS"]


def _flow(m, src, dst):
    """``src`` -> ``dst`` (valid, payload forward; ready back), as combinational statements
    (inside an ``m.If`` they hold only while its condition does)."""
    m.d.comb += [dst.valid.eq(src.valid), dst.payload.eq(src.payload), src.ready.eq(dst.ready)]


def _iface(name, n):
    """A stream interface of ``n`` words for wiring inside a module."""
    return stream.Signature(words(n)).create(path=(name,))

#: Read-router FIFO depth (beats) of the storer's streams: old weights, momentum, gradient.
STORER_FIFOS = dict(STORER_FIFO_BEATS)


class Storer(wiring.Component):
    """See the module docstring.

    Members
    -------
    instr : ``In(stream.Signature(dispatch_layout()))``
    avail_*, take_*, give_* : token ports.
    drain_job : ``Out(stream.Signature(drain_layout(cfg)))``
    drain_in : ``In(stream.Signature(drain_beat_layout(cfg)))``
    req_w, req_v, req_g / data_w, data_v, data_g : read-router client ports.
    wr_cmd : ``Out(stream.Signature(command_layout(cfg)))``
    wr_data : ``Out(stream.Signature(cfg.dma_data_width))``
    wr_done : ``In(1)``
        The DMA write engine completed a command (its last response is back).
    busy : ``Out(1)``
        An instruction is running or its writes are not all acknowledged.
    waiting : ``Out(1)``
        An instruction waits for tokens.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        members = {
            "instr": In(stream.Signature(dispatch_layout())),
            **token_members("store"),
            "drain_job": Out(stream.Signature(drain_layout(cfg))),
            "drain_in": In(stream.Signature(drain_beat_layout(cfg))),
            "wr_cmd": Out(stream.Signature(command_layout(cfg))),
            "wr_data": Out(stream.Signature(cfg.dma_data_width)),
            "wr_done": In(1),
            "busy": Out(1),
            "waiting": Out(1),
        }
        for s in "wvg":
            members[f"req_{s}"] = Out(stream.Signature(command_layout(cfg)))
            members[f"data_{s}"] = In(stream.Signature(read_beat_layout(cfg)))
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.cfg
        t, f = cfg.tm, cfg.floats_per_beat
        lg_f, lg_t = exact_log2(f), exact_log2(t)
        m = Module()
        piece = min(piece_words(cfg, d) for d in STORER_FIFOS.values())

        view = instr_view(self.instr.payload.bits, Op.STORE)
        tokens = TokenWait(self, "store", view)
        cur = Signal(isa.amaranth_layout(Op.STORE))
        # The instruction's kind, decoded into flip-flops when it is taken (they select the
        # stream paths below, and so sit at the head of their ready chains).
        mode = {name: Signal(name=name) for name in
                ("src_dram", "src_weight", "is_relu", "is_pool", "is_sgd", "is_mom", "bias_sel")}
        src_dram, src_weight = mode["src_dram"], mode["src_weight"]
        is_relu, is_pool, is_sgd, is_mom = (mode[n] for n in ("is_relu", "is_pool", "is_sgd",
                                                              "is_mom"))
        bias_sel = mode["bias_sel"]

        def decode(v):
            return {"src_dram": v.source == Source.DRAM, "src_weight": v.source == Source.WEIGHT,
                    "is_relu": (v.post == Post.RELU) | (v.post == Post.RELU_POOL),
                    "is_pool": (v.post == Post.POOL) | (v.post == Post.RELU_POOL),
                    "is_sgd": (v.post == Post.SGD) | (v.post == Post.SGD_MOMENTUM),
                    "is_mom": v.post == Post.SGD_MOMENTUM,
                    "bias_sel": (v.source == Source.WEIGHT) & v.bias_select}

        words_total = Signal(32)
        src_left = Signal(32)               # source beats still to take
        w_left, v_left = Signal(32), Signal(32)
        running = Signal()

        # -- write-acknowledgement tracker: give the loader its token when the instruction's
        #    commands are all done. ------------------------------------------------------------
        issued, completed = Signal(32), Signal(32)
        acks = fifo.SyncFIFOBuffered(width=32, depth=4)
        m.submodules.acks = acks
        with m.If(self.wr_done):
            m.d.sync += completed.eq(completed + 1)
        ahead = Signal(32)          # completed - target, modulo 2**32: >= 0 when bit 31 is 0
        m.d.comb += ahead.eq(completed - acks.r_data)
        ack_due = acks.r_rdy & ~ahead[31]
        m.d.comb += [acks.r_en.eq(ack_due), self.give_load.eq(ack_due)]

        # -- the source: drain beats or DRAM words ------------------------------------------
        # Register slices on the storer's ports: no combinational path runs from the DMA
        # write engine's ready back through the post-ops into the drain's or the read
        # router's FIFOs (the deepest path of the whole design before them).
        skid_drain = m.submodules.skid_drain = Skid(words(f))
        skid_g = m.submodules.skid_g = Skid(words(f))
        skid_wr = m.submodules.skid_wr = Skid(cfg.dma_data_width)
        m.d.comb += [skid_drain.i.valid.eq(self.drain_in.valid),
                     skid_drain.i.payload.eq(self.drain_in.payload.data),
                     self.drain_in.ready.eq(skid_drain.i.ready),
                     skid_g.i.valid.eq(self.data_g.valid),
                     skid_g.i.payload.eq(self.data_g.payload.data),
                     self.data_g.ready.eq(skid_g.i.ready)]
        wiring.connect(m, skid_wr.o, wiring.flipped(self.wr_data))
        src = _iface("src", f)
        src_more = Signal()                 # src_left != 0, kept in a register
        take_src = running & src_more
        with m.If(src_dram):
            m.d.comb += [src.valid.eq(skid_g.o.valid & take_src),
                         src.payload.eq(skid_g.o.payload),
                         skid_g.o.ready.eq(src.ready & take_src)]
        with m.Else():
            m.d.comb += [src.valid.eq(skid_drain.o.valid & take_src),
                         src.payload.eq(skid_drain.o.payload),
                         skid_drain.o.ready.eq(src.ready & take_src)]
        with m.If(src.valid & src.ready):
            m.d.sync += [src_left.eq(src_left - 1), src_more.eq(src_left != 1)]

        # bias_select: word 0 of the first beat of each PE row, packed into beats again.
        sel = _iface("sel", f)
        pack1 = m.submodules.pack1 = Widen(1, f)
        row_beat = Signal(range(max(2, t // f)))
        with m.If(bias_sel):
            first = row_beat == 0
            m.d.comb += [pack1.i.valid.eq(src.valid & first), pack1.i.payload[0].eq(
                src.payload[0]), src.ready.eq(Mux(first, pack1.i.ready, 1))]
            _flow(m, pack1.o, sel)
            with m.If(src.valid & src.ready):
                m.d.sync += row_beat.eq(Mux(row_beat == t // f - 1, 0, row_beat + 1))
        with m.Else():
            m.d.comb += [sel.valid.eq(src.valid), sel.payload.eq(src.payload),
                         src.ready.eq(sel.ready)]
        # A register slice between the source selection and the post-ops: their ready chain
        # (the pool's stages, the gearboxes, the index FIFO's room) ends here instead of
        # running on through the source select into the drain and gradient slices (before it
        # 13 LUT levels from the index FIFO's level into ``src_more``).
        skid_sel = m.submodules.skid_sel = Skid(words(f))
        wiring.connect(m, sel, skid_sel.i)
        sel = skid_sel.o

        # -- post-ops -----------------------------------------------------------------------------
        # ``main``: the post-ops' output, through a register slice into the write sequencer.
        main = _iface("main", f)
        skid_main = m.submodules.skid_main = Skid(words(f))
        m.d.comb += [skid_main.i.valid.eq(main.valid), skid_main.i.payload.eq(main.payload),
                     main.ready.eq(skid_main.i.ready)]
        relu_u = m.submodules.relu = ReluForward(f)
        widen = m.submodules.widen = Widen(f, t // f)
        pool_u = m.submodules.pool = MaxPoolForward(t, pool_max_width(cfg))
        narrow = m.submodules.narrow = Narrow(f, t // f)
        # SGD with momentum writes two beats (w', v') a gradient beat, so half a beat's
        # lanes keep up with the write channel (plain SGD runs at half a beat a cycle).
        sl = max(1, f // 2)
        sgd_u = m.submodules.sgd = SgdUpdate(sl, momentum=cfg.momentum)
        for name in ("w", "dw", "v"):
            m.submodules[f"sgd_narrow_{name}"] = Narrow(sl, f // sl)
        n_w, n_dw, n_v = (m.submodules[f"sgd_narrow_{x}"] for x in ("w", "dw", "v"))
        # w' and v' of two half beats -> one beat of each.
        sgd_out = m.submodules.sgd_widen = Widen(2 * sl, f // sl)
        o_lanes = sgd_u.o.payload
        m.d.comb += [sgd_out.i.valid.eq(sgd_u.o.valid), sgd_u.o.ready.eq(sgd_out.i.ready)]
        for i in range(sl):
            m.d.comb += sgd_out.i.payload[i].eq(o_lanes.w[i])
            if cfg.momentum:
                m.d.comb += sgd_out.i.payload[sl + i].eq(o_lanes.v[i])
        sgd_w = Signal(words(f))
        sgd_v = Signal(words(f))
        for k in range(f // sl):
            for i in range(sl):
                m.d.comb += [sgd_w[k * sl + i].eq(sgd_out.o.payload[k * 2 * sl + i]),
                             sgd_v[k * sl + i].eq(sgd_out.o.payload[k * 2 * sl + sl + i])]
        m.d.comb += [sgd_u.dw.valid.eq(n_dw.o.valid), sgd_u.dw.payload.eq(n_dw.o.payload),
                     n_dw.o.ready.eq(sgd_u.dw.ready),
                     sgd_u.w.valid.eq(n_w.o.valid), sgd_u.w.payload.eq(n_w.o.payload),
                     n_w.o.ready.eq(sgd_u.w.ready)]
        if cfg.momentum:
            m.d.comb += [sgd_u.v.valid.eq(n_v.o.valid), sgd_u.v.payload.eq(n_v.o.payload),
                         n_v.o.ready.eq(sgd_u.v.ready)]
        m.d.comb += [pool_u.width.eq(cur.pool_width), pool_u.height.eq(cur.pool_height),
                     sgd_u.lr.eq(cur.lr)]
        if cfg.momentum:
            m.d.comb += [sgd_u.mu.eq(cur.mu), sgd_u.plain.eq(~is_mom)]
        idx_fifo = fifo.SyncFIFOBuffered(width=2 * t, depth=max(4, cfg.ofm_depth // 4))
        m.submodules.idx_fifo = idx_fifo
        vstage = fifo.SyncFIFOBuffered(width=32 * f, depth=max(2, piece // f))
        m.submodules.vstage = vstage

        # ReLU first (RELU, RELU_POOL), then the pool or straight on.
        relu_out = _iface("relu_out", f)
        with m.If(is_relu):
            m.d.comb += [relu_u.x.valid.eq(sel.valid), relu_u.x.payload.eq(sel.payload),
                         sel.ready.eq(relu_u.x.ready)]
            _flow(m, relu_u.y, relu_out)
        with m.Elif(~is_sgd):
            _flow(m, sel, relu_out)
        with m.If(is_pool):
            _flow(m, relu_out, widen.i)
            m.d.comb += [pool_u.x.valid.eq(widen.o.valid), pool_u.x.payload.eq(widen.o.payload),
                         widen.o.ready.eq(pool_u.x.ready)]
            # The pooled beat goes on only when its index has a place.
            m.d.comb += [narrow.i.valid.eq(pool_u.y.valid & idx_fifo.w_rdy),
                         narrow.i.payload.eq(pool_u.y.payload.value),
                         pool_u.y.ready.eq(narrow.i.ready & idx_fifo.w_rdy),
                         idx_fifo.w_en.eq(pool_u.y.valid & narrow.i.ready & idx_fifo.w_rdy),
                         idx_fifo.w_data.eq(pool_u.y.payload.idx)]
            _flow(m, narrow.o, main)
        with m.Elif(is_sgd):
            w_ok = running & (w_left != 0)
            v_ok = running & (v_left != 0)
            m.d.comb += [n_dw.i.valid.eq(sel.valid), n_dw.i.payload.eq(sel.payload),
                         sel.ready.eq(n_dw.i.ready),
                         n_w.i.valid.eq(self.data_w.valid & w_ok),
                         n_w.i.payload.eq(self.data_w.payload.data),
                         self.data_w.ready.eq(n_w.i.ready & w_ok)]
            if cfg.momentum:
                m.d.comb += [n_v.i.valid.eq(self.data_v.valid & v_ok),
                             n_v.i.payload.eq(self.data_v.payload.data),
                             self.data_v.ready.eq(n_v.i.ready & v_ok)]
            # w' to the writer; v' (momentum) into the staging FIFO at the same time.
            v_room = Mux(is_mom, vstage.w_rdy, 1)
            m.d.comb += [main.valid.eq(sgd_out.o.valid & v_room),
                         main.payload.eq(sgd_w),
                         sgd_out.o.ready.eq(main.ready & v_room)]
            if cfg.momentum:
                m.d.comb += [vstage.w_en.eq(sgd_out.o.valid & main.ready & is_mom),
                             vstage.w_data.eq(sgd_v)]
        with m.Else():
            _flow(m, relu_out, main)
        with m.If(self.data_w.valid & self.data_w.ready):
            m.d.sync += w_left.eq(w_left - 1)
        with m.If(self.data_v.valid & self.data_v.ready):
            m.d.sync += v_left.eq(v_left - 1)

        # Index words: 2-bit indices -> one word per lane -> beats.
        idx_words = m.submodules.idx_words = Narrow(f, t // f)
        m.d.comb += idx_words.i.valid.eq(idx_fifo.r_rdy)
        for lane in range(t):
            m.d.comb += idx_words.i.payload[lane].eq(idx_fifo.r_data[2 * lane:2 * lane + 2])
        m.d.comb += idx_fifo.r_en.eq(idx_words.i.ready)

        # -- write sequencer: segments (address, words, source) ----------------------------------
        seg_kind = Signal(2)        # 0 main, 1 index, 2 momentum staging
        seg_addr, seg_words = Signal(32), Signal(32)
        seg_beats = Signal(32)
        run_idx = Signal(16)
        run_base = Signal(32)
        sgd_off = Signal(32)
        segs_done = Signal()
        out_beat = Signal(32 * f)
        out_valid = Signal()
        out_take = Signal()
        with m.Switch(seg_kind):
            with m.Case(0):
                m.d.comb += [out_valid.eq(skid_main.o.valid), out_beat.eq(skid_main.o.payload),
                             skid_main.o.ready.eq(out_take)]
            with m.Case(1):
                m.d.comb += [out_valid.eq(idx_words.o.valid), out_beat.eq(idx_words.o.payload),
                             idx_words.o.ready.eq(out_take)]
            with m.Case(2):
                m.d.comb += [out_valid.eq(vstage.r_rdy), out_beat.eq(vstage.r_data),
                             vstage.r_en.eq(out_take)]
        sending = Signal()
        m.d.comb += [skid_wr.i.payload.eq(out_beat),
                     skid_wr.i.valid.eq(sending & out_valid),
                     out_take.eq(sending & out_valid & skid_wr.i.ready)]
        sgd_piece = Signal(32)
        m.d.comb += sgd_piece.eq(Mux(words_total - sgd_off > piece, piece,
                                     words_total - sgd_off))

        wr_idle = Signal()
        with m.FSM(name="write"):
            with m.State("IDLE"):
                m.d.comb += wr_idle.eq(1)
                with m.If(running & ~segs_done):
                    m.d.sync += [run_idx.eq(0), run_base.eq(cur.addr_out), sgd_off.eq(0)]
                    m.next = "NEXT"
            with m.State("NEXT"):
                # The next segment of the instruction, or done.
                last_seg = Signal()
                with m.If(is_pool):
                    m.d.sync += [seg_kind.eq(Mux(run_idx == 0, 0, 1)),
                                 seg_addr.eq(Mux(run_idx == 0, cur.addr_out, cur.addr_aux)),
                                 seg_words.eq(words_total)]
                    m.d.comb += last_seg.eq(run_idx == 1)
                with m.Elif(is_sgd):
                    second = is_mom & run_idx[0]
                    m.d.sync += [seg_kind.eq(Mux(second, 2, 0)),
                                 seg_addr.eq(Mux(second, cur.addr_aux, cur.addr_out) + sgd_off),
                                 seg_words.eq(sgd_piece)]
                    m.d.comb += last_seg.eq((sgd_off + sgd_piece >= words_total) &
                                            (~is_mom | run_idx[0]))
                with m.Else():
                    m.d.sync += [seg_kind.eq(0), seg_addr.eq(run_base),
                                 seg_words.eq(cur.run_words)]
                    m.d.comb += last_seg.eq(run_idx == cur.runs - 1)
                m.d.sync += seg_beats.eq(0)
                with m.If(last_seg):
                    m.d.sync += segs_done.eq(1)
                m.next = "CMD"
            with m.State("CMD"):
                m.d.comb += [self.wr_cmd.valid.eq(1), self.wr_cmd.payload.addr.eq(seg_addr),
                             self.wr_cmd.payload.length.eq(seg_words)]
                with m.If(self.wr_cmd.ready):
                    m.d.sync += [issued.eq(issued + 1), seg_beats.eq(seg_words >> lg_f)]
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += sending.eq(1)
                with m.If(out_take):
                    m.d.sync += seg_beats.eq(seg_beats - 1)
                with m.If((seg_beats == 0) | ((seg_beats == 1) & out_take)):
                    m.d.sync += [run_idx.eq(run_idx + 1),
                                 run_base.eq(run_base + cur.dram_stride)]
                    with m.If(is_sgd & (~is_mom | run_idx[0])):
                        m.d.sync += sgd_off.eq(sgd_off + seg_words)
                    with m.If(segs_done):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "NEXT"

        # -- reader: the SGD operands (and the stand-alone SGD's gradient), piece by piece --------
        rd_off = Signal(32)
        rd_sel = Signal(2)          # 0 w, 1 v, 2 g
        rd_piece = Signal(32)
        m.d.comb += rd_piece.eq(Mux(words_total - rd_off > piece, piece, words_total - rd_off))
        reading = Signal()
        rd_idle = Signal()
        with m.FSM(name="read"):
            with m.State("IDLE"):
                m.d.comb += rd_idle.eq(1)
                with m.If(running & (is_sgd | src_dram) & (rd_off < words_total)):
                    m.d.sync += rd_sel.eq(Mux(is_sgd, 0, 2))
                    m.next = "REQ"
            with m.State("REQ"):
                m.d.comb += reading.eq(1)
                reqs = {0: (self.req_w, cur.addr_out), 1: (self.req_v, cur.addr_aux),
                        2: (self.req_g, cur.addr_grad)}
                for k, (req, base) in reqs.items():
                    m.d.comb += [req.valid.eq(rd_sel == k),
                                 req.payload.addr.eq(base + rd_off),
                                 req.payload.length.eq(rd_piece)]
                ok = Mux(rd_sel == 0, self.req_w.ready,
                         Mux(rd_sel == 1, self.req_v.ready, self.req_g.ready))
                with m.If(ok):
                    nxt_v = (rd_sel == 0) & is_mom
                    nxt_g = ((rd_sel == 0) & ~is_mom & src_dram) | ((rd_sel == 1) & src_dram)
                    with m.If(nxt_v):
                        m.d.sync += rd_sel.eq(1)
                    with m.Elif(nxt_g):
                        m.d.sync += rd_sel.eq(2)
                    with m.Else():
                        m.d.sync += [rd_off.eq(rd_off + rd_piece),
                                     rd_sel.eq(Mux(is_sgd, 0, 2))]
                        with m.If(rd_off + rd_piece >= words_total):
                            m.next = "IDLE"

        # -- the instruction ---------------------------------------------------------------
        stage_busy = Signal()
        with m.FSM(name="store") as store_fsm:
            with m.State("IDLE"):
                can = self.instr.valid & tokens.ready() & acks.w_rdy
                # Waiting: blocked on tokens with no writes outstanding (the watchdog).
                m.d.comb += [self.waiting.eq(self.instr.valid & ~tokens.ready() &
                                             ~acks.r_rdy),
                             self.instr.ready.eq(can)]
                tokens.take(m, can)
                with m.If(can):
                    m.d.sync += [cur.eq(view), segs_done.eq(0), rd_off.eq(0), row_beat.eq(0)]
                    m.d.sync += [mode[n].eq(v) for n, v in decode(view).items()]
                    m.next = "SIZE"
            with m.State("SIZE"):
                m.d.sync += words_total.eq(cur.runs * cur.run_words)
                # Source beats: the drain's (OFM: Tm words a pixel; weights: Tm*Tn a tap).
                with m.If(src_dram):
                    m.d.sync += [src_left.eq(0), src_more.eq(0)]
                with m.Elif(src_weight):
                    m.d.sync += [src_left.eq(cur.drain_count << (2 * lg_t - lg_f)),
                                 src_more.eq(cur.drain_count != 0)]
                with m.Else():
                    m.d.sync += [src_left.eq(cur.drain_count << (lg_t - lg_f)),
                                 src_more.eq(cur.drain_count != 0)]
                m.next = "SIZE2"
            with m.State("SIZE2"):
                beats = words_total >> lg_f
                with m.If(src_dram):
                    m.d.sync += [src_left.eq(beats), src_more.eq(beats != 0)]
                m.d.sync += [w_left.eq(Mux(is_sgd, beats, 0)),
                             v_left.eq(Mux(is_mom, beats, 0))]
                m.next = "START"
            with m.State("START"):
                job = self.drain_job.payload
                m.d.comb += [self.drain_job.valid.eq(~src_dram),
                             job.source.as_value().eq(src_weight),
                             job.half.eq(cur.half), job.base.eq(cur.drain_base),
                             job.count.eq(cur.drain_count), job.log2_p.eq(cur.log2_p)]
                with m.If(src_dram | self.drain_job.ready):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += running.eq(1)
                reads_done = ~(is_sgd | src_dram) | (rd_idle & (rd_off >= words_total))
                with m.If(segs_done & wr_idle & (src_left == 0) & reads_done &
                          (w_left == 0) & (v_left == 0)):
                    m.next = "FINISH"
            with m.State("FINISH"):
                # The drain has delivered every word: the buffers are free. The loader's
                # token waits for the write responses (the tracker above).
                m.d.comb += self.give_compute.eq(cur.signal_compute)
                with m.If(cur.signal_load):
                    m.d.comb += [acks.w_en.eq(1), acks.w_data.eq(issued)]
                m.next = "IDLE"
        m.d.comb += stage_busy.eq(~store_fsm.ongoing("IDLE"))
        self._debug = {"store": store_fsm, "src_left": src_left, "running": running,
                       "segs_done": segs_done, "wr_idle": wr_idle, "rd_idle": rd_idle,
                       "w_left": w_left, "v_left": v_left, "seg_beats": seg_beats}
        m.d.comb += self.busy.eq(stage_busy | acks.r_rdy | skid_wr.busy)
        return m
