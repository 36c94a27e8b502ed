"""Store-path post-ops (ef_train_hdl/core/postops.py) against a numpy reference, bit for bit.

The reference (class ``ops`` below) is written from docs/numerics.md sections 8-9 on numpy
float32 and the model's scalar ops, with the signatures of ef_train_hdl.model.ops.

Every stream of every unit runs under random valid and ready stalls (tests/stream_helpers.py),
with special values (+-0, NaN with several payloads, +-inf, subnormals), pooling ties and odd
map sizes. A failing simulation is re-run with a VCD written under pytest's tmp_path, and the
failure names the file.
"""

import random

import numpy as np
import pytest
from amaranth.hdl import Const

from ef_train_hdl.config import AcceleratorConfig
from ef_train_hdl.core.postops import (
    MaxPoolBackward, MaxPoolForward, ReluBackward, ReluForward, SgdUpdate,
)
from ef_train_hdl.model import fp
from stream_helpers import assert_bits_equal, simulate, stream_get, stream_put

# (producer idle probability, consumer stall probability) crossed on every port.
STALLS = [(0.0, 0.0), (0.3, 0.3), (0.7, 0.1), (0.1, 0.7)]

SPECIAL_BITS = np.array([
    0x0000_0000, 0x8000_0000,              # +0, -0
    0x7F80_0000, 0xFF80_0000,              # +inf, -inf
    0x7FC0_0000, 0xFFC0_0000,              # canonical NaN, negative quiet NaN
    0x7F80_0001, 0x7FA5_5555,              # signalling NaN, NaN with a payload
    0x0000_0001, 0x807F_FFFF, 0x0040_0000,  # subnormals
    0x0080_0000, 0x7F7F_FFFF, 0xFF7F_FFFF,  # smallest normal, +-largest finite
    0x3F80_0000, 0xBF80_0000,              # +-1
], dtype=np.uint32)

# A small alphabet so that 2x2 windows often hold equal values (ties, +0 against -0).
TIE_BITS = np.array([0x0000_0000, 0x8000_0000, 0x3F80_0000, 0xBF80_0000, 0x4000_0000,
                     0x7FC0_0000, 0x7F80_0001, 0xFF80_0000], dtype=np.uint32)


def random_words(rng, shape, *, special=0.2, ties=0.0):
    """binary32 encodings: mostly normal numbers, some special values, some tie alphabet."""
    normal = (rng.standard_normal(shape) * np.exp2(rng.integers(-20, 20, shape))
              ).astype(np.float32).view(np.uint32)
    pick = rng.random(shape)
    words = np.where(pick < special, rng.choice(SPECIAL_BITS, shape), normal)
    words = np.where((pick >= special) & (pick < special + ties), rng.choice(TIE_BITS, shape),
                     words)
    return words.astype(np.uint32)


def f32(words):
    return np.asarray(words, dtype=np.uint32).view(np.float32)


def u32(values):
    return np.asarray(values, dtype=np.float32).view(np.uint32)


def to_int(value):
    return value if isinstance(value, int) else Const.cast(value).value


def unpack(value, lanes, bits=32):
    value = to_int(value)
    mask = (1 << bits) - 1
    return [(value >> (bits * lane)) & mask for lane in range(lanes)]


def beats_of(pixels):
    """Beats (lists of lane words) from an array ``[..., lanes]`` of pixels in stream order."""
    return [[int(w) for w in pixel] for pixel in pixels.reshape(-1, pixels.shape[-1])]


