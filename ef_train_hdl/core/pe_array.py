"""The unified Tm x Tn PE array: one multiplier per PE, Tn adders per lane, for FP, BP and WU.

Data flow (``m`` = lane/row 0..Tm-1, ``j`` = column 0..Tn-1)::

    IFM bank j --> x[0][j] --> x[1][j] --> ... --> x[Tm-1][j]     activations move down
                      |           |                    |
    FP/BP: weight bank (m, j) of each PE, read in place     WU: g[m][0] --> g[m][1] --> ...
                      v                                          output gradients move right
                   fmul(m, j)  ->  FP/BP: adder tree of lane m (pairing of numerics.md 3)
                                      -> accumulator adder -> OFM bank m (read-add-write)
                               ->  WU: PE (m, j)'s own accumulator -> weight bank (m, j)

Every operand reaches a PE through a register from its neighbour, so no net spans the array:
an activation enters column j at the top and moves one row per cycle; in WU an output
gradient enters row m at the left and moves one column per cycle. The operation's control
travels the same way (down a per-row chain; in WU also along the row with the gradient), so
row m works ``m`` cycles after row 0 and, in WU, PE (m, j) ``m + j`` cycles after PE (0, 0);
the IFM read of column j is issued ``j`` cycles late in WU so that its activation meets the
gradient. The only fan-out is a row's control word to its Tn weight banks and adders.

Each lane has exactly Tn adders: in FP/BP Tn - 1 of them form the lane's tree and the last
accumulates into the OFM bank; in WU adder ``j`` is PE (m, j)'s accumulator, reading and
writing the PE's weight bank (the weight-gradient partial sums live there). So the three
phases share every multiplier and every adder.

Timing (cycles after the operation leaves the address generator): activation and weight at
the multiplier of row m at ``m + 2`` (WU: ``m + j + 2``); product at ``+4``; FP/BP tree root
at ``m + 6 + 7*log2(Tn)``, partial sum read one cycle earlier, written 7 cycles later
(:attr:`PeArray.depth` is the last write). The accumulator loop is read + add = 8 cycles =
``ACC_LOOP_LATENCY``; the address generator's P rule keeps revisits at least that far apart.
The memory read port is transparent for its write port, so a partial sum written in cycle t
is read back correctly from cycle t on.

Throughput: one operation per cycle, i.e. Tm x Tn MACs per cycle, in all phases.
"""

from amaranth.hdl import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..config import FADD_LATENCY, FMUL_LATENCY
from ..fp import FAdd, FMul
from .job import Phase, addr_bits, ctrl_layout

__all__ = ["PeArray", "weight_load_layout", "weight_load_lanes"]

ONE = 0x3F800000


def weight_load_lanes(cfg):
    """Words per weight-load beat: ``min(floats_per_beat, Tm, Tn)``."""
    return min(cfg.floats_per_beat, cfg.tm, cfg.tn)


def weight_load_layout(cfg):
    """``lanes`` words for the weight banks, word ``addr`` of each.

    Lane ``i`` goes to PE ``(row, col + i)``, or with ``transpose`` to PE ``(row + i, col)``
    (BP reads the weights transposed: the loader's bank choice does the transpose, see
    :mod:`ef_train_hdl.model.tiles`); lanes with ``en[i]`` low write nothing. ``col`` (or
    ``row`` with ``transpose``) is a multiple of the lane count.
    """
    lanes = weight_load_lanes(cfg)
    return data.StructLayout({
        "row": range(cfg.tm),
        "col": range(cfg.tn),
        "transpose": unsigned(1),
        "addr": unsigned(addr_bits(cfg.weight_depth)),
        "data": data.ArrayLayout(32, lanes),
        "en": unsigned(lanes),
    })


def _log2(v):
    return (v - 1).bit_length()


