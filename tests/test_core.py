"""The tile engine (PE array, tile buffers, address generators, drain) in the Amaranth
simulator: every phase over a spread of shapes, the buffers filled from the numpy tensors as
:mod:`ef_train_hdl.model.tiles` prescribes, the drained result compared bit for bit with
:mod:`ef_train_hdl.model.ops` on the whole layer; random stalls on every stream."""

import random

import numpy as np
import pytest
from amaranth.hdl import Const
from amaranth.lib import data

from ef_train_hdl.config import AcceleratorConfig, preset
from ef_train_hdl.core.drain import drain_lanes
from ef_train_hdl.core.engine import TileEngine, job_overhead
from ef_train_hdl.core.job import TileError, job_layout
from ef_train_hdl.model import tiles
from stream_helpers import assert_bits_equal, simulate, stream_get, stream_put

TINY = preset("tiny")
WIDE = AcceleratorConfig(tm=2, tn=4, k_max=5, ifm_depth=256, weight_depth=256, ofm_depth=256,
                         max_channels=64, max_size=32, max_batch=8, name="2x4")
TALL = AcceleratorConfig(tm=4, tn=2, k_max=5, ifm_depth=256, weight_depth=256, ofm_depth=256,
                         max_channels=64, max_size=32, max_batch=8, name="4x2")


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def run_program(tmp_path, name, cfg, prog, *, stall=0.3, seed=0, max_cycles=200_000):
    """Run ``prog`` on a TileEngine; return (drained words, stats)."""
    lanes = drain_lanes(cfg)
    n_beats = len(prog.expected) // lanes
    result = {}

    def build():
        dut = TileEngine(cfg)
        rng = random.Random(seed)
        got = []
        stats = {"done": 0, "errors": []}

        async def driver(ctx):
            issued = 0
            for step in tiles.port_steps(prog, cfg):
                kind = step[0]
                if kind in ("w", "ifm", "ofm"):
                    port = {"w": dut.w_load, "ifm": dut.ifm_load, "ofm": dut.ofm_load}[kind]
                    await stream_put(ctx, port, [step[1]], rng=rng, idle_prob=stall * 0.3)
                elif kind == "job":
                    await stream_put(ctx, dut.job, [step[1]], rng=rng, idle_prob=stall)
                    issued += 1
                elif kind == "wait":
                    waited = 0
                    while stats["done"] < issued:
                        await ctx.tick()
                        waited += 1
                        assert waited < max_cycles, "the engine never reported done"
                elif kind == "drain":
                    stats["active0"] = ctx.get(dut.cycles_active)
                    await stream_put(ctx, dut.drain_job, [step[1]], rng=rng, idle_prob=stall)

        async def monitor(ctx):
            async for _, _, done, err in ctx.tick().sample(dut.done, dut.error):
                if done:
                    stats["done"] += 1
                    stats["errors"].append(TileError(err))

        async def sink(ctx):
            beats = await stream_get(ctx, dut.out, n_beats, rng=rng, stall_prob=stall,
                                     timeout=max_cycles)
            for b in beats:
                got.extend(int(b.data[i]) for i in range(lanes))
            stats["last"] = [int(b.last) for b in beats]
            stats["active"] = ctx.get(dut.cycles_active)
            stats["busy"] = ctx.get(dut.cycles_busy)

        def check():
            result["got"] = np.array(got, np.uint32)
            result["stats"] = stats

        return dut, [driver, sink], check, monitor

    def build3():
        dut, tbs, check, monitor = build()
        return dut, tbs + [(monitor, "background")], check

    simulate(tmp_path, name, build3)
    return result["got"], result["stats"]


def check_program(tmp_path, name, cfg, prog, **kw):
    got, stats = run_program(tmp_path, name, cfg, prog, **kw)
    assert all(e is TileError.NONE for e in stats["errors"]), stats["errors"]
    assert_bits_equal(got, prog.expected, name)
    assert stats["last"][-1] == 1 and sum(stats["last"]) == 1
    return stats