class ops:
    """Reference post-ops written from docs/numerics.md sections 8 and 9 on numpy float32 and
    the model's scalar ops (ef_train_hdl.model.fp); same names and signatures as
    ef_train_hdl.model.ops."""

    @staticmethod
    def relu_fp(x):
        u = fp.bits(x)
        return fp.from_bits(np.where(u >> 31 != 0, 0, u).astype(np.uint32))

    @staticmethod
    def relu_bp(g_y, y):
        return fp.from_bits(np.where(fp.bits(y) != 0, fp.bits(g_y), 0).astype(np.uint32))

    @staticmethod
    def maxpool_fp(x):
        x = fp.as_f32(x)
        h2, w2 = x.shape[-2] // 2, x.shape[-1] // 2
        window = [x[..., di:2 * h2:2, dj:2 * w2:2] for di in (0, 1) for dj in (0, 1)]
        v, idx = window[0], np.zeros(window[0].shape, np.int64)
        for k in (1, 2, 3):
            xk = window[k]
            with np.errstate(invalid="ignore"):
                take = (np.isnan(xk) & ~np.isnan(v)) | (~np.isnan(xk) & ~np.isnan(v) & (xk > v))
            # np.where on the encodings keeps NaN payloads, as the hardware passes them.
            v = fp.from_bits(np.where(take, fp.bits(xk), fp.bits(v)))
            idx = np.where(take, k, idx)
        return v, idx

    @staticmethod
    def maxpool_bp(g_y, idx, in_hw):
        g = fp.bits(g_y)
        h2, w2 = g.shape[-2], g.shape[-1]
        g_x = np.zeros(g.shape[:-2] + tuple(in_hw), np.uint32)
        for di in (0, 1):
            for dj in (0, 1):
                g_x[..., di:2 * h2:2, dj:2 * w2:2] = np.where(idx == 2 * di + dj, g, 0)
        return fp.from_bits(g_x)

    @staticmethod
    def sgd(w, dw, lr, cfg, mu=None, v=None):
        if v is None:
            return fp.fsub(w, fp.fmul(lr, dw)), None
        v_new = fp.fadd(fp.fmul(mu, v), dw)
        return fp.fsub(w, fp.fmul(lr, v_new)), v_new


# -- parameter validation ----------------------------------------------------------------------

@pytest.mark.parametrize("cls, args, exc, words", [
    (ReluForward, (0,), TypeError, "lanes"),
    (ReluBackward, (True,), TypeError, "lanes"),
    (MaxPoolForward, (2, 1), ValueError, "max_width"),
    (MaxPoolForward, (2, 8, 0), ValueError, "max_height"),
    (MaxPoolBackward, (2, 8.0), TypeError, "max_width"),
])
def test_bad_parameters(cls, args, exc, words):
    with pytest.raises(exc, match=words):
        cls(*args)


# -- ReLU ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("idle, stall", STALLS)
def test_relu_forward(tmp_path, lanes, idle, stall):
    rng = np.random.default_rng(lanes * 100 + int(idle * 10) + int(stall * 100))
    x = random_words(rng, (200, lanes), special=0.4)
    want = u32(ops.relu_fp(f32(x)))
    got = []

    def build():
        dut = ReluForward(lanes)
        got.clear()

        async def producer(ctx):
            await stream_put(ctx, dut.x, beats_of(x), rng=random.Random(1), idle_prob=idle)

        async def consumer(ctx):
            beats = await stream_get(ctx, dut.y, len(x), rng=random.Random(2),
                                     stall_prob=stall, timeout=200)
            got.extend(unpack(beat, lanes) for beat in beats)

        return dut, [producer, consumer], lambda: assert_bits_equal(got, want, "relu_fp")

    simulate(tmp_path, "relu_forward", build)


@pytest.mark.parametrize("lanes", [1, 3])
@pytest.mark.parametrize("idle, stall", STALLS)
def test_relu_backward(tmp_path, lanes, idle, stall):
    rng = np.random.default_rng(7 + lanes + int(idle * 10) + int(stall * 100))
    g_y = random_words(rng, (200, lanes))
    # The stored ReLU output: never negative; +0 often, so the mask has both outcomes.
    y = u32(ops.relu_fp(f32(random_words(rng, (200, lanes), special=0.3, ties=0.3))))
    want = u32(ops.relu_bp(f32(g_y), f32(y)))
    got = []

    def build():
        dut = ReluBackward(lanes)
        got.clear()

        async def put_grad(ctx):
            await stream_put(ctx, dut.grad_y, beats_of(g_y), rng=random.Random(3),
                             idle_prob=idle)

        async def put_y(ctx):
            # A different idle pattern than grad_y, so the join sees them skewed both ways.
            await stream_put(ctx, dut.y, beats_of(y), rng=random.Random(4),
                             idle_prob=min(0.8, idle * 1.5 + 0.1))

        async def consumer(ctx):
            beats = await stream_get(ctx, dut.grad_x, len(g_y), rng=random.Random(5),
                                     stall_prob=stall, timeout=200)
            got.extend(unpack(beat, lanes) for beat in beats)

        return dut, [put_grad, put_y, consumer], lambda: assert_bits_equal(got, want, "relu_bp")

    simulate(tmp_path, "relu_backward", build)


# -- max-pool ------------------------------------------------------------------------------------

def to_stream(maps):
    """``[maps, lanes, H, W]`` -> raster-order beats ``[maps * H * W, lanes]``."""
    return np.moveaxis(maps, 1, -1).reshape(-1, maps.shape[1])


