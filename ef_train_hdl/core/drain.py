"""Drain: reads finished results out of the buffers and reduces their partial sums.

A result is held as P = 2**log2_p partial sums at consecutive words (docs/numerics.md
section 4); the drain reads them one per cycle and a chain of log2(A) pairing stages adds
consecutive pairs, level by level, which is exactly the contract's ``tree_sum``. A stage
whose level the job's P does not reach passes values through.

Order of the output beats (``F = drain_lanes(cfg)`` words each, one DMA beat):

- ``OFM`` (FP/BP results in an OFM half): for each of ``count`` pixels from ``base``, the Tm
  lanes in beats of F (the activation layout's lane order);
- ``WEIGHT`` (WU results): for each of ``count`` taps from ``base``, for each PE row m, the Tn
  PEs in beats of F (the weight layout's ``[tap][mi][nj]`` order).

Two paths, both F words a beat at the output:

- OFM results without partial sums (P = 1, every convolution): a whole beat a cycle straight
  from the banks. This is the path that ends a layer (the last tile's drain overlaps
  nothing), so it runs at the full rate.
- Everything else — partial sums (P > 1: FC layers), and weight gradients, which feed the
  SGD unit at its pace of two write beats a gradient beat — reads ``R = reduce_lanes(cfg)``
  = F / 2 words a cycle through the pairing stages (3 x R adders instead of 3 x F) and two
  of those make a beat.

Throughput: OFM with P = 1 one beat a cycle; otherwise one beat per 2 P cycles (R words per P
reads). Latency about 2 + 7*log2(P) cycles. The output has a FIFO and the drain only starts
a read when the FIFO will have room for it, so ``out.ready`` may stall at any time and
nothing is lost. The drain waits while the tile engine owns the half (OFM) or the weight
region (WEIGHT) it is asked to read.
"""

from amaranth.hdl import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..fp import FAdd
from .job import DrainSource, TileError, addr_bits, drain_layout

__all__ = ["Drain", "drain_lanes", "reduce_lanes", "drain_beat_layout"]

FIFO_DEPTH = 32


def drain_lanes(cfg):
    """Words per drained beat: one DMA beat (``min(floats_per_beat, Tm, Tn)``)."""
    return min(cfg.floats_per_beat, cfg.tm, cfg.tn)


