"""Does a configuration fit the board? Lower bounds before synthesis, open synthesis after.

Two checks, both against the **budget**: what the device has (:attr:`Board.resources`) less
what the rest of the design needs (:attr:`Board.reserve`: the PS interconnect of a Zynq block
design, the memory and host bridge of the ULX3S top).

1. :func:`precheck`, before anything is elaborated: lower bounds that follow from the
   configuration alone — the multipliers' DSP slices (2 DSP48E2 per binary32 multiplier, 1
   per bfloat16 one; ECP5: 4 and 1 MULT18X18D) and the tile buffers' block RAM (every
   buffer word is 32 bits; a RAMB18 holds 512 of them, an ECP5 EBR 512). A configuration
   that cannot fit is refused in a second, not after a quarter of an hour of synthesis.
2. :func:`check`, after open synthesis (:func:`synthesize_accelerator`): what Yosys mapped.

For UltraScale+ the LUT figure needs care. Yosys does not pack two small LUTs into one
LUT6_2 site (a six-input LUT with two outputs: two functions of at most five shared inputs),
Vivado does; Vivado's utilisation report counts sites ("CLB LUTs"). So the check uses
:func:`lut_sites`: Yosys's LUTs, less the pairs a greedy pass finds that one site could hold
(two LUTs of at most four inputs each, sharing an input, five inputs in all), plus the LUT
sites LUTRAM and shift registers occupy. It is an estimate — Vivado's own optimisation
usually removes more — and the report shows it next to Yosys's raw count. docs/boards.md
has the measured figures.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import shutil
import threading
import time
from pathlib import Path

from ..config import PRESETS

__all__ = ["FitError", "PartialSynthesis", "partial_from_log", "used_from_partial", "precheck",
           "lower_bounds", "check", "used_resources", "lut_sites", "synthesize_accelerator",
           "budget", "fmt_count", "RESOURCE_NAMES"]

#: How the messages name each resource.
RESOURCE_NAMES = {
    "lut": "LUT", "ff": "FF", "dsp": "DSP", "bram36": "BRAM (BRAM36 tiles)",
    "ebr": "EBR (18 Kbit block RAMs)", "carry8": "CARRY8",
}

#: LUT sites a LUTRAM or shift-register primitive occupies (UltraScale+ SLICEM).
LUTRAM_SITES = {
    "RAM32M": 4, "RAM32M16": 8, "RAM64M": 4, "RAM64M8": 8, "RAM32X1D": 2, "RAM64X1D": 2,
    "RAM128X1D": 4, "RAM256X1D": 8, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2,
    "RAM256X1S": 4, "RAM512X1S": 8,
}


class PartialSynthesis(RuntimeError):
    """Yosys died after mapping everything but the LUTs (ABC9 of a very large design in the
    WebAssembly Yosys, whose memory is 4 GiB). ``partial``: :func:`partial_from_log`'s dict
    with ``error`` and ``seconds``; ``cached``: from the cache."""

    def __init__(self, partial, cached):
        super().__init__(f"open synthesis stopped in ABC9: {partial.get('error', '')}")
        self.partial, self.cached = partial, cached


class FitError(ValueError):
    """The configuration does not fit the board; the message says what, by how much, and
    which preset fits."""


def budget(board):
    """What the accelerator may use on ``board``: resources less the reserve."""
    return {k: v - board.reserve.get(k, 0) for k, v in board.resources.items()}


def _memory_blocks(depth, words_per_block=512):
    """Block RAMs a 32-bit wide memory of ``depth`` words takes, at least."""
    return math.ceil(depth / words_per_block)


def lower_bounds(cfg, family):
    """What ``cfg`` needs at least, by resource, from the configuration alone.

    The tile buffers: two halves of each IFM bank (``tn`` banks of ``ifm_depth`` words) and
    each OFM bank (``tm`` banks of ``ofm_depth``), and two regions of each of the ``tm * tn``
    weight banks (``weight_depth / 2`` words each) — every one its own memory
    (ef_train_hdl/core/buffers.py, pe_array.py) of 32-bit words, 512 to a RAMB18 or an EBR.
    The multipliers: one a PE.
    """
    blocks = (2 * cfg.tn * _memory_blocks(cfg.ifm_depth)
              + 2 * cfg.tm * _memory_blocks(cfg.ofm_depth)
              + 2 * cfg.tm * cfg.tn * _memory_blocks(cfg.weight_depth // 2))
    fp32 = cfg.mult_format == "fp32"
    if family == "xcup":
        return {"dsp": cfg.pes * (2 if fp32 else 1), "bram36": blocks / 2}
    return {"dsp": cfg.pes * (4 if fp32 else 1), "ebr": blocks}


def _suggest(board, cfg, resource):
    """A sentence naming presets that fit where ``cfg`` does not (by the lower bounds)."""
    fits = []
    for name, candidate in PRESETS.items():
        if candidate == cfg:
            continue
        need = lower_bounds(candidate, board.family)
        if all(need[k] <= budget(board)[k] for k in need) and candidate.pes <= cfg.pes:
            fits.append(name)
    # Largest array first: the board's own preset leads where it is among them.
    fits.sort(key=lambda n: (n != board.preset, -PRESETS[n].pes))
    if not fits:
        return "no preset fits; make the array or the buffers smaller (--tm, --tn, --*-depth)"
    return (f"the preset {fits[0]!r} fits (python -m ef_train_hdl.build --board "
            f"{board.name} --preset {fits[0]})"
            + (f"; so do {', '.join(repr(f) for f in fits[1:])}" if len(fits) > 1 else ""))


def _refuse(board, cfg, resource, need, how):
    have = board.resources[resource]
    kept = board.reserve.get(resource, 0)
    raise FitError(
        f"configuration {cfg.name!r} (Tm={cfg.tm}, Tn={cfg.tn}) does not fit the {board.title} "
        f"({board.device}): {RESOURCE_NAMES.get(resource, resource)} needs {fmt_count(need)} "
        f"({how}), the budget is {fmt_count(have - kept)} ({have:,} on the device, {kept:,} kept "
        f"for the rest of the design); {_suggest(board, cfg, resource)}")


def precheck(board, cfg):
    """Refuse (:class:`FitError`) a configuration whose lower bounds exceed the budget."""
    need = lower_bounds(cfg, board.family)
    avail = budget(board)
    for resource, value in need.items():
        if value > avail[resource]:
            what = ("at least: the PE multipliers" if resource == "dsp"
                    else "at least: the tile buffers")
            _refuse(board, cfg, resource, value, what)
    return need


def lut_sites(netlist, top):
    """LUT sites of a Yosys UltraScale+ netlist, with LUT6_2 pairing (see the module
    docstring). Returns ``(sites, pairs)``: ``sites`` counts logic LUTs less ``pairs``."""
    mod = netlist["modules"][top]
    luts = []
    for cell in mod["cells"].values():
        if cell["type"].startswith("LUT"):
            luts.append(frozenset(b for port, bits in cell["connections"].items()
                                  if port.startswith("I") for b in bits if isinstance(b, int)))
    by_net = collections.defaultdict(list)
    for i, ins in enumerate(luts):
        if len(ins) <= 4:
            for b in ins:
                by_net[b].append(i)
    paired = [False] * len(luts)
    pairs = 0
    for i in sorted(range(len(luts)), key=lambda i: len(luts[i])):
        if paired[i] or len(luts[i]) > 4:
            continue
        mate = next((j for b in sorted(luts[i]) for j in by_net[b]
                     if j != i and not paired[j] and len(luts[i] | luts[j]) <= 5), None)
        if mate is not None:
            paired[i] = paired[mate] = True
            pairs += 1
    return len(luts) - pairs, pairs


def _lutram_sites(cells):
    """LUT sites of the LUTRAM primitives among Yosys's ``cells`` (type -> count)."""
    return sum(LUTRAM_SITES[k] * n for k, n in cells.items() if k in LUTRAM_SITES)


