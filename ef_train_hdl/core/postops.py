"""Post-operation units on the store path: ReLU, 2x2 max-pool (with index), SGD update.

Output tiles of the PE array leave the tile engine as an :mod:`amaranth.lib.stream` of beats,
one beat = the ``lanes`` (= Tm) binary32 words of one pixel. On their way to DRAM they pass
through these units, so a ReLU, a pool or a weight update costs no extra pass over DRAM
(DESIGN.md section 2). The numerics are docs/numerics.md sections 8 and 9, bit for bit; the
numpy model (:mod:`ef_train_hdl.model.ops`) computes the same.

Every unit here is a :class:`~amaranth.lib.wiring.Component` with stream ports, accepts one
input beat per cycle in steady state, tolerates any stall pattern on any of its streams, and
never loses or duplicates a beat. See docs/postops.md for the interfaces in one place.

=====================  ===========================================  ========================
unit                   streams                                      latency (input -> out)
=====================  ===========================================  ========================
:class:`ReluForward`   ``x`` -> ``y``                               1
:class:`ReluBackward`  ``grad_y`` + ``y`` -> ``grad_x``             1
:class:`MaxPoolForward`   ``x`` -> ``y`` {value, idx}               2 (after the 4th pixel)
:class:`MaxPoolBackward`  ``grad_y`` + ``idx`` -> ``grad_x``        1
:class:`SgdUpdate`     ``w`` + ``dw`` (+ ``v``) -> ``o`` {w, v}     FMUL+FADD (x2 momentum) + 1
=====================  ===========================================  ========================
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = [
    "word_lanes", "pool_lanes", "ReluForward", "ReluBackward", "MaxPoolForward",
    "MaxPoolBackward", "SgdUpdate",
]

_SIGN = 0x8000_0000


def _check_lanes(lanes):
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise TypeError(f"lanes must be a positive integer, not {lanes!r}")


def _check_max_width(max_width):
    if not isinstance(max_width, int) or isinstance(max_width, bool):
        raise TypeError(f"max_width must be an integer, not {max_width!r}")
    if not 2 <= max_width <= 1 << 16:
        raise ValueError(f"max_width must be between 2 and 65536 pixels, not {max_width!r}")


def _check_max_height(max_height):
    if not isinstance(max_height, int) or isinstance(max_height, bool):
        raise TypeError(f"max_height must be an integer, not {max_height!r}")
    if not 1 <= max_height <= 1 << 16:
        raise ValueError(f"max_height must be between 1 and 65536 rows, not {max_height!r}")


def word_lanes(lanes):
    """Payload of one beat: ``lanes`` binary32 words (one pixel of Tm channels)."""
    return data.ArrayLayout(unsigned(32), lanes)


def pool_lanes(lanes):
    """Payload of a pooled beat: the winners' words and their 2-bit window indices.

    ``idx`` is ``k = 2*di + dj`` of the winner in its 2x2 window (docs/numerics.md section 8);
    the store path writes it to DRAM zero-extended to a 32-bit word.
    """
    return data.StructLayout({
        "value": word_lanes(lanes),
        "idx":   data.ArrayLayout(unsigned(2), lanes),
    })


def _size_port_width(limit):
    # One bit more than the limit needs, so a value above the limit is representable and
    # reported as an error instead of being truncated into range.
    return max(16, limit.bit_length() + 1)


def _is_nan(word):
    return (word[23:31] == 0xFF) & (word[0:23] != 0)


def _greater(a, b):
    """``a`` wins over ``b`` in the max-pool scan (docs/numerics.md section 8).

    ``a`` is NaN and ``b`` is not, or neither is NaN and ``a > b`` under IEEE comparison
    (``-0 == +0``). The comparison works on the encodings: sign-magnitude order.
    """
    sa, sb = a[31], b[31]
    ma, mb = a[0:31], b[0:31]
    both_zero = (ma == 0) & (mb == 0)
    ordered_gt = ~both_zero & Mux(sa != sb, ~sa, Mux(sa, ma < mb, ma > mb))
    return (_is_nan(a) & ~_is_nan(b)) | (~_is_nan(a) & ~_is_nan(b) & ordered_gt)


class ReluForward(wiring.Component):
    """ReLU forward: ``y = +0`` where the sign bit of ``x`` is set, else ``x``.

    Negative numbers, ``-0`` and ``-inf`` become ``+0``; ``+0``, positives, ``+inf`` and every
    NaN pass unchanged (docs/numerics.md section 8).

    Latency 1 cycle (one pipeline register), throughput 1 beat per cycle.

    Parameters
    ----------
    lanes : int
        binary32 words per beat (Tm on the store path).

    Members
    -------
    x : ``In(stream.Signature(word_lanes(lanes)))``
    y : ``Out(stream.Signature(word_lanes(lanes)))``
    """

    def __init__(self, lanes):
        _check_lanes(lanes)
        self.lanes = lanes
        super().__init__({
            "x": In(stream.Signature(word_lanes(lanes))),
            "y": Out(stream.Signature(word_lanes(lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        advance = ~self.y.valid | self.y.ready
        m.d.comb += self.x.ready.eq(advance)
        with m.If(advance):
            m.d.sync += self.y.valid.eq(self.x.valid)
            for lane in range(self.lanes):
                word = self.x.payload[lane]
                m.d.sync += self.y.payload[lane].eq(Mux(word[31], 0, word))
        return m


class ReluBackward(wiring.Component):
    """ReLU backward: ``grad_x = grad_y`` where the stored ReLU output ``y`` is not ``+0``.

    ``y`` is the ReLU's (or, fused after a pool, the pooled) output as stored in DRAM; where
    its encoding is all zeros the gradient is ``+0`` (docs/numerics.md section 8). The two
    input streams are joined beat by beat: a beat is taken from both in the same cycle, so
    independent stalls on either side never misalign them.

    Latency 1 cycle, throughput 1 beat per cycle.

    Parameters
    ----------
    lanes : int
        binary32 words per beat.

    Members
    -------
    grad_y : ``In(stream.Signature(word_lanes(lanes)))``
        Gradient of the ReLU output.
    y : ``In(stream.Signature(word_lanes(lanes)))``
        Stored ReLU output.
    grad_x : ``Out(stream.Signature(word_lanes(lanes)))``
        Gradient of the ReLU input.
    """

    def __init__(self, lanes):
        _check_lanes(lanes)
        self.lanes = lanes
        super().__init__({
            "grad_y": In(stream.Signature(word_lanes(lanes))),
            "y":      In(stream.Signature(word_lanes(lanes))),
            "grad_x": Out(stream.Signature(word_lanes(lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        advance = ~self.grad_x.valid | self.grad_x.ready
        # Each side is told ready only when the other side has its beat too (a join), so
        # neither beat is consumed alone.
        m.d.comb += [
            self.grad_y.ready.eq(advance & self.y.valid),
            self.y.ready.eq(advance & self.grad_y.valid),
        ]
        with m.If(advance):
            m.d.sync += self.grad_x.valid.eq(self.grad_y.valid & self.y.valid)
            for lane in range(self.lanes):
                g, y = self.grad_y.payload[lane], self.y.payload[lane]
                m.d.sync += self.grad_x.payload[lane].eq(Mux(y != 0, g, 0))
        return m


class MaxPoolForward(wiring.Component):
    """2x2, stride-2 max-pool forward with the winner's index, on a raster stream of pixels.

    The input is a feature map of ``height`` x ``width`` pixels (runtime ports) in raster
    order, one beat per pixel carrying its ``lanes`` channels; maps follow each other without
    gaps (the row and column counters wrap at the end of a map). The output has one beat per
    pooled pixel, ``(height // 2) x (width // 2)`` per map in raster order: the winning words
    and the 2-bit index ``k = 2*di + dj`` of each lane's winner. The scan order, the tie rule
    (the first of equals wins) and the NaN rule (a NaN wins over a number; the first NaN
    wins) are docs/numerics.md section 8; the winner passes through unchanged (a NaN keeps
    its payload). An odd last row or column is consumed and dropped.

    The top row of each pair is reduced to a (value, 1-bit index) per pixel pair and kept in
    a line buffer of ``max_width // 2`` entries (:class:`~amaranth.lib.memory.Memory`); the
    bottom row completes the scan.

    Latency: the pooled beat leaves 2 cycles after the window's last pixel (bottom right) is
    taken: the bottom-left pixel is compared with the line buffer's winner in the cycle the
    last pixel is taken, the last pixel with that result in the next (one comparison per
    register stage). Throughput: 1 input beat per cycle; input is only held back when a
    pooled beat is due and both stages are stalled.

    ``width`` and ``height`` must stay constant while a map streams. A ``width`` of 0 or above
    ``max_width``, or a ``height`` of 0 or above ``max_height``, raises ``error``: while it is
    high, input beats are consumed and dropped (so the producer never hangs), nothing is
    output, and the counters restart at the top left of a map.

    Parameters
    ----------
    lanes : int
        binary32 words per beat (Tm).
    max_width : int
        Widest input row supported (sizes the line buffer), 2..65536.
    max_height : int
        Tallest input map supported (sizes the row counter), default 65536.

    Members
    -------
    x : ``In(stream.Signature(word_lanes(lanes)))``
    y : ``Out(stream.Signature(pool_lanes(lanes)))``
    width, height : ``In(unsigned(n))``
        Input map size in pixels; ``n`` is at least 16 bits, one more than the limits need.
    error : ``Out(1)``
        The size ports hold a value outside the supported range.
    """

    def __init__(self, lanes, max_width, max_height=1 << 16):
        _check_lanes(lanes)
        _check_max_width(max_width)
        _check_max_height(max_height)
        self.lanes = lanes
        self.max_width = max_width
        self.max_height = max_height
        super().__init__({
            "x":      In(stream.Signature(word_lanes(lanes))),
            "y":      Out(stream.Signature(pool_lanes(lanes))),
            "width":  In(_size_port_width(max_width)),
            "height": In(_size_port_width(max_height)),
            "error":  Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        width, height = self.width, self.height

        m.d.comb += self.error.eq((width == 0) | (width > self.max_width) |
                                  (height == 0) | (height > self.max_height))

        row = Signal(range(self.max_height))
        col = Signal(range(self.max_width))
        di, dj = row[0], col[0]
        last_col = col == width - 1
        last_row = row == height - 1
        # An odd last row pairs with nothing: it is read and dropped.
        row_dropped = ~di & last_row

        half = data.StructLayout({
            "value": word_lanes(lanes),
            "idx":   data.ArrayLayout(1, lanes),
        })
        m.submodules.line = line = Memory(shape=half, depth=self.max_width // 2, init=[])
        wr = line.write_port()
        rd = line.read_port(domain="sync")

        # The left pixel of the current window row: x0 in a top row, x2 in a bottom row.
        held = Signal(word_lanes(lanes))

        emits = di & dj
        # The window's first three pixels reduced (``s_v``, ``s_k``) and its last (``s_x3``),
        # between the two comparisons.
        s_valid = Signal()
        s_v, s_x3 = Signal(word_lanes(lanes)), Signal(word_lanes(lanes))
        s_k = Signal(data.ArrayLayout(unsigned(2), lanes))
        advance = ~self.y.valid | self.y.ready
        advance_s = ~s_valid | advance
        m.d.comb += self.x.ready.eq(self.error | ~emits | advance_s)
        take = self.x.valid & self.x.ready & ~self.error

        m.d.comb += [
            wr.addr.eq(col >> 1),
            wr.en.eq(take & ~di & dj & ~row_dropped),
            rd.addr.eq(col >> 1),
            rd.en.eq(take & di & ~dj),
        ]
        for lane in range(lanes):
            x = self.x.payload[lane]
            x0 = held[lane]
            top_wins = _greater(x, x0)
            m.d.comb += [
                wr.data.value[lane].eq(Mux(top_wins, x, x0)),
                wr.data.idx[lane].eq(top_wins),
            ]

        with m.If(advance):
            m.d.sync += self.y.valid.eq(0)
            with m.If(s_valid):
                m.d.sync += [self.y.valid.eq(1), s_valid.eq(0)]
                for lane in range(lanes):
                    v2, k2, x3 = s_v[lane], s_k[lane], s_x3[lane]
                    take3 = _greater(x3, v2)
                    m.d.sync += [
                        self.y.payload.value[lane].eq(Mux(take3, x3, v2)),
                        self.y.payload.idx[lane].eq(Mux(take3, 3, k2)),
                    ]
        with m.If(take):
            with m.If(~dj):
                m.d.sync += held.eq(self.x.payload)
            with m.If(emits):
                m.d.sync += [s_valid.eq(1), s_x3.eq(self.x.payload)]
                for lane in range(lanes):
                    v, k = rd.data.value[lane], rd.data.idx[lane]
                    x2 = held[lane]
                    take2 = _greater(x2, v)
                    m.d.sync += [s_v[lane].eq(Mux(take2, x2, v)),
                                 s_k[lane].eq(Mux(take2, 2, k))]
            with m.If(last_col):
                m.d.sync += col.eq(0)
                m.d.sync += row.eq(Mux(last_row, 0, row + 1))
            with m.Else():
                m.d.sync += col.eq(col + 1)
        with m.If(self.error):
            m.d.sync += [row.eq(0), col.eq(0)]
        return m


class MaxPoolBackward(wiring.Component):
    """2x2, stride-2 max-pool backward: pooled gradients and indices -> full-size gradient map.

    ``grad_x[2i+di, 2j+dj] = grad_y[i, j]`` in the lanes whose ``idx[i, j] == 2*di + dj``,
    else ``+0``; an odd last row or column of the ``height`` x ``width`` map gets ``+0``
    (docs/numerics.md section 8). ``grad_y`` and ``idx`` are separate streams (two tensors in
    DRAM; the loader passes the low 2 bits of each index word), joined beat by beat, one beat
    per pooled pixel in raster order. ``grad_x`` is the full map in raster order, one beat
    per pixel; maps follow each other without gaps.

    Each pooled beat is used for two pixels of its top row at once and kept in a line buffer
    of ``max_width // 2`` entries (:class:`~amaranth.lib.memory.Memory`) for the bottom row;
    the read address runs one step ahead, so the bottom row also streams at full rate.

    Latency 1 cycle from a pooled beat to its first output pixel. Throughput 1 output beat per
    cycle (one pooled beat per 4 output beats, none in dropped rows and columns).

    ``width`` and ``height`` must be stable from one cycle before a map's first beat until its
    last. Bad sizes (``width`` of 0 or above ``max_width``, ``height`` of 0 or above
    ``max_height``) raise ``error``: while it is high, input beats are consumed and dropped,
    nothing is output, and the counters restart at the top left.

    Parameters
    ----------
    lanes : int
        binary32 words per beat (Tm).
    max_width : int
        Widest full-size row supported, 2..65536.
    max_height : int
        Tallest full-size map supported, default 65536.

    Members
    -------
    grad_y : ``In(stream.Signature(word_lanes(lanes)))``
        Gradient of the pooled output.
    idx : ``In(stream.Signature(data.ArrayLayout(2, lanes)))``
        The forward pass's window indices.
    grad_x : ``Out(stream.Signature(word_lanes(lanes)))``
        Gradient of the pool's input, ``height x width`` beats per map.
    width, height : ``In(unsigned(n))``
        Size of the full (un-pooled) map.
    error : ``Out(1)``
    """

    def __init__(self, lanes, max_width, max_height=1 << 16):
        _check_lanes(lanes)
        _check_max_width(max_width)
        _check_max_height(max_height)
        self.lanes = lanes
        self.max_width = max_width
        self.max_height = max_height
        super().__init__({
            "grad_y": In(stream.Signature(word_lanes(lanes))),
            "idx":    In(stream.Signature(data.ArrayLayout(unsigned(2), lanes))),
            "grad_x": Out(stream.Signature(word_lanes(lanes))),
            "width":  In(_size_port_width(max_width)),
            "height": In(_size_port_width(max_height)),
            "error":  Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        width, height = self.width, self.height
        error = self.error
        m.d.comb += error.eq((width == 0) | (width > self.max_width) |
                             (height == 0) | (height > self.max_height))

        row = Signal(range(self.max_height))
        col = Signal(range(self.max_width))
        di, dj = row[0], col[0]
        # "At the last column / row", in flip-flops: computed from the counters' next values
        # when they step and refreshed from their values when they do not, so the input
        # ready below selects on registers, not on a 16-bit ``== width - 1`` (in the ultra96
        # build a 17-LUT path through the loader's ready chain). So ``width`` and ``height``
        # must be stable from one cycle before a map's first beat (the loader sets them at
        # least three cycles ahead).
        last_col, last_row = Signal(name="last_col"), Signal(name="last_row")
        dropped = (~di & last_row) | (~dj & last_col)

        pooled = data.StructLayout({
            "grad": word_lanes(lanes),
            "idx":  data.ArrayLayout(unsigned(2), lanes),
        })
        m.submodules.line = line = Memory(shape=pooled, depth=self.max_width // 2, init=[])
        wr = line.write_port()
        rd = line.read_port(domain="sync")
        held = Signal(pooled)

        need_in = ~di & ~dj & ~dropped
        joined = self.grad_y.valid & self.idx.valid
        advance = ~self.grad_x.valid | self.grad_x.ready
        step = ~error & advance & (~need_in | joined)
        m.d.comb += [
            self.grad_y.ready.eq(error | (advance & need_in & self.idx.valid)),
            self.idx.ready.eq(error | (advance & need_in & self.grad_y.valid)),
        ]

        next_col = Signal.like(col)
        next_row = Signal.like(row)
        m.d.comb += [
            next_col.eq(Mux(last_col, 0, col + 1)),
            next_row.eq(Mux(last_col, Mux(last_row, 0, row + 1), row)),
        ]
        with m.If(step & ~error):
            m.d.sync += [last_col.eq(next_col == width - 1), last_row.eq(next_row == height - 1)]
        with m.Elif(error):
            m.d.sync += [last_col.eq(width == 1), last_row.eq(height == 1)]
        with m.Else():
            m.d.sync += [last_col.eq(col == width - 1), last_row.eq(row == height - 1)]

        incoming = Signal(pooled)
        m.d.comb += [
            incoming.grad.eq(self.grad_y.payload),
            incoming.idx.eq(self.idx.payload),
            wr.addr.eq(col >> 1),
            wr.en.eq(step & need_in),
            wr.data.eq(incoming),
            # The read port always shows the entry of the pixel being output: its address is
            # the next pixel's whenever the counters move.
            rd.en.eq(1),
            rd.addr.eq(Mux(step, next_col, col) >> 1),
        ]
        source = Mux(need_in, incoming, Mux(di, rd.data, held))
        source = pooled(source)
        k = Cat(dj, di)

        with m.If(advance):
            m.d.sync += self.grad_x.valid.eq(0)
        with m.If(step):
            m.d.sync += [self.grad_x.valid.eq(1), col.eq(next_col), row.eq(next_row)]
            with m.If(need_in):
                m.d.sync += held.eq(incoming)
            for lane in range(lanes):
                win = ~dropped & (source.idx[lane] == k)
                m.d.sync += self.grad_x.payload[lane].eq(Mux(win, source.grad[lane], 0))
        with m.If(error):
            m.d.sync += [row.eq(0), col.eq(0)]
        return m


class _DelayLine:
    """``depth`` registers in a row: ``out`` is ``data`` of ``depth`` cycles ago."""

    def __init__(self, m, data, depth, name):
        stages = [data]
        for index in range(depth):
            stage = Signal.like(data, name=f"{name}_d{index + 1}")
            m.d.sync += stage.eq(stages[-1])
            stages.append(stage)
        self.out = stages[-1]


class SgdUpdate(wiring.Component):
    """SGD weight update, plain or with momentum, on streams of weights and gradients.

    docs/numerics.md section 9, with ``fsub(a, b) = fadd(a, b ^ sign)``::

        plain:     w' = fsub(w, fmul(lr, dw))
        momentum:  v' = fadd(fmul(mu, v), dw);   w' = fsub(w, fmul(lr, v'))

    computed by the real binary32 units (:class:`ef_train_hdl.fp.FMul` in fp32 format,
    :class:`ef_train_hdl.fp.FAdd`), one per lane and operation. ``lr`` and ``mu`` are runtime
    binary32 words (from the descriptor) and must stay constant while a tensor streams.

    The FP units are pipelines without back-pressure, so the unit issues a beat into them
    only while it holds a *credit*: beats in the pipelines plus beats in the output FIFO never
    exceed the FIFO's depth (latency + 4), so every result has a place to land however long
    ``o`` stalls, and with ``o`` ready one beat issues every cycle.

    The input streams (``w``, ``dw``, and ``v`` with momentum) are joined: a beat is taken from
    all of them in the same cycle.

    Latency: :attr:`latency` cycles from the input handshake to ``o.valid``: FMUL_LATENCY +
    FADD_LATENCY + 2 (plain), 2 * (FMUL_LATENCY + FADD_LATENCY) + 2 (momentum); the 2 are the
    output FIFO. Throughput 1 beat per cycle.

    Parameters
    ----------
    lanes : int
        binary32 words per beat.
    momentum : bool
        Build the momentum datapath (input ``v``, output ``o.payload.v``, parameter ``mu``).

    Members
    -------
    w, dw : ``In(stream.Signature(word_lanes(lanes)))``
        Weights and their gradients, beat by beat in the same order.
    v : ``In(stream.Signature(word_lanes(lanes)))``
        Momentum buffer (only with ``momentum``).
    lr, mu : ``In(32)``
        Learning rate and momentum factor, binary32 (``mu`` only with ``momentum``).
    plain : ``In(1)``
        Only with ``momentum``: run plain SGD (``v`` is not read; ``o.payload.v`` is
        meaningless), bit for bit what a plain unit computes, at the momentum latency.
    o : ``Out(stream.Signature(StructLayout({"w": ..., "v": ...})))``
        Updated weights ``w`` (and, with momentum, the updated momentum buffer ``v``).
    """

    def __init__(self, lanes, momentum=False):
        from ..config import FADD_LATENCY, FMUL_LATENCY

        _check_lanes(lanes)
        if not isinstance(momentum, bool):
            raise TypeError(f"momentum must be a bool, not {momentum!r}")
        self.lanes = lanes
        self.momentum = momentum
        stages = 2 if momentum else 1
        self.pipeline_latency = stages * (FMUL_LATENCY + FADD_LATENCY)
        self.fifo_depth = self.pipeline_latency + 4
        self.latency = self.pipeline_latency + 2
        out_fields = {"w": word_lanes(lanes)}
        ports = {
            "w":  In(stream.Signature(word_lanes(lanes))),
            "dw": In(stream.Signature(word_lanes(lanes))),
            "lr": In(32),
        }
        if momentum:
            out_fields["v"] = word_lanes(lanes)
            ports["v"] = In(stream.Signature(word_lanes(lanes)))
            ports["mu"] = In(32)
            ports["plain"] = In(1)
        ports["o"] = Out(stream.Signature(data.StructLayout(out_fields)))
        super().__init__(ports)

    def elaborate(self, platform):
        from ..fp import FAdd, FMul

        m = Module()
        lanes = self.lanes
        inputs = [self.w, self.dw] + ([self.v] if self.momentum else [])
        # With ``plain`` a momentum unit runs plain SGD: ``v`` is not joined (not read) and
        # the second stage multiplies lr by dw instead of by v'.
        plain = self.plain if self.momentum else None

        def mul_add(name, mul_a, mul_b, add_a_of, negate, issue):
            """Per lane ``fadd(addend, -fmul(mul_a, mul_b))`` (``negate``) or
            ``fadd(fmul(mul_a, mul_b), addend)``; ``add_a_of(delay)`` returns the addend delayed
            by the multiplier's latency, so that it meets the product."""
            results = Signal(word_lanes(lanes), name=f"{name}_result")
            fmuls = [FMul(mult_format="fp32") for _ in range(lanes)]
            fadds = [FAdd() for _ in range(lanes)]
            addend = add_a_of(fmuls[0].latency)
            for lane, (fmul, fadd) in enumerate(zip(fmuls, fadds)):
                m.submodules[f"{name}_mul{lane}"] = fmul
                m.submodules[f"{name}_add{lane}"] = fadd
                product = fmul.result ^ (_SIGN if negate else 0)
                m.d.comb += [
                    fmul.a.eq(mul_a), fmul.b.eq(mul_b[lane]), fmul.i_valid.eq(issue),
                    fadd.i_valid.eq(fmul.o_valid),
                    results[lane].eq(fadd.result),
                ]
                if negate:
                    m.d.comb += [fadd.a.eq(addend[lane]), fadd.b.eq(product)]
                else:
                    # fadd(fmul(mu, v), dw): the product is the left operand.
                    m.d.comb += [fadd.a.eq(product), fadd.b.eq(addend[lane])]
            # All lanes run in lockstep; lane 0's valid stands for the beat.
            return results, fadds[0].o_valid, fmuls[0].latency + fadds[0].latency

        # Credits: beats in the FP pipelines plus beats in the FIFO.
        outstanding = Signal(range(self.fifo_depth + 1))
        credit = outstanding < self.fifo_depth
        valids = [port.valid | (plain if port is getattr(self, "v", None) else 0)
                  for port in inputs]
        all_valid = Signal()
        m.d.comb += all_valid.eq(Cat(*valids).all())
        issue = credit & all_valid
        for port, _ in zip(inputs, valids):
            others = [v for other, v in zip(inputs, valids) if other is not port]
            ready = credit & Cat(*others).all()
            if port is getattr(self, "v", None):
                ready = ready & ~plain
            m.d.comb += port.ready.eq(ready)

        w_in = self.w.payload
        if self.momentum:
            v_new, v_valid, latency_v = mul_add(
                "v", self.mu, self.v.payload,
                lambda delay: _DelayLine(m, self.dw.payload, delay, "dw").out,
                negate=False, issue=issue)
            w_at_v = _DelayLine(m, w_in, latency_v, "w_v").out
            dw_at_v = _DelayLine(m, self.dw.payload, latency_v, "dw_v").out
            step = Signal(word_lanes(lanes))
            m.d.comb += step.eq(Mux(plain, dw_at_v.as_value(), v_new.as_value()))
            w_new, w_valid, latency_w = mul_add(
                "w", self.lr, step,
                lambda delay: _DelayLine(m, w_at_v, delay, "w").out,
                negate=True, issue=v_valid)
            v_out = _DelayLine(m, v_new, latency_w, "v_out").out
            total = latency_v + latency_w
        else:
            w_new, w_valid, total = mul_add(
                "w", self.lr, self.dw.payload,
                lambda delay: _DelayLine(m, w_in, delay, "w").out,
                negate=True, issue=issue)
        if total != self.pipeline_latency:
            raise ValueError(f"FMul/FAdd latencies add up to {total} cycles, but config.py's "
                             f"FMUL_LATENCY/FADD_LATENCY give {self.pipeline_latency}")

        layout = self.o.payload.shape()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=layout.size, depth=self.fifo_depth)
        result = Signal(layout)
        m.d.comb += result.w.eq(w_new)
        if self.momentum:
            m.d.comb += result.v.eq(v_out)
        m.d.comb += [
            fifo.w_data.eq(result),
            fifo.w_en.eq(w_valid),
            self.o.payload.eq(fifo.r_data),
            self.o.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o.ready),
        ]
        out = self.o.valid & self.o.ready
        m.d.sync += outstanding.eq(outstanding + issue - out)
        return m