def reduce_lanes(cfg):
    """Words a cycle through the partial-sum reducer (and of weight-gradient reads): half a
    beat. A weight-gradient drain feeds SGD with momentum, which writes two beats a gradient
    beat, and partial sums are FC layers', where the drain is not the bottleneck: the half
    width costs no time where it matters and halves the reducer (3 x R adders) and the
    Tm x Tn-word weight read mux."""
    return max(1, drain_lanes(cfg) // 2)


def drain_beat_layout(cfg):
    return data.StructLayout({"data": data.ArrayLayout(32, drain_lanes(cfg)),
                              "last": unsigned(1)})


def _log2(v):
    return (v - 1).bit_length()


class Drain(wiring.Component):
    """See the module docstring.

    Members
    -------
    job : ``In(stream.Signature(drain_layout(cfg)))``
    out : ``Out(stream.Signature(drain_beat_layout(cfg)))``
    engine_w_owned : ``In(2)``
        Bit s: a job in the tile engine uses weight region s (the drain waits for it).
    engine_ofm_owned : ``In(2)``
        Bit h: the engine's jobs in flight use OFM half h.
    ofm_half, ofm_addr / ofm_data : reads of every OFM bank (data one cycle later).
    w_addr / w_data : reads of every weight bank (data one cycle later).
    busy : ``Out(1)``
    error : ``Out(TileError)``
        ``DRAIN_RANGE`` when the last job was refused (``count`` zero or past the bank).
    """

    def __init__(self, cfg):
        self._cfg = cfg
        tm, tn = cfg.tm, cfg.tn
        super().__init__({
            "job": In(stream.Signature(drain_layout(cfg))),
            "out": Out(stream.Signature(drain_beat_layout(cfg))),
            "engine_w_owned": In(2), "engine_ofm_owned": In(2),
            "ofm_half": Out(1), "ofm_addr": Out(addr_bits(cfg.ofm_depth)),
            "ofm_data": In(32).array(tm),
            "w_addr": Out(addr_bits(cfg.weight_depth)),
            "w_data": In(32).array(tm, tn),
            "busy": Out(1),
            "error": Out(TileError),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        tm, tn = cfg.tm, cfg.tn
        f = drain_lanes(cfg)
        r_ = reduce_lanes(cfg)
        u = f // r_                     # reduced reads a beat (1 or 2)
        m = Module()
        job = Signal(drain_layout(cfg))
        wsrc = job.source == DrainSource.WEIGHT
        # OFM without partial sums: whole beats straight from the banks.
        wide = ~wsrc & (job.log2_p == 0)
        p = Signal(4)
        m.d.comb += p.eq(1 << job.log2_p)

        fifo = m.submodules.fifo = SyncFIFOBuffered(width=32 * f + 1, depth=FIFO_DEPTH)
        # Room in the FIFO, in reduced reads (a beat is u of them).
        credits = Signal(range(u * FIFO_DEPTH + 1), init=u * FIFO_DEPTH)
        popped = self.out.valid & self.out.ready
        m.d.comb += [self.out.payload.eq(fifo.r_data), self.out.valid.eq(fifo.r_rdy),
                     fifo.r_en.eq(self.out.ready)]

        # -- read loops: item (pixel or tap), row (WEIGHT), chunk, partial -----------------
        item, k = Signal(job.count.shape()), Signal(4)
        row, chunk = Signal(range(tm)), Signal(range(max(tm, tn) // r_ + 1))
        n_chunks = Mux(wsrc, tn // r_, Mux(wide, tm // f, tm // r_))
        # Beats still to go into the FIFO (counting down keeps ``last`` a compare with 1).
        beats_left = Signal(32)
        reading = Signal()
        issue = Signal()
        # The read address ``base + item * P + k`` is kept in registers and stepped (a bank's
        # address comes straight from a flip-flop): ``item_base`` is ``base + item * P``;
        # ``addr`` runs through the P words of an item once per chunk (and row).
        width = len(job.base) + 1
        addr, item_base = Signal(width), Signal(width)
        # Wide enough for every log2_p the check lets through (larger ones are refused).
        end = Signal(len(job.count) + _log2(cfg.acc_interleave) + 1)
        count_m1 = Signal.like(job.count)
        m.d.comb += [self.ofm_addr.eq(addr), self.w_addr.eq(addr), self.ofm_half.eq(job.half)]
        # The weight regions the job's words lie in (set in CHECK_RANGE).
        regions = Signal(2)
        blocked = Mux(wsrc, (regions & self.engine_w_owned).any(),
                      self.engine_ofm_owned.bit_select(job.half, 1))
        start_beat = k == 0
        need = Mux(wide, u, 1)
        m.d.comb += issue.eq(reading & ~blocked & (~start_beat | (credits >= need)))
        m.d.sync += credits.eq(credits - Mux(issue & start_beat, need, 0) +
                               Mux(popped, u, 0))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(1)
                with m.If(self.job.valid):
                    m.d.sync += [job.eq(self.job.payload), self.error.eq(TileError.NONE)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                # Two cycles of checks, so that neither the shift-and-add of the end address
                # nor its compare sits behind the other in one clock.
                m.d.comb += self.busy.eq(1)
                m.d.sync += [item.eq(0), k.eq(0), row.eq(0), chunk.eq(0),
                             addr.eq(job.base), item_base.eq(job.base),
                             count_m1.eq(job.count - 1),
                             end.eq(job.base + (job.count << job.log2_p)),
                             beats_left.eq(Mux(wsrc, job.count * (tm * (tn // f)),
                                               job.count * (tm // f)))]
                m.next = "CHECK_RANGE"
            with m.State("CHECK_RANGE"):
                m.d.comb += self.busy.eq(1)
                wtop = addr_bits(cfg.weight_depth) - 1
                m.d.sync += regions.eq((1 << job.base[wtop]) | (1 << (end - 1)[wtop]))
                depth = Mux(wsrc, cfg.weight_depth, cfg.ofm_depth)
                bad = ((job.count == 0) | (job.log2_p > _log2(cfg.acc_interleave)) |
                       (end > depth))
                with m.If(bad):
                    m.d.sync += self.error.eq(TileError.DRAIN_RANGE)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += [self.busy.eq(1), reading.eq(1)]
                with m.If(issue):
                    m.d.sync += [k.eq(k + 1), addr.eq(addr + 1)]
                    with m.If(k == p - 1):
                        # The next chunk (or row) reads the same P words again.
                        m.d.sync += [k.eq(0), chunk.eq(chunk + 1), addr.eq(item_base)]
                        with m.If(chunk == n_chunks - 1):
                            m.d.sync += [chunk.eq(0), row.eq(row + 1)]
                            with m.If(~wsrc | (row == tm - 1)):
                                m.d.sync += [row.eq(0), item.eq(item + 1),
                                             item_base.eq(item_base + p),
                                             addr.eq(item_base + p)]
                                with m.If(item == count_m1):
                                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += self.busy.eq(1)
                with m.If(beats_left == 0):
                    m.next = "IDLE"

        # -- lane selection, one cycle after the read -----------------------------------------
        v0 = Signal()
        sel_row, sel_chunk, sel_w, sel_wide = (Signal.like(row), Signal.like(chunk), Signal(),
                                               Signal())
        m.d.sync += [v0.eq(issue), sel_row.eq(row), sel_chunk.eq(chunk), sel_w.eq(wsrc),
                     sel_wide.eq(wide)]
        # The whole-beat path: F lanes of a pixel.
        wide_lanes = Signal(data.ArrayLayout(32, f))
        wide_valid = Signal()
        for i in range(f):
            words = Array(self.ofm_data[c * f + i] for c in range(tm // f))
            m.d.sync += wide_lanes[i].eq(words[sel_chunk])
        m.d.sync += wide_valid.eq(v0 & sel_wide)
        # The reduced path: R lanes.
        lanes = Signal(data.ArrayLayout(32, r_))
        for i in range(r_):
            ofm_words = Array(self.ofm_data[c * r_ + i] for c in range(tm // r_))
            w_words = Array(Array(self.w_data[rr][c * r_ + i] for c in range(tn // r_))
                            for rr in range(tm))
            m.d.sync += lanes[i].eq(Mux(sel_w, w_words[sel_row][sel_chunk],
                                        ofm_words[sel_chunk]))
        valid = Signal()
        m.d.sync += valid.eq(v0 & ~sel_wide)

        # -- pairing stages: tree_sum of the P partials -----------------------------------------
        for s in range(_log2(cfg.acc_interleave)):
            active = job.log2_p > s
            hold = Signal(name=f"hold{s}")
            held = Signal(data.ArrayLayout(32, r_), name=f"held{s}")
            out_valid = Signal(name=f"stage{s}_valid")
            out = Signal(data.ArrayLayout(32, r_), name=f"stage{s}")
            adders = []
            for i in range(r_):
                add = FAdd()
                m.submodules[f"reduce{s}_{i}"] = add
                m.d.comb += [add.a.eq(held[i]), add.b.eq(lanes[i]),
                             add.i_valid.eq(valid & hold & active)]
                adders.append(add)
            with m.If(valid & active):
                m.d.sync += hold.eq(~hold)
                with m.If(~hold):
                    m.d.sync += held.eq(lanes)
            passed = Signal(data.ArrayLayout(32, r_), name=f"pass{s}")
            pass_valid = Signal(name=f"pass{s}_valid")
            m.d.sync += [passed.eq(lanes), pass_valid.eq(valid & ~active)]
            m.d.comb += out_valid.eq(Mux(active, adders[0].o_valid, pass_valid))
            for i in range(r_):
                m.d.comb += out[i].eq(Mux(active, adders[i].result, passed[i]))
            lanes, valid = out, out_valid

        # -- u reduced reads make a beat ---------------------------------------------------------
        beat = Signal(data.ArrayLayout(32, f))
        beat_valid = Signal()
        if u == 1:
            m.d.comb += [beat.eq(lanes), beat_valid.eq(valid)]
        else:
            first = Signal(data.ArrayLayout(32, r_))
            have_first = Signal()
            with m.If(valid):
                m.d.sync += have_first.eq(~have_first)
                with m.If(~have_first):
                    m.d.sync += first.eq(lanes)
            m.d.comb += [beat.eq(Cat(first.as_value(), lanes.as_value())),
                         beat_valid.eq(valid & have_first)]
        # One job at a time: the two paths never deliver in the same cycle.
        w_data = Mux(wide_valid, wide_lanes.as_value(), beat.as_value())
        w_en = wide_valid | beat_valid
        last = beats_left == 1
        m.d.comb += [fifo.w_en.eq(w_en), fifo.w_data.eq(Cat(w_data, last))]
        with m.If(w_en):
            m.d.sync += beats_left.eq(beats_left - 1)
        return m