def _bram36(cells):
    """BRAM36 tiles of the block RAMs in ``cells`` (type -> count): a RAMB18E2 is half."""
    return cells.get("RAMB36E2", 0) + cells.get("RAMB18E2", 0) / 2


def fmt_count(value):
    """``1,234`` or, for a fractional value (half BRAM36 tiles), ``148.5``."""
    if isinstance(value, float) and value % 1:
        return f"{value:,.1f}"
    return f"{int(value):,}"


def used_resources(result, family, sites=None):
    """The fit check's figures from a :class:`~ef_train_hdl.synth.SynthResult`.

    ``sites``: :func:`lut_sites`'s count (UltraScale+); without it the raw LUT count is used.
    """
    if family == "xcup":
        logic = result.lut if sites is None else sites
        return {
            "lut": logic + _lutram_sites(result.cells) + result.srl, "ff": result.ff,
            "dsp": result.dsp, "bram36": _bram36(result.bram), "carry8": result.carry8,
        }
    return {
        "lut": result.lut, "ff": result.ff, "dsp": result.dsp,
        "ebr": sum(result.bram.values()),
    }


def check(board, cfg, used):
    """Refuse (:class:`FitError`) when a used resource exceeds the budget."""
    avail = budget(board)
    for resource, value in used.items():
        if resource in avail and value > avail[resource]:
            _refuse(board, cfg, resource, value, "after open synthesis")