def from_stream(beats, maps, lanes, height, width):
    return np.moveaxis(np.asarray(beats, dtype=np.uint32).reshape(maps, height, width, lanes),
                       -1, 1)


POOL_SIZES = [(4, 4, 2), (5, 7, 2), (2, 2, 3), (3, 3, 2), (6, 16, 1), (7, 15, 1), (1, 6, 2),
              (4, 1, 2)]


@pytest.mark.parametrize("height, width, maps", POOL_SIZES)
@pytest.mark.parametrize("idle, stall", STALLS[1:])
def test_maxpool_forward(tmp_path, height, width, maps, idle, stall):
    lanes, max_width = 3, 16
    rng = np.random.default_rng(height * 1000 + width * 10 + int(stall * 10))
    x = random_words(rng, (maps, lanes, height, width), special=0.2, ties=0.5)
    want_y, want_idx = ops.maxpool_fp(f32(x))
    want_y, want_idx = u32(want_y), np.asarray(want_idx)
    count = maps * (height // 2) * (width // 2)
    got = []

    def build():
        dut = MaxPoolForward(lanes, max_width)
        got.clear()

        async def producer(ctx):
            ctx.set(dut.width, width)
            ctx.set(dut.height, height)
            await stream_put(ctx, dut.x, beats_of(to_stream(x)), rng=random.Random(6),
                             idle_prob=idle, timeout=200)
            await ctx.tick().repeat(4)
            assert not ctx.get(dut.error), "error raised for a valid size"

        async def consumer(ctx):
            beats = await stream_get(ctx, dut.y, count, rng=random.Random(7),
                                     stall_prob=stall, timeout=400)
            got.extend(beats)
            # Nothing beyond the pooled pixels comes out.
            for _ in range(8):
                ctx.set(dut.y.ready, 1)
                _, _, valid = await ctx.tick().sample(dut.y.valid)
                assert not valid, "more pooled beats than (H // 2) * (W // 2) per map"

        def check():
            values = [unpack(Const.cast(b.value).value, lanes) for b in got]
            idxs = [unpack(Const.cast(b.idx).value, lanes, bits=2) for b in got]
            shape = (maps, lanes, height // 2, width // 2)
            assert_bits_equal(from_stream(values, *shape[:2], *shape[2:]), want_y,
                              "maxpool_fp value")
            assert_bits_equal(from_stream(idxs, *shape[:2], *shape[2:]),
                              want_idx.astype(np.uint32), "maxpool_fp idx")

        return dut, [producer, consumer], check

    simulate(tmp_path, "maxpool_forward", build)


@pytest.mark.parametrize("height, width, maps", POOL_SIZES)
@pytest.mark.parametrize("idle, stall", STALLS[1:])
def test_maxpool_backward(tmp_path, height, width, maps, idle, stall):
    lanes, max_width = 2, 16
    rng = np.random.default_rng(height * 1000 + width * 10 + int(stall * 10) + 1)
    pooled = (maps, lanes, height // 2, width // 2)
    g_y = random_words(rng, pooled)
    idx = rng.integers(0, 4, pooled)
    want = u32(ops.maxpool_bp(f32(g_y), idx, (height, width)))
    got = []

    def build():
        dut = MaxPoolBackward(lanes, max_width)
        got.clear()

        async def put_grad(ctx):
            ctx.set(dut.width, width)
            ctx.set(dut.height, height)
            await stream_put(ctx, dut.grad_y, beats_of(to_stream(g_y)), rng=random.Random(8),
                             idle_prob=idle, timeout=200)

        async def put_idx(ctx):
            await stream_put(ctx, dut.idx, beats_of(to_stream(idx)), rng=random.Random(9),
                             idle_prob=0.5, timeout=200)

        async def consumer(ctx):
            beats = await stream_get(ctx, dut.grad_x, maps * height * width,
                                     rng=random.Random(10), stall_prob=stall, timeout=200)
            got.extend(unpack(beat, lanes) for beat in beats)

        def check():
            assert_bits_equal(from_stream(got, maps, lanes, height, width), want, "maxpool_bp")

        return dut, [put_grad, put_idx, consumer], check

    simulate(tmp_path, "maxpool_backward", build)


def test_maxpool_forward_then_backward(tmp_path):
    """The indices the forward unit emits route the gradient back to the winners."""
    lanes, height, width = 2, 6, 9
    rng = np.random.default_rng(11)
    x = random_words(rng, (1, lanes, height, width), special=0.2, ties=0.6)
    g_y = random_words(rng, (1, lanes, height // 2, width // 2))
    _, idx = ops.maxpool_fp(f32(x))
    want = u32(ops.maxpool_bp(f32(g_y), idx, (height, width)))
    got = []

    def build():
        fwd = MaxPoolForward(lanes, 16)
        bwd = MaxPoolBackward(lanes, 16)
        from amaranth.hdl import Module
        top = Module()
        top.submodules.fwd, top.submodules.bwd = fwd, bwd
        # Indices flow from the forward unit straight into the backward unit.
        top.d.comb += [
            bwd.idx.payload.eq(fwd.y.payload.idx), bwd.idx.valid.eq(fwd.y.valid),
            fwd.y.ready.eq(bwd.idx.ready),
        ]
        got.clear()

        async def put_x(ctx):
            for unit in (fwd, bwd):
                ctx.set(unit.width, width)
                ctx.set(unit.height, height)
            await stream_put(ctx, fwd.x, beats_of(to_stream(x)), rng=random.Random(12))

        async def put_grad(ctx):
            await stream_put(ctx, bwd.grad_y, beats_of(to_stream(g_y)), rng=random.Random(13))

        async def consumer(ctx):
            beats = await stream_get(ctx, bwd.grad_x, height * width, rng=random.Random(14),
                                     timeout=200)
            got.extend(unpack(beat, lanes) for beat in beats)

        def check():
            assert_bits_equal(from_stream(got, 1, lanes, height, width), want, "fwd->bwd")

        return top, [put_x, put_grad, consumer], check

    simulate(tmp_path, "maxpool_fwd_bwd", build)


@pytest.mark.parametrize("cls", [MaxPoolForward, MaxPoolBackward])
@pytest.mark.parametrize("width, height", [(0, 4), (17, 4), (1 << 15, 4), (4, 0)])
def test_maxpool_bad_size_raises_error(tmp_path, cls, width, height):
    """A bad size raises ``error``, input drains (no hang), nothing comes out; a good size
    afterwards pools correctly from the top left."""
    lanes, max_width = 2, 16
    rng = np.random.default_rng(15)
    x = random_words(rng, (1, lanes, 4, 4))
    g_y = random_words(rng, (1, lanes, 2, 2))
    idx = rng.integers(0, 4, (1, lanes, 2, 2))
    got = []

    def build():
        dut = cls(lanes, max_width)
        out = dut.y if cls is MaxPoolForward else dut.grad_x
        inputs = ([(dut.x, to_stream(x))] if cls is MaxPoolForward else
                  [(dut.grad_y, to_stream(g_y)), (dut.idx, to_stream(idx))])
        got.clear()

        async def tb(ctx):
            ctx.set(dut.width, width)
            ctx.set(dut.height, height)
            ctx.set(out.ready, 1)
            await ctx.tick()
            assert ctx.get(dut.error), f"no error for width={width}, height={height}"
            for port, beats in inputs:
                await stream_put(ctx, port, beats_of(beats)[:3], idle_prob=0.3, timeout=20)
            for _ in range(10):
                _, _, valid = await ctx.tick().sample(out.valid)
                assert not valid, "output under a bad size"
            ctx.set(dut.width, 4)
            ctx.set(dut.height, 4)
            await ctx.tick()
            assert not ctx.get(dut.error)

        def producer(port, beats):
            async def put_after_error(ctx):
                await ctx.tick().until(~dut.error)
                await stream_put(ctx, port, beats_of(beats), timeout=50)
            return put_after_error

        async def consumer(ctx):
            await ctx.tick().until(~dut.error)
            count = 4 if cls is MaxPoolForward else 16
            beats = await stream_get(ctx, out, count, timeout=200)
            got.extend(beats)

        def check():
            if cls is MaxPoolForward:
                want, _ = ops.maxpool_fp(f32(x))
                values = [unpack(Const.cast(b.value).value, lanes) for b in got]
                assert_bits_equal(from_stream(values, 1, lanes, 2, 2), u32(want), "after error")
            else:
                want = u32(ops.maxpool_bp(f32(g_y), idx, (4, 4)))
                assert_bits_equal(from_stream([unpack(b, lanes) for b in got], 1, lanes, 4, 4),
                                  want, "after error")

        return dut, [tb, consumer, *(producer(p, b) for p, b in inputs)], check

    simulate(tmp_path, f"{cls.__name__}_bad_size", build)


# -- SGD -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("idle, stall", STALLS + [(0.0, 0.95)])
def test_sgd(tmp_path, momentum, idle, stall):
    lanes, count = 2, 120
    rng = np.random.default_rng(20 + momentum + int(idle * 10) + int(stall * 100))
    w = random_words(rng, (count, lanes))
    dw = random_words(rng, (count, lanes))
    v = random_words(rng, (count, lanes))
    # A huge learning rate too, so that products overflow to infinity and inf - inf happens.
    lr = np.float32(0.0125) if stall != 0.3 else np.float32(-3.0e30)
    mu = np.float32(0.875)
    cfg = AcceleratorConfig(momentum=momentum)
    if momentum:
        want_w, want_v = ops.sgd(f32(w), f32(dw), lr, cfg, mu=mu, v=f32(v))
    else:
        want_w, _ = ops.sgd(f32(w), f32(dw), lr, cfg)
    got_w, got_v = [], []

    def build():
        dut = SgdUpdate(lanes, momentum)
        got_w.clear()
        got_v.clear()
        streams = [(dut.w, w, 21), (dut.dw, dw, 22)] + ([(dut.v, v, 23)] if momentum else [])

        def producer(port, words, seed):
            async def put(ctx):
                ctx.set(dut.lr, int(u32(lr)))
                if momentum:
                    ctx.set(dut.mu, int(u32(mu)))
                await stream_put(ctx, port, beats_of(words), rng=random.Random(seed),
                                 idle_prob=idle, timeout=500)
            return put

        async def consumer(ctx):
            beats = await stream_get(ctx, dut.o, count, rng=random.Random(24), stall_prob=stall,
                                     timeout=500)
            for beat in beats:
                got_w.append(unpack(Const.cast(beat.w).value, lanes))
                if momentum:
                    got_v.append(unpack(Const.cast(beat.v).value, lanes))
            for _ in range(dut.latency + 4):
                ctx.set(dut.o.ready, 1)
                _, _, valid = await ctx.tick().sample(dut.o.valid)
                assert not valid, "more output beats than input beats"

        def check():
            assert_bits_equal(got_w, u32(want_w), "sgd w'")
            if momentum:
                assert_bits_equal(got_v, u32(want_v), "sgd v'")

        return dut, [consumer, *(producer(*s) for s in streams)], check

    simulate(tmp_path, f"sgd_{'momentum' if momentum else 'plain'}", build)


@pytest.mark.parametrize("idle, stall", [(0.0, 0.0), (0.3, 0.3)])
def test_sgd_plain_on_momentum_unit(tmp_path, idle, stall):
    """A momentum unit with ``plain`` high computes plain SGD bit for bit (signed zeros
    included, which a momentum step with mu = v = 0 would not) and never reads ``v``."""
    lanes, count = 2, 96
    rng = np.random.default_rng(7)
    w = random_words(rng, (count, lanes))
    dw = random_words(rng, (count, lanes))
    dw[:8] = np.array([0x80000000, 0], np.uint32)          # -0 and +0 gradients
    w[:8] = np.array([0x80000000, 0x80000000], np.uint32)
    lr = np.float32(0.0625)
    want_w, _ = ops.sgd(f32(w), f32(dw), lr, AcceleratorConfig())
    got = []

    def build():
        dut = SgdUpdate(lanes, momentum=True)
        got.clear()

        def producer(port, words, seed):
            async def put(ctx):
                ctx.set(dut.lr, int(u32(lr)))
                ctx.set(dut.mu, int(u32(np.float32(0.5))))
                ctx.set(dut.plain, 1)
                await stream_put(ctx, port, beats_of(words), rng=random.Random(seed),
                                 idle_prob=idle, timeout=500)
            return put

        async def consumer(ctx):
            beats = await stream_get(ctx, dut.o, count, rng=random.Random(3), stall_prob=stall,
                                     timeout=500)
            got.extend(unpack(Const.cast(b.w).value, lanes) for b in beats)
            assert not ctx.get(dut.v.ready), "v must not be read in plain mode"

        def check():
            assert_bits_equal(got, u32(want_w), "plain sgd on a momentum unit")

        return dut, [consumer, producer(dut.w, w, 1), producer(dut.dw, dw, 2)], check

    simulate(tmp_path, "sgd_plain_momentum_unit", build)


def test_sgd_bad_parameters():
    with pytest.raises(TypeError, match="momentum"):
        SgdUpdate(2, momentum=1)
    with pytest.raises(TypeError, match="lanes"):
        SgdUpdate(0)
