"""Simulation speed of the FP units: simulated clock cycles per wall-clock second.

Each unit (FMul fp32, FMul bf16, FAdd) takes one random operand pair per cycle, in the
Amaranth simulator (pysim, an async testbench) and in Verilator (the generated Verilog under
cocotb, through ``ef_train_hdl.cosim``; ``sim/fp_units_tb.py``). Cycles are counted by the
testbenches; wall-clock time is measured around the driving loop only, so Verilator's compile
time (printed separately; zero when the build cache already holds the model) and the
simulator's start-up are excluded. Verilator's figure includes cocotb's per-cycle Python
overhead (one write per operand port and one read per result port per cycle), which
dominates for a unit this small. Every run's results are also checked against
``ef_train_hdl.model.fp`` and the check is printed.
"""

import time
from pathlib import Path

import numpy as np

UNITS = ("fmul_fp32", "fmul_bf16", "fadd")


def add_arguments(parser):
    parser.add_argument("--units", nargs="+", choices=UNITS, default=list(UNITS),
                        help="which units to run (default: all)")
    parser.add_argument("--pysim-cycles", type=int, default=5000, metavar="N",
                        help="operand pairs per unit in the Amaranth simulator (default 5000)")
    parser.add_argument("--verilator-cycles", type=int, default=50000, metavar="N",
                        help="operand pairs per unit in Verilator (default 50000)")
    parser.add_argument("--seed", type=int, default=1, help="random operand seed (default 1)")
    parser.add_argument("--no-verilator", action="store_true",
                        help="only the Amaranth simulator")


def _component(name):
    from ..fp import unit
    return unit(name)


def _expected(unit, a, b):
    from ..model import fp
    fa, fb = fp.from_bits(a), fp.from_bits(b)
    if unit == "fmul_fp32":
        return fp.bits(fp.fmul(fa, fb))
    if unit == "fmul_bf16":
        return fp.bits(fp.fmul_bf16(fa, fb))
    return fp.bits(fp.fadd(fa, fb))


def _operands(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32),
            rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32))


def pysim_throughput(component, a, b):
    """(results, cycles, wall-clock seconds) of streaming ``a``, ``b`` through pysim."""
    from amaranth.sim import Simulator

    latency = component.latency
    results = []
    cycles = [0]

    async def testbench(ctx):
        for i in range(len(a) + latency + 1):
            if i < len(a):
                ctx.set(component.a, int(a[i]))
                ctx.set(component.b, int(b[i]))
                ctx.set(component.i_valid, 1)
            else:
                ctx.set(component.i_valid, 0)
            await ctx.tick()
            cycles[0] += 1
            if ctx.get(component.o_valid):
                results.append(ctx.get(component.result))

    sim = Simulator(component)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    start = time.perf_counter()
    sim.run()
    return np.array(results, dtype=np.uint32), cycles[0], time.perf_counter() - start


def run(args):
    from tqdm import tqdm

    rows = []
    steps = len(args.units) * (1 if args.no_verilator else 2)
    with tqdm(total=steps, unit="run", dynamic_ncols=True) as bar:
        for unit in args.units:
            row = {"unit": unit}
            bar.set_description(f"pysim {unit}")
            a, b = _operands(args.pysim_cycles, args.seed)
            results, cycles, seconds = pysim_throughput(_component(unit), a, b)
            row["pysim"] = (cycles, seconds,
                            np.array_equal(results, _expected(unit, a, b)))
            bar.update(1)
            if not args.no_verilator:
                bar.set_description(f"verilator {unit}")
                row["verilator"] = _verilator(unit, args)
                bar.update(1)
            rows.append(row)

    print()
    print("FP units: simulated clock cycles per wall-clock second (one operand pair per cycle)")
    header = (f"{'unit':<10} {'simulator':<10} {'cycles':>8} {'wall s':>8} "
              f"{'cycles/s (wall)':>16} {'matches model':>14}")
    print(header)
    print("-" * len(header))
    for row in rows:
        cycles, seconds, ok = row["pysim"]
        print(f"{row['unit']:<10} {'pysim':<10} {cycles:>8} {seconds:>8.3f} "
              f"{cycles / seconds:>16,.0f} {'yes' if ok else 'NO':>14}")
        if "verilator" in row:
            v = row["verilator"]
            print(f"{row['unit']:<10} {'verilator':<10} {v['cycles']:>8} {v['seconds']:>8.3f} "
                  f"{v['cycles'] / v['seconds']:>16,.0f} {'yes' if v['ok'] else 'NO':>14}")
    if any("verilator" in row for row in rows):
        print()
        print("Verilator build (wall clock; 0.0 = reused from the build cache) and whole "
              "simulator process (start-up included):")
        for row in rows:
            if "verilator" in row:
                v = row["verilator"]
                print(f"  {row['unit']:<10} build {v['build_seconds']:6.1f} s   "
                      f"process {v['run_seconds']:6.2f} s   "
                      f"speed-up over pysim {(v['cycles'] / v['seconds']) / (row['pysim'][0] / row['pysim'][1]):.1f}x")
    return 0


def _verilator(unit, args):
    import tempfile

    from .. import cosim

    sim_dir = Path(__file__).resolve().parents[2] / "sim"
    testbench = sim_dir / "fp_units_tb.py"
    if not testbench.exists():
        raise SystemExit(f"the cocotb testbench {testbench} is missing: the Verilator bench "
                         f"runs from a source checkout (or pass --no-verilator)")
    a, b = _operands(args.verilator_cycles, args.seed)
    component = _component(unit)
    with tempfile.TemporaryDirectory(prefix="ef_train_hdl_bench_") as run_dir:
        result = cosim.run_cocotb(component, testbench, top=unit, run_dir=run_dir,
                                  inputs={"a": a, "b": b},
                                  env={"UNIT_LATENCY": component.latency}, waves=False,
                                  timeout=3600)
    out = result.outputs
    return {"cycles": int(out["cycles"]), "seconds": float(out["seconds"]),
            "ok": np.array_equal(out["result"], _expected(unit, a, b)),
            "build_seconds": result.build_seconds, "run_seconds": result.run_seconds}