def _cache_dir():
    return Path.home() / ".cache" / "ef_train_hdl" / "synth"


def synthesize_accelerator(rtlil, family, top, workdir, *, progress=print, expected_min=None):
    """Open synthesis of the accelerator's RTLIL text, cached by its hash.

    Runs :func:`ef_train_hdl.synth.synthesize` in ``workdir`` (the log and the statistics
    stay there; the 100+ MB netlist is analysed and removed) while printing the step Yosys
    is at every 30 seconds. The result, and the LUT6_2 site count, are cached in
    ``~/.cache/ef_train_hdl/synth`` under the hash of the RTLIL and the family, so building
    the same design again takes seconds.

    Returns ``(result, sites, pairs, cached)``. Raises :class:`PartialSynthesis` when Yosys
    died after its AIGMAP step (what it had mapped is in the exception), and
    :class:`~ef_train_hdl.synth.SynthError` when it failed before.
    """
    from ..synth import SynthResult, synthesize
    key = hashlib.sha256(f"{family}\n{top}\n".encode() + rtlil.encode()).hexdigest()[:24]
    cache = _cache_dir() / f"{key}.json"
    kept = ("yosys.log", "stat.json")     # what a build folder shows of its synthesis
    failed = cache.parent / f"{key}.partial.json"
    if failed.exists() and (cache.parent / f"{key}.yosys.log").exists():
        Path(workdir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cache.parent / f"{key}.yosys.log", Path(workdir) / "yosys.log")
        raise PartialSynthesis(json.loads(failed.read_text()), cached=True)
    if cache.exists() and all((cache.parent / f"{key}.{n}").exists() for n in kept):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in kept:
            shutil.copyfile(cache.parent / f"{key}.{name}", workdir / name)
        data = json.loads(cache.read_text())
        fields = data["result"]
        fields["path"] = tuple(fields["path"])
        fields["deep_paths"] = tuple(fields.get("deep_paths", ()))
        fields["lut_by_size"] = {int(k): v for k, v in fields["lut_by_size"].items()}
        return SynthResult(**fields), data["sites"], data["pairs"], True
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "design.il"     # the name synthesize() would copy it to
    source.write_text(rtlil)
    box = {}

    def work():
        try:
            box["result"] = synthesize(source, family=family, top=top, workdir=workdir,
                                       timeout=4 * 3600, ltp=False)
        except BaseException as e:    # re-raised in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=work, daemon=True)
    start = time.monotonic()
    thread.start()
    log = workdir / "yosys.log"
    hint = f" (about {expected_min} min here)" if expected_min else ""
    progress(f"open synthesis ({family}) of the accelerator{hint}; log: {log}")
    while True:
        thread.join(30)
        if not thread.is_alive():
            break
        step = _last_step(log)
        progress(f"  ... {(time.monotonic() - start) / 60:.1f} min, Yosys: {step}")
    if "error" in box:
        partial = partial_from_log(log)
        if partial is None:
            raise box["error"]
        trap = "wasm" in str(box["error"]).lower()
        partial["error"] = (f"Yosys stopped with {'a WebAssembly trap' if trap else 'an error'}"
                            f" in {_last_step(log)}")
        partial["seconds"] = round(time.monotonic() - start, 1)
        if trap:
            # Keep it: the same design traps the same way, an hour later. (A timeout or a
            # killed process is not kept: it may not happen again.)
            cache.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, cache.parent / f"{key}.yosys.log")
            failed.write_text(json.dumps(partial))
        raise PartialSynthesis(partial, cached=False)
    result = box["result"]
    sites = pairs = None
    netlist_path = workdir / "netlist.json"
    if family == "xcup":
        progress("  counting LUT6_2 sites in the netlist")
        sites, pairs = lut_sites(json.loads(netlist_path.read_text()), top)
    netlist_path.unlink(missing_ok=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    for name in kept:
        shutil.copyfile(workdir / name, cache.parent / f"{key}.{name}")
    cache.write_text(json.dumps({"result": result.as_dict(), "sites": sites, "pairs": pairs}))
    return result, sites, pairs, False


#: LUT6_2 sites per AIG node of the last full mapping of the ultra96 accelerator (65,750 sites
#: from 984,033 AIG nodes; tiny: 0.055): what :func:`used_from_partial` scales by where ABC9
#: did not finish.
SITES_PER_AIG = 65_750 / 984_033


def partial_from_log(log):
    """What a Yosys run that died in ABC9 had mapped: the primitives (flip-flops, DSPs, block
    RAM, LUTRAM, carry cells) of its last AIGMAP report, and the number of AIG nodes left for
    the LUT mapper. ``None`` if the log has no such report."""
    import re
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return None
    at = text.rfind("Executing AIGMAP pass")
    if at < 0:
        return None
    block = text[at:at + 4000]
    m = re.search(r"replaced (\d+) cells with (\d+) new cells", block)
    if not m:
        return None
    cells = {k: int(v) for v, k in re.findall(r"^\s+(\d+) (\S+)$", block, re.M)}
    aig = int(m.group(2)) + cells.get("$_AND_", 0) + cells.get("$_NOT_", 0)
    return {"cells": {k: v for k, v in cells.items() if not k.startswith("$")}, "aig": aig}


def used_from_partial(partial):
    """Fit-check figures (UltraScale+) from :func:`partial_from_log`: exact for FF, DSP, block
    RAM and carry; LUTs *estimated* from the AIG node count (``SITES_PER_AIG``)."""
    cells = partial["cells"]
    return {
        "lut": round(SITES_PER_AIG * partial["aig"]) + _lutram_sites(cells),
        "ff": sum(n for k, n in cells.items() if k.startswith("FD")),
        "dsp": cells.get("DSP48E2", 0),
        "bram36": _bram36(cells),
        "carry8": (cells.get("CARRY4", 0) + 1) // 2 + cells.get("CARRY8", 0),
    }


def _last_step(log):
    """The last ``N. Executing X pass`` line of a Yosys log, shortened."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 200_000))
            tail = f.read().decode(errors="replace")
    except OSError:
        return "starting"
    steps = [line for line in tail.splitlines() if ". Executing " in line]
    if not steps:
        return "working"
    return steps[-1].split("Executing", 1)[1].strip().rstrip(".")[:70]
