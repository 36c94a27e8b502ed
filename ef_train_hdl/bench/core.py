"""Cycles per tile job of the tile engine against the ideal of one Tm x Tn MAC step per cycle.

For each phase and kernel size one tile (one channel group) runs in the Amaranth simulator
with no stalls; printed per job: the operations (MAC steps of the whole array, the ideal
cycle count), the engine's active cycles, the cycles it issued operations (``busy``),
steady-state utilisation (``busy / ops``: 100 % means one MAC per PE per cycle from the
first operation to the last), the fixed overhead (``active - ops``: checks, address set-up,
pipeline fill and drain) next to :meth:`AcceleratorConfig.job_overhead` (the figure the
analytical model uses), and the whole-job utilisation ``ops / active``.
"""

import numpy as np

CASES = [  # phase, kernel, stride, pad, map size
    ("FP", 1, 1, 0, 8), ("FP", 3, 1, 1, 8), ("FP", 5, 1, 2, 8),
    ("BP", 1, 1, 0, 8), ("BP", 3, 1, 1, 8), ("BP", 3, 2, 1, 8), ("BP", 5, 1, 2, 8),
    ("WU", 1, 1, 0, 8), ("WU", 3, 1, 1, 8), ("WU", 5, 1, 2, 8),
]


def add_arguments(parser):
    parser.add_argument("--preset", default="tiny",
                        help="configuration preset (default tiny: the simulator is slow on "
                             "big arrays; cycle counts scale with the tile, not the array)")
    parser.add_argument("--size", type=int, default=None, metavar="N",
                        help="map height and width (default 8)")


def _program(phase, k, s, p, size, cfg):
    from ..model import tiles
    rng = np.random.default_rng(0)
    tn, tm = cfg.tn, cfg.tm
    if phase == "FP":
        x = rng.standard_normal((1, tn, size, size)).astype(np.float32)
        w = rng.standard_normal((tm, tn, k, k)).astype(np.float32)
        return tiles.conv_fp_tile(x, w, None, s, p, cfg)
    ho = (size + 2 * p - k) // s + 1
    if phase == "BP":
        gz = rng.standard_normal((1, tn, ho, ho)).astype(np.float32)
        w = rng.standard_normal((tn, tm, k, k)).astype(np.float32)
        return tiles.conv_bp_tile(gz, w, (size, size), s, p, cfg)
    x = rng.standard_normal((1, tn, size, size)).astype(np.float32)
    gz = rng.standard_normal((1, tm, ho, ho)).astype(np.float32)
    return tiles.conv_wu_tile(gz, x, k, s, p, cfg)


def _measure(cfg, prog):
    from amaranth.sim import Simulator
    from ..core.engine import TileEngine
    from ..model import tiles
    dut = TileEngine(cfg)
    out = {}

    async def tb(ctx):
        for step in tiles.port_steps(prog, cfg):
            kind = step[0]
            if kind in ("w", "ifm", "ofm", "job"):
                port = {"w": dut.w_load, "ifm": dut.ifm_load, "ofm": dut.ofm_load,
                        "job": dut.job}[kind]
                payload = step[1]
                if kind == "job":
                    out["start"] = (ctx.get(dut.cycles_active), ctx.get(dut.cycles_busy))
                ctx.set(port.payload, payload)
                ctx.set(port.valid, 1)
                await ctx.tick().until(port.ready)
                ctx.set(port.valid, 0)
            elif kind == "wait":
                await ctx.tick().until(dut.done)
                await ctx.tick()
                out["end"] = (ctx.get(dut.cycles_active), ctx.get(dut.cycles_busy))
                out["error"] = ctx.get(dut.error)
                return

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return out["end"][0] - out["start"][0], out["end"][1] - out["start"][1], out["error"]


def run(args):
    from ..config import preset
    from ..model import tiles
    cfg = preset(args.preset)
    size = args.size or 8
    print(f"preset {cfg.name}: Tm={cfg.tm} Tn={cfg.tn}, one channel group per job, no stalls")
    print(f"{'phase':5} {'K':>2} {'s':>2} {'ops':>6} {'active':>7} {'busy':>6} "
          f"{'steady':>7} {'overhead':>8} {'model':>6} {'job util':>8}")
    for phase, k, s, p, _ in CASES:
        prog = _program(phase, k, s, p, size, cfg)
        ops = tiles.job_ops(prog.jobs[0])
        active, busy, error = _measure(cfg, prog)
        model = tiles.job_cycles(prog.jobs[0], cfg) - ops
        print(f"{phase:5} {k:2} {s:2} {ops:6} {active:7} {busy:6} {busy / ops:7.1%} "
              f"{active - ops:8} {model:6} {ops / active:8.1%}"
              + ("" if str(error).endswith("NONE") else f"  error {error}"))
