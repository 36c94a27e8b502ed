"""The tile engine's generated Verilog under cocotb + Verilator, bit for bit against the model.

The ``ultra96`` tile engine (an 8x8 PE array) is converted to Verilog once and built once (the
build is cached in ``.pytest_cache/d/verilator``); every tile program below (the same
:mod:`ef_train_hdl.model.tiles` programs the Amaranth-simulator tests of ``test_core.py`` run)
goes through one simulation, one after the other (``sim/tile_engine_tb.py``): load beats one
per cycle, jobs and drain jobs with random idle cycles, random back-pressure on ``out``. Each
case then compares its drained words with ``prog.expected`` here.

The channel counts (10 in, 12 out) are not multiples of the array's 8: the second input group
and the second output chunk are partly zero channels.
"""

import time
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Const

from ef_train_hdl import cosim
from ef_train_hdl.config import preset
from ef_train_hdl.core.drain import drain_lanes
from ef_train_hdl.core.buffers import bank_load_layout
from ef_train_hdl.core.engine import TileEngine
from ef_train_hdl.core.job import drain_layout, job_layout
from ef_train_hdl.core.pe_array import weight_load_layout
from ef_train_hdl.model import ops, tiles

# Build and run take about two minutes here (the build most of it; cosim makes only the top
# module public, which took the 8x8 engine's C++ compile from over 25 minutes to under two).
pytestmark = [pytest.mark.verilator]

TESTBENCH = Path(__file__).resolve().parents[1] / "sim" / "tile_engine_tb.py"
TOP = "ef_tile_engine"
CFG = preset("ultra96")
KINDS = {"w": 0, "ifm": 1, "ofm": 2, "job": 3, "wait": 4, "drain": 5}
#: Simulated cycles a wait or a drain may take before the testbench gives up.
MAX_CYCLES = 50_000
#: Wall-clock limit of the simulator process (the Verilator build is separate).
SIM_TIMEOUT = 300


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _fc_program(cfg):
    """An FC-like tile (K = 1, H = 1, the batch as the pixels), checked against ops.fc_fp."""
    rng = np.random.default_rng(5)
    batch, n, mo = 5, 20, 6
    x, w, b = rand(rng, batch, n), rand(rng, mo, n), rand(rng, mo)
    prog = tiles.conv_fp_tile(x.T[None, :, None, :], w[:, :, None, None], b, 1, 0, cfg)
    want = np.zeros((batch, cfg.tm), np.float32)
    want[:, :mo] = ops.fc_fp(x, w, b, cfg)
    prog.expected = want.view(np.uint32).reshape(-1)
    return prog


def _programs(cfg):
    rng = np.random.default_rng(2024)
    progs = {}
    # FP 3x3 stride 1 pad 1, 10 -> 12 channels, 6x6, with bias: both output chunks.
    x, w, b = rand(rng, 1, 10, 6, 6), rand(rng, 12, 10, 3, 3), rand(rng, 12)
    for chunk in range(2):
        progs[f"fp3x3s1_c{chunk}"] = tiles.conv_fp_tile(x, w, b, 1, 1, cfg, chunk=chunk)
    # BP 3x3 stride 2 pad 1: 12 output gradients (4x4) -> 10 input channels (7x7).
    gz, w = rand(rng, 1, 12, 4, 4), rand(rng, 12, 10, 3, 3)
    for chunk in range(2):
        progs[f"bp3x3s2_c{chunk}"] = tiles.conv_bp_tile(gz, w, (7, 7), 2, 1, cfg, chunk=chunk)
    # WU 1x1 (P = 8 partial sums per tap), batch 2: the partly-zero chunk 1 x group 1.
    x, gz = rand(rng, 2, 10, 5, 5), rand(rng, 2, 12, 5, 5)
    assert ops.interleave_wu(1, cfg) == 8
    progs["wu1x1_c1g1"] = tiles.conv_wu_tile(gz, x, 1, 1, 0, cfg, chunk=1, group=1)
    # WU 3x3 stride 2 pad 1, batch 2.
    x, gz = rand(rng, 2, 10, 7, 7), rand(rng, 2, 12, 4, 4)
    progs["wu3x3s2_c0g0"] = tiles.conv_wu_tile(gz, x, 3, 2, 1, cfg, chunk=0, group=0)
    progs["fc"] = _fc_program(cfg)
    return progs


PROGRAMS = _programs(CFG)


def _pack(layout, fields):
    return Const.cast(layout.const(fields)).value & ((1 << layout.size) - 1)


