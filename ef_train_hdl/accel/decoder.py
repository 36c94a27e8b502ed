"""The instruction decoder: the command processor's checks of one tile instruction, in gateware.

Exactly the checks of :func:`ef_train_hdl.isa.check` in its order, so that a malformed
instruction (a corrupted program, a wrong address, a hand-written mistake) stops the program
with the same :class:`~ef_train_hdl.descriptor.ErrorCode` the host-side check names (tests
compare the two on every field). The products the range checks need are made in registered
steps, so the decoder takes a fixed :data:`DECODE_LATENCY` cycles and one instruction at a
time.

Latency: ``DECODE_LATENCY`` cycles from ``i`` accepted to ``o`` valid. Throughput: one
instruction per ``DECODE_LATENCY + 1`` cycles.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .. import isa
from ..core.job import addr_bits
from ..descriptor import ErrorCode
from ..isa import LoadMode, Op, Post, Source, Target, pool_max_width
from .common import ERROR_BITS, dispatch_layout

__all__ = ["Decoder", "DECODE_LATENCY"]

DECODE_LATENCY = 4


def _view(bits, op):
    return data.View(isa.amaranth_layout(op), bits)


class Decoder(wiring.Component):
    """See the module docstring.

    Members
    -------
    i : ``In(stream.Signature(dispatch_layout()))``
    o : ``Out(stream.Signature(StructLayout({"instr": dispatch_layout(), "code": 8})))``
        The instruction and its :class:`ErrorCode` (``OK``, or the first failed check).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(dispatch_layout())),
            "o": Out(stream.Signature(data.StructLayout({
                "instr": dispatch_layout(), "code": unsigned(ERROR_BITS)}))),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        t, f = cfg.tm, cfg.floats_per_beat
        lg_f = exact_log2(f)
        held = Signal(dispatch_layout())
        bits = held.bits
        words = [bits[32 * k:32 * k + 32] for k in range(isa.INSTR_WORDS)]
        hdr = _view(bits, Op.END)
        ld, cp, st = _view(bits, Op.LOAD), _view(bits, Op.COMPUTE), _view(bits, Op.STORE)
        op = hdr.opcode

        # -- stage 1 (combinational on the held instruction): the cheap checks --------------
        xor = Signal(32)            # the checksum of words 0..14 (stage 2)
        acc = Const(isa.CHECKSUM_SEED, 32)
        for k in range(isa.INSTR_WORDS - 1):
            acc = acc ^ words[k]

        def aligned(v):
            return (v[:lg_f] == 0) if lg_f else Const(1)

        def in_range(v):
            return (v >> (cfg.addr_width - 2)) == 0 if cfg.addr_width - 2 < 32 else Const(1)

        # -- stage 2: products (registered) -----------------------------------------------
        p_run = Signal(52)          # (runs - 1) * bank_run_stride
        p_step = Signal(52)         # (count - 1) * bank_step
        p_wh = Signal(32)           # pool_width * pool_height (LOAD or STORE fields)
        p_pool = Signal(32)         # (pool_height // 2) * (pool_width // 2)
        p_words = Signal(48)        # STORE: runs * run_words
        p_pix_step = Signal(52)     # LOAD pool: (w * h - 1) * bank_step (stage 3)
        want = Signal(48)           # STORE: words the source delivers
        drain_end = Signal(40)
        lw = Mux(op == Op.LOAD, ld.pool_width, st.pool_width)
        lh = Mux(op == Op.LOAD, ld.pool_height, st.pool_height)

        valid = Signal(range(DECODE_LATENCY + 1))
        code = Signal(ERROR_BITS)
        m.d.comb += [self.i.ready.eq(valid == 0),
                     self.o.valid.eq(valid == DECODE_LATENCY),
                     self.o.payload.instr.eq(held), self.o.payload.code.eq(code)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [held.eq(self.i.payload), valid.eq(1)]
        with m.Elif((valid != 0) & (valid != DECODE_LATENCY)):
            m.d.sync += valid.eq(valid + 1)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += valid.eq(0)

        with m.If(valid == 1):
            m.d.sync += [
                xor.eq(acc),
                p_run.eq((ld.runs - 1) * ld.bank_run_stride),
                p_step.eq((ld.count - 1) * ld.bank_step),
                p_wh.eq(lw * lh),
                p_pool.eq((lh >> 1) * (lw >> 1)),
                p_words.eq(st.runs * st.run_words),
                drain_end.eq(st.drain_base + (st.drain_count << st.log2_p)),
                want.eq(Mux(st.source == Source.OFM,
                            Mux((st.post == Post.POOL) | (st.post == Post.RELU_POOL),
                                (lh >> 1) * (lw >> 1), st.drain_count) * t,
                            Mux(st.bias_select, st.drain_count * t, st.drain_count * t * t))),
            ]
        with m.If(valid == 2):
            m.d.sync += p_pix_step.eq((p_wh - 1) * ld.bank_step)

        # -- stages 3 and 4: the checks in isa.check's order ---------------------------------
        # (condition that fails, code, ``stage``, stage-4 part or None), first wins. ``stage`` is
        # the ``valid`` count in whose cycle the condition is registered: 1 for conditions of
        # the held instruction alone (their flags are stage-2 values), 2 for those that need a
        # stage-2 product (stage-3 values).
        checks = []

        def fail(cond, err, opts=None):
            opts = opts or {}
            checks.append((cond, err, opts.get("stage", 1), opts.get("late")))

        S2 = {"stage": 2}

        unit_of = {Op.LOAD: "load", Op.COMPUTE: "compute", Op.STORE: "store"}
        fail(hdr.magic != isa.MAGIC, ErrorCode.BAD_MAGIC)
        fail(words[15] != xor, ErrorCode.BAD_CHECKSUM, S2)
        fail(op > Op.STORE, ErrorCode.BAD_OPCODE)
        self_ref = Mux(op == Op.LOAD, (hdr.wait_load != 0) | hdr.signal_load,
                       Mux(op == Op.COMPUTE, (hdr.wait_compute != 0) | hdr.signal_compute,
                           Mux(op == Op.STORE, (hdr.wait_store != 0) | hdr.signal_store,
                               Cat(hdr.wait_load, hdr.wait_compute, hdr.wait_store,
                                   hdr.signal_load, hdr.signal_compute,
                                   hdr.signal_store).any())))
        fail(self_ref, ErrorCode.BAD_FLAGS)
        is_load, is_compute, is_store = op == Op.LOAD, op == Op.COMPUTE, op == Op.STORE

        # LOAD
        tgt, mode = ld.target, ld.mode
        weightish = (tgt == Target.WEIGHT) | (tgt == Target.BIAS)
        relu_m = (mode == LoadMode.RELU_BP) | (mode == LoadMode.RELU_POOL_BP)
        pool_m = (mode == LoadMode.POOL_BP) | (mode == LoadMode.RELU_POOL_BP)
        load_checks = []
        load_checks.append((weightish & (mode != 0), ErrorCode.BAD_FLAGS))
        load_checks.append((ld.transpose & (tgt != Target.WEIGHT), ErrorCode.BAD_FLAGS))
        load_checks.append((ld.count == 0, ErrorCode.BAD_SIZE))
        load_checks.append(((ld.runs == 0) | ((mode != LoadMode.PLAIN) & (ld.runs != 1)),
                            ErrorCode.BAD_SIZE))
        for addr, cond in ((ld.addr_a, 1), (ld.addr_b, relu_m), (ld.addr_c, pool_m),
                           (ld.dram_stride, ld.runs > 1)):
            load_checks.append((cond & ~aligned(addr), ErrorCode.MISALIGNED_ADDRESS))
            load_checks.append((cond & ~in_range(addr), ErrorCode.ADDRESS_RANGE))
        bias_t, weight_t = tgt == Target.BIAS, tgt == Target.WEIGHT
        load_checks.append((bias_t & ((ld.count != 1) | (ld.runs != 1)), ErrorCode.BAD_SIZE))
        load_checks.append((weight_t & ((ld.taps == 0) | (ld.taps > cfg.k_max ** 2)),
                            ErrorCode.BAD_SIZE))
        wmax = pool_max_width(cfg)
        pix = ~weightish & pool_m
        load_checks.append((pix & ((ld.pool_width < 2) | (ld.pool_height < 1) |
                                   (ld.pool_width > wmax) | (ld.pool_height > cfg.max_size)),
                            ErrorCode.BAD_SIZE))
        load_checks.append((pix & (ld.count != p_pool), ErrorCode.BAD_SIZE, S2))
        depth = Mux(weightish, cfg.weight_depth,
                    Mux(tgt == Target.IFM, cfg.ifm_depth, cfg.ofm_depth))
        # The tile's last bank word against the buffer's depth: bank_base + span >= depth,
        # compared at stage 4 as span >= depth - bank_base, one comparison of registers.
        # ``span`` and ``room`` (stage 3): the tile's last word above ``bank_base`` (not a pool
        # tile's), and the words left above ``bank_base`` (0 if it is already past the end).
        span, room = Signal(56), Signal(56)
        with m.If(valid == 2):
            m.d.sync += [
                span.eq(Mux(bias_t, 0, Mux(weight_t, p_run + p_step + ld.taps - 1,
                                            p_run + p_step))),
                room.eq(Mux(ld.bank_base >= depth, 0, depth - ld.bank_base)),
            ]
        pool_tile = pool_m & ~weightish
        load_checks.append((~pool_tile, ErrorCode.BAD_TILE, {"stage": 2, "late": span >= room}))
        load_checks.append((pool_tile, ErrorCode.BAD_TILE,
                            {"stage": 2, "late": p_pix_step >= room}))
        for cond, err, *opts in load_checks:
            fail(is_load & cond, err, *opts)

        # COMPUTE
        for value, dep in ((cp.ifm_base, cfg.ifm_depth), (cp.w_base, cfg.weight_depth),
                           (cp.ofm_base, cfg.ofm_depth), (cp.bias_addr, cfg.weight_depth)):
            fail(is_compute & ((value >> addr_bits(dep)) != 0), ErrorCode.BAD_TILE)

        # STORE
        src, post = st.source, st.post
        ofm_s, w_s, dram_s = src == Source.OFM, src == Source.WEIGHT, src == Source.DRAM
        combo_ok = ((ofm_s & (post <= Post.RELU_POOL)) |
                    (w_s & ((post == Post.NONE) | (post == Post.SGD) |
                            (post == Post.SGD_MOMENTUM))) |
                    (dram_s & ((post == Post.SGD) | (post == Post.SGD_MOMENTUM))))
        pool_p = (post == Post.POOL) | (post == Post.RELU_POOL)
        store_checks = [
            (~combo_ok, ErrorCode.BAD_FLAGS),
            ((post == Post.SGD_MOMENTUM) & (0 if cfg.momentum else 1), ErrorCode.BAD_FLAGS),
            (st.bias_select & ~w_s, ErrorCode.BAD_FLAGS),
            ((st.runs == 0) | (st.run_words == 0), ErrorCode.BAD_SIZE),
            (~dram_s & (st.drain_count == 0), ErrorCode.BAD_SIZE),
            (~dram_s & (st.log2_p > exact_log2(cfg.acc_interleave)), ErrorCode.BAD_INTERLEAVE),
            (~dram_s & (drain_end > Mux(ofm_s, cfg.ofm_depth, cfg.weight_depth)),
             ErrorCode.BAD_TILE, S2),
            ((st.run_words[:lg_f] != 0) if lg_f else Const(0), ErrorCode.BAD_SIZE),
            ((st.runs != 1) & (post > Post.RELU), ErrorCode.BAD_SIZE),
        ]
        for addr, cond in ((st.addr_out, 1),
                           (st.addr_aux, pool_p | (post == Post.SGD_MOMENTUM)),
                           (st.addr_grad, dram_s)):
            store_checks.append((cond & ~aligned(addr), ErrorCode.MISALIGNED_ADDRESS))
            store_checks.append((cond & ~in_range(addr), ErrorCode.ADDRESS_RANGE))
        store_checks.append(((st.runs > 1) & ~aligned(st.dram_stride),
                             ErrorCode.MISALIGNED_ADDRESS))
        store_checks.append(((st.runs > 1) & ~in_range(st.dram_stride), ErrorCode.ADDRESS_RANGE))
        store_checks.append((ofm_s & pool_p & ((st.pool_width < 2) | (st.pool_height < 2) |
                                               (st.pool_width > wmax) |
                                               (p_wh != st.drain_count)),
                             ErrorCode.BAD_SIZE, S2))
        store_checks.append((~dram_s & (p_words != want), ErrorCode.BAD_SIZE, S2))
        for cond, err, *opts in store_checks:
            fail(is_store & cond, err, *opts)

        # Stage 2 registers the checks of the held instruction alone and, for every run of
        # them between the others, which of the run failed first; stage 3 registers the checks
        # that need a stage-2 product; stage 4 compares the tile's last word with the buffer
        # depth (``late``) and takes the first failure of about a dozen entries. Each stage is
        # a few LUTs deep, not a chain through all fifty checks.
        entries, run = [], []

        def close_run():
            if run:
                any_fail, first = _first(run)
                r_any = Signal(name=f"run_{len(entries)}")
                r_code = Signal(ERROR_BITS, name=f"run_{len(entries)}_code")
                with m.If(valid == 2):
                    m.d.sync += [r_any.eq(any_fail), r_code.eq(first)]
                entries.append((r_any, r_code))
                run.clear()

        for k, (cond, err, stage, late) in enumerate(checks):
            flag = Signal(name=f"fail_{k}")
            with m.If(valid == stage):
                m.d.sync += flag.eq(cond)
            if stage == 1:
                run.append((flag, Const(err, ERROR_BITS)))
            else:
                close_run()
                entries.append((flag if late is None else flag & late, Const(err, ERROR_BITS)))
        close_run()
        _, result = _first(entries)
        with m.If(valid == DECODE_LATENCY - 1):
            m.d.sync += code.eq(result)
        return m


def _first(checks):
    """``(any failed, code of the first failed or OK)`` of ``[(failed, code), ...]``, as a
    tree of depth log2(len(checks)) rather than a chain."""
    if len(checks) == 1:
        cond, err = checks[0]
        return cond, Mux(cond, err, ErrorCode.OK)
    half = len(checks) // 2
    any_a, code_a = _first(checks[:half])
    any_b, code_b = _first(checks[half:])
    return any_a | any_b, Mux(any_a, code_a, code_b)