FP_CASES = [
    # (cin, cout, h, w, k, s, p, rows)
    (3, 2, 6, 6, 3, 1, 1, None),
    (2, 3, 7, 5, 3, 2, 1, None),
    (3, 3, 6, 6, 5, 1, 2, (1, 3)),
    (4, 2, 5, 5, 1, 1, 0, None),
    (1, 2, 9, 9, 3, 2, 0, (2, 3)),       # one output row
]


@pytest.mark.parametrize("cfg", [TINY, WIDE, TALL], ids=lambda c: c.name)
@pytest.mark.parametrize("case", FP_CASES, ids=lambda c: "x".join(map(str, c[:7])))
def test_fp(tmp_path, cfg, case):
    cin, cout, h, w, k, s, p, rows = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x, wt, b = rand(rng, 1, cin, h, w), rand(rng, cout, cin, k, k), rand(rng, cout)
    for chunk in range(-(-cout // cfg.tm)):
        prog = tiles.conv_fp_tile(x, wt, b, s, p, cfg, chunk=chunk, rows=rows)
        check_program(tmp_path, f"fp{chunk}", cfg, prog)


BP_CASES = [
    (2, 3, 6, 6, 3, 1, 1, None),
    (3, 2, 7, 7, 3, 2, 1, None),
    (2, 2, 8, 8, 5, 2, 2, (2, 5)),
    (3, 2, 6, 6, 1, 2, 0, None),         # 1x1 stride 2: odd pixels have no tap
    (2, 3, 5, 5, 3, 1, 0, (4, 5)),       # one row
]


@pytest.mark.parametrize("cfg", [TINY, WIDE, TALL], ids=lambda c: c.name)
@pytest.mark.parametrize("case", BP_CASES, ids=lambda c: "x".join(map(str, c[:7])))
def test_bp(tmp_path, cfg, case):
    cin, cout, h, w, k, s, p, rows = case
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    rng = np.random.default_rng(hash(case) % 2**32)
    gz, wt = rand(rng, 1, cout, ho, wo), rand(rng, cout, cin, k, k)
    for chunk in range(-(-cin // cfg.tm)):
        prog = tiles.conv_bp_tile(gz, wt, (h, w), s, p, cfg, chunk=chunk, rows=rows)
        check_program(tmp_path, f"bp{chunk}", cfg, prog)


WU_CASES = [
    (3, 2, 6, 6, 3, 1, 1, 1),
    (2, 3, 7, 7, 3, 2, 1, 2),
    (2, 2, 5, 5, 1, 1, 0, 2),            # 1x1: P = 8 partial sums per tap
    (3, 2, 6, 6, 2, 2, 0, 1),
]


@pytest.mark.parametrize("cfg", [TINY, WIDE, TALL], ids=lambda c: c.name)
@pytest.mark.parametrize("case", WU_CASES, ids=lambda c: "x".join(map(str, c)))
def test_wu(tmp_path, cfg, case):
    cin, cout, h, w, k, s, p, batch = case
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    rng = np.random.default_rng(hash(case) % 2**32)
    x, gz = rand(rng, batch, cin, h, w), rand(rng, batch, cout, ho, wo)
    prog = tiles.conv_wu_tile(gz, x, k, s, p, cfg, chunk=0, group=0)
    check_program(tmp_path, "wu", cfg, prog)


def test_fc_and_bias_grad(tmp_path):
    """FC (a 1x1 layer whose pixels are the batch) in FP, and the bias gradient, on tiny."""
    cfg = TINY
    rng = np.random.default_rng(5)
    batch, n, mo = 3, 5, 2
    x, w, b = rand(rng, batch, n), rand(rng, mo, n), rand(rng, mo)
    from ef_train_hdl.model import ops
    img = x.T[None, :, None, :]                     # one image, H = 1, W = batch
    prog = tiles.conv_fp_tile(img, w[:, :, None, None], b, 1, 0, cfg)
    want = ops.fc_fp(x, w, b, cfg)                  # y[b, m]: independent of the conv path
    prog.expected = want[:, :cfg.tm].astype(np.float32).view(np.uint32).reshape(-1)
    check_program(tmp_path, "fc", cfg, prog)
    gz = rand(rng, 2, 2, 3, 3)
    check_program(tmp_path, "db", cfg, tiles.bias_grad_tile(gz, cfg))


def _dirty(cfg, prog, seed):
    """``prog`` after loads of random words (NaN and infinity patterns included) into every
    word of every OFM bank (both halves) and weight bank: what earlier tiles leave behind."""
    rng = np.random.default_rng(seed)
    junk = []
    for half in range(2):
        for bank in range(cfg.tm):
            junk += [("ofm", half, bank, a, int(v)) for a, v in
                     enumerate(rng.integers(0, 2**32, cfg.ofm_depth, dtype=np.uint64))]
    for bank in range(cfg.tm * cfg.tn):
        junk += [("w", bank, a, int(v)) for a, v in
                 enumerate(rng.integers(0, 2**32, cfg.weight_depth, dtype=np.uint64))]
    return tiles.TileProgram(steps=junk + prog.steps, expected=prog.expected)


def _dirty_cases(cfg):
    rng = np.random.default_rng(77)
    # BP 3x3 stride 2: phase (even, even) has one tap per group; one group -> 1 term < P = 4.
    gz, w = rand(rng, 1, 2, 4, 4), rand(rng, 2, 2, 3, 3)
    yield "bp3x3s2", tiles.conv_bp_tile(gz, w, (7, 7), 2, 1, cfg)
    # FC forward, one input group, batch 3 as the width: 1 term < P = 4.
    x, w = rand(rng, 3, 2), rand(rng, 2, 2)
    yield "fc_fp", tiles.conv_fp_tile(x.T[None, :, None, :], w[:, :, None, None], None, 1, 0,
                                      cfg)
    # FC weight gradient at batch 1: one pixel < P = 8 slots per weight.
    x, gz = rand(rng, 1, 2, 1, 1), rand(rng, 1, 2, 1, 1)
    yield "fc_wu_b1", tiles.conv_wu_tile(gz, x, 1, 1, 0, cfg)
    yield "bias_grad_b1", tiles.bias_grad_tile(gz, cfg)
    # 3x3 FP with enough terms (no fill): the junk must not matter either.
    x, w = rand(rng, 1, 2, 5, 5), rand(rng, 2, 2, 3, 3)
    yield "fp3x3", tiles.conv_fp_tile(x, w, rand(rng, 2), 1, 1, cfg)


@pytest.mark.parametrize("case", ["bp3x3s2", "fc_fp", "fc_wu_b1", "bias_grad_b1", "fp3x3"])
def test_dirty_buffers(tmp_path, case):
    """Results do not depend on what earlier tiles left in the buffers: a chain with fewer
    terms than partial-sum slots starts with a fill pass that writes +0 into every slot (the
    drain adds all P), instead of relying on a fresh, zeroed bank."""
    cfg = TINY
    prog = dict(_dirty_cases(cfg))[case]
    stats = check_program(tmp_path, case, cfg, _dirty(cfg, prog, seed=len(case)))
    ops = sum(tiles.job_ops(job) for job in prog.jobs)
    assert stats["busy"] == ops, "null operations (fills) must not count as busy cycles"


def test_no_stalls_one_mac_per_cycle(tmp_path):
    """Without stalls, a 3x3 FP job issues one operation per cycle: the busy counter equals
    the operations, and everything else is the stated fixed overhead per job."""
    cfg = TINY
    rng = np.random.default_rng(9)
    x, w = rand(rng, 1, 2, 6, 6), rand(rng, 2, 2, 3, 3)
    prog = tiles.conv_fp_tile(x, w, None, 1, 1, cfg)
    stats = check_program(tmp_path, "util", cfg, prog, stall=0.0)
    ops = sum(tiles.job_ops(job) for job in prog.jobs)
    assert stats["busy"] == ops
    assert stats["active0"] == ops + len(prog.jobs) * job_overhead(cfg)


@pytest.mark.parametrize("case", ["bp3x3s2", "fc_fp", "fc_wu_b1", "bias_grad_b1", "fp3x3"])
def test_job_cycles(tmp_path, case):
    """Without stalls the engine is active exactly ``tiles.job_cycles`` per job, fill passes
    (BP stride phases with one tap, FC at batch 1, bias) included: the figure the analytical
    model charges per job."""
    cfg = TINY
    prog = dict(_dirty_cases(cfg))[case]
    stats = check_program(tmp_path, case, cfg, prog, stall=0.0)
    assert stats["active0"] == sum(tiles.job_cycles(job, cfg) for job in prog.jobs)


def test_back_to_back_jobs_overlap_their_flush(tmp_path):
    """A chain of same-phase jobs (one per input group, planes loaded while the previous job
    runs) costs its set-ups and operations and one flush, as ``tiles.jobs_schedule`` says: the
    next job is taken in the cycle of the previous one's last operation, so each boundary hides
    that job's whole flush (the PE array's depth plus 2)."""
    cfg = TINY
    rng = np.random.default_rng(21)
    x, w = rand(rng, 1, 8, 6, 6), rand(rng, 2, 8, 5, 5)       # 4 input groups, 900 ops a job
    prog = tiles.conv_fp_tile(x, w, rand(rng, 2), 1, 2, cfg)
    stats = check_program(tmp_path, "chain", cfg, prog, stall=0.0)
    sched = tiles.jobs_schedule(prog.jobs, cfg)
    assert stats["active0"] == sched[-1][1] - sched[0][0] + 1
    one_by_one = sum(tiles.job_cycles(job, cfg) for job in prog.jobs)
    assert one_by_one - stats["active0"] == 3 * (cfg.pe_depth + 2)


@pytest.mark.parametrize("field,value,error", [
    ("kernel", 0, TileError.KERNEL), ("kernel", 6, TileError.KERNEL),  # tiny: k_max = 5
    ("stride", 3, TileError.STRIDE), ("out_rows", 0, TileError.SHAPE),
    ("phase", 3, TileError.PHASE), ("log2_p", 3, TileError.INTERLEAVE),
    ("ifm_base", 500, TileError.IFM_RANGE), ("w_base", 250, TileError.WEIGHT_RANGE),
    ("ofm_base", 250, TileError.OFM_RANGE),
    # One word past the end: the smallest base each range check refuses.
    ("ifm_base", "edge", TileError.IFM_RANGE), ("w_base", "edge", TileError.WEIGHT_RANGE),
    ("ofm_base", "edge", TileError.OFM_RANGE),
])
def test_bad_job_is_refused(tmp_path, field, value, error):
    """A malformed job sets its error code, writes nothing and leaves the engine usable."""
    cfg = TINY
    rng = np.random.default_rng(2)
    x, w = rand(rng, 1, 2, 4, 4), rand(rng, 2, 2, 3, 3)
    prog = tiles.conv_fp_tile(x, w, None, 1, 1, cfg)
    bad = dict(next(s for s in prog.steps if s[0] == "job")[1])
    if field == "log2_p":           # 8 partial sums is allowed; 1 over 1 pixel is a hazard
        bad["out_rows"], bad["out_cols"], bad["log2_p"] = 1, 1, 0
    elif value == "edge":
        words = {"ifm_base": (cfg.ifm_depth, bad["in_rows"] * bad["in_cols"]),
                 "w_base": (cfg.weight_depth, bad["kernel"] ** 2),
                 "ofm_base": (cfg.ofm_depth, (bad["out_rows"] * bad["out_cols"])
                              << bad["log2_p"])}[field]
        bad[field] = words[0] - words[1] + 1
    elif field != "phase":
        bad[field] = value
    if field == "phase":            # not a Phase: set the field's raw bits
        layout = job_layout(cfg)
        raw = Const.cast(layout.const(dict(bad, phase=0))).value
        bad = data.Const(layout, raw | value << layout["phase"].offset)
    prog.steps.insert(0, ("job", bad))
    got, stats = run_program(tmp_path, "bad", cfg, prog, stall=0.0)
    assert stats["errors"][0] is error
    assert all(e is TileError.NONE for e in stats["errors"][1:])
    assert_bits_equal(got, prog.expected, "after a refused job")