def _encode(cfg, progs):
    """The programs as the testbench's arrays (see ``sim/tile_engine_tb.py``)."""
    layouts = {"w": weight_load_layout(cfg), "ifm": bank_load_layout(cfg.tn, cfg.ifm_depth),
               "ofm": bank_load_layout(cfg.tm, cfg.ofm_depth), "job": job_layout(cfg),
               "drain": drain_layout(cfg)}
    chunks = max(-(-layout.size // 32) for layout in layouts.values())
    kinds, payloads, starts, beats = [], [], [0], []
    lanes = drain_lanes(cfg)
    for prog in progs:
        for step in tiles.port_steps(prog, cfg):
            name = step[0]
            if name in ("w", "ifm", "ofm", "job", "drain"):
                value = _pack(layouts[name], step[1])
            else:
                value = 0
            kinds.append(KINDS[name])
            payloads.append([(value >> (32 * i)) & 0xFFFF_FFFF for i in range(chunks)])
        starts.append(len(kinds))
        assert len(prog.expected) % lanes == 0
        beats.append(len(prog.expected) // lanes)
    return {"kind": np.array(kinds, np.int8), "payload": np.array(payloads, np.uint32),
            "prog_start": np.array(starts, np.int64), "beats": np.array(beats, np.int64)}


@pytest.fixture(scope="module")
def tile_run(tmp_path_factory, cosim_cache):
    start = time.perf_counter()
    verilog = cosim.verilog_of(TileEngine(CFG), name=TOP)
    convert_seconds = time.perf_counter() - start
    names = list(PROGRAMS)
    run_dir = tmp_path_factory.mktemp("tile_engine")
    result = cosim.run_cocotb(
        verilog, TESTBENCH, top=TOP, run_dir=run_dir, cache_dir=cosim_cache,
        inputs=_encode(CFG, [PROGRAMS[n] for n in names]),
        env={"TILE_LANES": drain_lanes(CFG), "TILE_SEED": 1, "TILE_STALL": 0.3,
             "TILE_MAX_CYCLES": MAX_CYCLES},
        waves=False, timeout=SIM_TIMEOUT)
    out = result.outputs
    offsets = np.concatenate([[0], np.cumsum(out["n_words"])])
    per_prog = {}
    for i, name in enumerate(names):
        per_prog[name] = {k: int(out[k][i]) for k in (
            "last_count", "last_final", "done_count", "bad_errors", "active0", "active",
            "busy", "cycles")}
        per_prog[name]["words"] = out["words"][offsets[i]:offsets[i + 1]]
        # cycles_active / cycles_busy count from reset: this program's share
        per_prog[name]["busy_delta"] = int(out["busy"][i]) - (int(out["busy"][i - 1]) if i else 0)
        per_prog[name]["active_delta"] = (int(out["active"][i])
                                          - (int(out["active"][i - 1]) if i else 0))
    cycles, seconds = int(out["total_cycles"]), float(out["seconds"])
    print(f"\n[tile_engine {CFG.name}] convert {convert_seconds:.1f} s, build "
          f"{result.build_seconds:.1f} s ({'cached' if result.cached else 'built'}), "
          f"simulator {result.run_seconds:.1f} s, {cycles} cycles in {seconds:.1f} s of "
          f"testbench = {cycles / max(seconds, 1e-9):.0f} cycles/s")
    return per_prog


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_tile_matches_model(tile_run, name):
    prog, got = PROGRAMS[name], tile_run[name]
    jobs = sum(1 for s in prog.steps if s[0] == "job")
    assert got["done_count"] == jobs, f"{got['done_count']} done pulses for {jobs} jobs"
    assert got["bad_errors"] == 0, "a job was refused"
    words, want = got["words"], np.asarray(prog.expected, np.uint32)
    assert len(words) == len(want), f"{len(words)} words drained, {len(want)} expected"
    wrong = np.flatnonzero(words != want)
    if len(wrong):
        lines = [f"{name}: {len(wrong)} of {len(want)} words differ from the model; first:"]
        for i in wrong[:12]:
            lines.append(f"  [{i}] got {words[i]:08x}, expected {want[i]:08x}")
        pytest.fail("\n".join(lines))
    assert got["last_final"] == 1 and got["last_count"] == 1
    ops = sum(tiles.job_ops(job) for job in prog.jobs)     # one busy cycle per operation
    assert got["busy_delta"] == ops, (got["busy_delta"], ops)