class PeArray(wiring.Component):
    """The PE array with its weight banks (see the module docstring).

    Parameters
    ----------
    cfg : AcceleratorConfig

    Members
    -------
    phase : ``In(Phase)``
        Mode; must not change while operations are in flight (the tile engine flushes).
    ctrl : ``In(ctrl_layout(cfg))``
        The operation issued this cycle (from :class:`~.addrgen.AddressGenerator`).
    ifm_raddr, ifm_rhalf : ``Out(...).array(Tn)``
        IFM bank j read address and half, this cycle.
    ifm_rdata : ``In(32).array(Tn)``
        IFM bank j word, one cycle after its address.
    ofm_raddr, ofm_rhalf, ofm_wen, ofm_waddr, ofm_whalf, ofm_wdata : ``Out(...).array(Tm)``
        OFM bank m read (FP/BP partial sums, WU output gradients) and write (partial sums).
    ofm_rdata : ``In(32).array(Tm)``
        OFM bank m word, one cycle after its address.
    w_load : ``In(stream.Signature(weight_load_layout(cfg)))``
        Loader writes into the weight banks (a beat into a region a WU job in flight
        accumulates into waits; FP/BP jobs only read, and the tokens keep loads away from the
        words they read).
    w_owned : ``In(2)``
        Bit s: a job in flight uses weight region s (bank words ``s * depth/2 ..``): the
        array drives that region's ports; the loader and the drain use the other.
    w_drain_addr : ``In(...)``
        Read address of every weight bank for the drain (in a region no job owns).
    w_drain_data : ``Out(32).array(Tm, Tn)``
        Weight bank (m, j) word, one cycle after ``w_drain_addr``.
    """

    def __init__(self, cfg):
        self._cfg = cfg
        tm, tn = cfg.tm, cfg.tn
        wab, iab, oab = (addr_bits(cfg.weight_depth), addr_bits(cfg.ifm_depth),
                         addr_bits(cfg.ofm_depth))
        #: Cycles from an operation's issue until its last write (FP/BP or WU).
        self.depth = cfg.pe_depth
        super().__init__({
            "phase": In(Phase),
            "ctrl": In(ctrl_layout(cfg)),
            "ifm_raddr": Out(iab).array(tn),
            "ifm_rhalf": Out(1).array(tn),
            "ifm_rdata": In(32).array(tn),
            "ofm_raddr": Out(oab).array(tm),
            "ofm_rhalf": Out(1).array(tm),
            "ofm_rdata": In(32).array(tm),
            "ofm_wen": Out(1).array(tm),
            "ofm_waddr": Out(oab).array(tm),
            "ofm_whalf": Out(1).array(tm),
            "ofm_wdata": Out(32).array(tm),
            "w_load": In(stream.Signature(weight_load_layout(cfg))),
            "w_owned": In(2),
            "w_drain_addr": In(wab),
            "w_drain_data": Out(32).array(tm, tn),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        tm, tn = cfg.tm, cfg.tn
        lg = _log2(tn)
        m = Module()
        wu = self.phase == Phase.WU
        lay = ctrl_layout(cfg)

        def delay(sig, cycles, name):
            for i in range(cycles):
                nxt = Signal.like(sig, name=f"{name}_d{i + 1}")
                m.d.sync += nxt.eq(sig)
                sig = nxt
            return sig

        # -- control down the rows -----------------------------------------------------------
        rctl = [self.ctrl]
        for r in range(1, tm):
            rctl.append(delay(rctl[-1], 1, f"rctl{r}"))

        # -- activations: column feed (WU skew), then down the columns -----------------------
        x = [[None] * tn for _ in range(tm)]
        for j in range(tn):
            skewed = delay(self.ctrl, j, f"skew{j}") if j else self.ctrl
            fctl = Signal(lay, name=f"fctl{j}")
            m.d.comb += fctl.eq(Mux(wu, skewed, self.ctrl))
            m.d.comb += [self.ifm_raddr[j].eq(fctl.ifm_addr),
                         self.ifm_rhalf[j].eq(fctl.ifm_half)]
            zero = delay(fctl.ifm_zero, 1, f"zero{j}")
            ones = delay(fctl.ones, 1, f"ones{j}")
            top = Signal(32, name=f"x0_{j}")
            m.d.sync += top.eq(Mux(ones, ONE, Mux(zero, 0, self.ifm_rdata[j])))
            x[0][j] = top
            for r in range(1, tm):
                x[r][j] = delay(x[r - 1][j], 1, f"x{r}_{j}")

        # -- weight banks: two regions (halves) of each, each its own memory -------------------
        # The array reads the regions its jobs own (``w_owned``), and in WU writes them; the
        # drain reads the other one meanwhile, and the loader writes any region the array does
        # not write, so the next chunk's weights load and the last chunk's weight gradients
        # drain while the array computes.
        half = cfg.weight_depth // 2
        top = addr_bits(cfg.weight_depth) - 1          # the address bit that picks the region
        banks = [[None] * tn for _ in range(tm)]
        for r in range(tm):
            for j in range(tn):
                pair = [Memory(shape=32, depth=half, init=[]) for _ in range(2)]
                for s_, mem in enumerate(pair):
                    m.submodules[f"wbank{r}_{j}_{s_}"] = mem
                banks[r][j] = pair
        load = self.w_load.payload
        # The loader may write a region the array only reads (FP/BP: other words, which the
        # tokens keep apart), not one it accumulates into (WU: the array has its write port).
        m.d.comb += self.w_load.ready.eq(~(self.w_owned.bit_select(load.addr[top], 1) & wu))
        drain_sel = Signal()
        m.d.sync += drain_sel.eq(self.w_drain_addr[top])

        # -- per lane ---------------------------------------------------------------------------
        tree_lat = FADD_LATENCY * lg
        for r in range(tm):
            ctl = rctl[r]
            # Weights read in place (FP/BP) one cycle after the row's control, registered.
            wread = []                  # the array's read data of bank (r, j)
            ports = []                  # per bank: [(write port, read port)] of each region
            for j in range(tn):
                pair = []
                for mem in banks[r][j]:
                    wp = mem.write_port()
                    rp = mem.read_port(transparent_for=(wp,))
                    pair.append((wp, rp))
                ports.append(pair)
                sel = Signal(name=f"wsel{r}_{j}")
                rdata = Signal(32, name=f"wrdata{r}_{j}")
                m.d.comb += [rdata.eq(Mux(sel, pair[1][1].data, pair[0][1].data)),
                             self.w_drain_data[r][j].eq(Mux(drain_sel, pair[1][1].data,
                                                            pair[0][1].data))]
                wread.append((rdata, sel))
            w_reg = [Signal(32, name=f"w{r}_{j}") for j in range(tn)]
            for j in range(tn):
                m.d.sync += w_reg[j].eq(wread[j][0])

            # Bias: latched from bank (r, 0) by the preamble, taken into use when the
            # preamble reaches the accumulator (so the previous job's ops keep theirs).
            bias_pending = Signal(32, name=f"bias_pending{r}")
            bias_active = Signal(32, name=f"bias_active{r}")
            with m.If(delay(ctl.bias_load, 1, f"bload{r}")):
                m.d.sync += bias_pending.eq(wread[0][0])

            # Output gradient (WU): OFM bank r, then along the row.
            g = [Signal(32, name=f"g{r}_0")]
            m.d.sync += g[0].eq(self.ofm_rdata[r])
            for j in range(1, tn):
                g.append(delay(g[-1], 1, f"g{r}_{j}"))

            prods = []
            for j in range(tn):
                mul = FMul(cfg.mult_format)
                m.submodules[f"fmul{r}_{j}"] = mul
                m.d.comb += [mul.a.eq(x[r][j]), mul.b.eq(Mux(wu, g[j], w_reg[j])),
                             mul.i_valid.eq(1)]
                prods.append(mul.result)

            adders = []
            for a in range(tn):
                add = FAdd()
                m.submodules[f"fadd{r}_{a}"] = add
                m.d.comb += add.i_valid.eq(1)
                adders.append(add)

            # FP/BP: tree over the lane's products (nulls are +0), then the accumulator.
            tctl = delay(ctl, 2 + FMUL_LATENCY, f"tctl{r}")
            vals = [Mux(tctl.null, 0, p_) for p_ in prods]
            fp_in = {}
            node = 0
            while len(vals) > 1:
                nxt = []
                for i in range(len(vals) // 2):
                    fp_in[node] = (vals[2 * i], vals[2 * i + 1])
                    nxt.append(adders[node].result)
                    node += 1
                vals = nxt
            root = vals[0]
            actl = delay(tctl, tree_lat - 1, f"actl{r}") if tree_lat else None
            bctl = delay(actl, 1, f"bctl{r}") if tree_lat else tctl
            # The partial sum is read one cycle before the root arrives.
            acc_rd = actl if tree_lat else delay(ctl, 1 + FMUL_LATENCY, f"actl{r}")
            with m.If(bctl.bias_load):
                m.d.sync += bias_active.eq(bias_pending)
            init = Mux(bctl.bias_use, bias_active, 0)
            fp_in[tn - 1] = (root, Mux(bctl.first, init, self.ofm_rdata[r]))
            octl = delay(bctl, FADD_LATENCY, f"octl{r}")

            # WU: PE (r, j)'s control travels along the row with the gradient.
            uctl = [delay(ctl, 1 + FMUL_LATENCY, f"uctl{r}_0")]
            for j in range(1, tn):
                uctl.append(delay(uctl[-1], 1, f"uctl{r}_{j}"))
            for j in range(tn):
                vctl = delay(uctl[j], 1, f"vctl{r}_{j}")
                wctl = delay(vctl, FADD_LATENCY, f"wctl{r}_{j}")
                wu_b = Mux(vctl.first, 0, wread[j][0])
                a_in, b_in = fp_in[j]
                # A null operation (a slot fill) adds +0, whatever the operands.
                wu_a = Mux(vctl.null, 0, prods[j])
                m.d.comb += [adders[j].a.eq(Mux(wu, wu_a, a_in)),
                             adders[j].b.eq(Mux(wu, wu_b, b_in))]
                # Weight bank ports, per region: the array in the regions its jobs own, the
                # loader (writes) and the drain (reads) in the others.
                raddr = Mux(wu, uctl[j].acc_addr, ctl.w_addr)
                m.d.sync += wread[j][1].eq(raddr[top])
                hit, word = self._load_lane(load, r, j)
                for s_, (wp, rp) in enumerate(ports[j]):
                    with m.If(self.w_owned[s_]):
                        m.d.comb += rp.addr.eq(raddr[:top])
                    with m.Else():
                        m.d.comb += rp.addr.eq(self.w_drain_addr[:top])
                    with m.If(self.w_owned[s_] & wu):
                        m.d.comb += [wp.addr.eq(wctl.acc_addr[:top]),
                                     wp.data.eq(adders[j].result),
                                     wp.en.eq(wctl.valid & (wctl.acc_addr[top] == s_))]
                    with m.Else():
                        m.d.comb += [wp.addr.eq(load.addr[:top]), wp.data.eq(word),
                                     wp.en.eq(self.w_load.valid & hit &
                                              (load.addr[top] == s_))]

            # OFM bank r: WU reads gradients at the row's time; FP/BP read-add-write.
            m.d.comb += [
                self.ofm_raddr[r].eq(Mux(wu, ctl.ofm_addr, acc_rd.acc_addr)),
                self.ofm_rhalf[r].eq(Mux(wu, ctl.ofm_half, acc_rd.ofm_half)),
                self.ofm_wen[r].eq(octl.valid & ~wu),
                self.ofm_waddr[r].eq(octl.acc_addr),
                self.ofm_whalf[r].eq(octl.ofm_half),
                self.ofm_wdata[r].eq(adders[tn - 1].result),
            ]
        return m

    def _load_lane(self, load, r, j):
        """Whether the weight-load beat ``load`` writes PE (r, j), and the word it writes."""
        lanes = weight_load_lanes(self._cfg)
        lg = _log2(lanes)
        # Normal: row r, columns col .. col + lanes - 1; transposed: column j, rows row ...
        normal = (load.row == r) & (load.col >> lg == j >> lg) & load.en[j % lanes]
        trans = (load.col == j) & (load.row >> lg == r >> lg) & load.en[r % lanes]
        word = Mux(load.transpose, load.data[r % lanes], load.data[j % lanes])
        return Mux(load.transpose, trans, normal), word
