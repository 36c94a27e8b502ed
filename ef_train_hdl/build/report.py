"""``report.json`` and ``summary.md``: what every build writes about itself.

``report.json`` holds the board, the part, the configuration (every field of
:class:`~ef_train_hdl.config.AcceleratorConfig`), the clock, the predicted peak GFLOPS (two flops
per PE a cycle), the resources — available on the device, kept for the rest of the design,
the budget, the lower bounds from the configuration, what open synthesis used — the flow's
own results (the bitstream, nextpnr's Fmax on the ECP5 flow), the files written and what is
left to do. ``summary.md`` is the same as a page to read.
"""

from __future__ import annotations

import json
from pathlib import Path

from .fit import RESOURCE_NAMES, budget, fmt_count

__all__ = ["write_report", "summary_markdown"]


def resource_table(board, used):
    """Rows ``(name, used, budget, available, percent of the device)``."""
    avail = budget(board)
    rows = []
    for key, have in board.resources.items():
        if key not in used:
            continue
        rows.append((RESOURCE_NAMES.get(key, key), used[key], avail[key], have,
                     100.0 * used[key] / have))
    return rows


def summary_markdown(report, board):
    cfg = report["config"]
    lines = [
        f"# ef_train_hdl build: {board.title}",
        "",
        f"- part: `{report['part']}`, flow: {report['flow']}",
        f"- configuration: `{cfg['name']}`, Tm = {cfg['tm']}, Tn = {cfg['tn']} "
        f"({cfg['tm'] * cfg['tn']} PEs), K max {cfg['k_max']}, multiplier {cfg['mult_format']}, "
        f"buffers IFM {cfg['ifm_depth']} / weight {cfg['weight_depth']} / OFM "
        f"{cfg['ofm_depth']} words per bank, DMA {cfg['dma_data_width']} bits",
        f"- clock: {report['clock_mhz']:g} MHz; predicted peak {report['peak_gflops']:.2f} "
        f"GFLOPS (2 flops per PE a cycle)",
        "",
        "## Resources",
        "",
        f"{report['resources']['basis']}",
        "",
        "| resource | used | budget | device | % of device |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, used, avail, have, pct in resource_table(board, report["resources"]["used"]):
        lines.append(f"| {name} | {fmt_count(used)} | {fmt_count(avail)} | {have:,} | "
                     f"{pct:.1f} % |")
    raw = report["resources"].get("yosys")
    if raw:
        lines += ["", "Open synthesis, as Yosys mapped it: "
                  + ", ".join(f"{k} {v}" for k, v in raw.items()) + "."]
    paths = report["resources"].get("deepest_paths")
    if paths:
        lines += ["", "Deepest paths into different registers (LUT levels, carry cells; "
                  "the registers' Amaranth names, `unit.signal`): where to cut next.", "",
                  "| LUT levels | carry | from | to |", "|---:|---:|---|---|"]
        lines += [f"| {p['levels']} | {p['carries']} | `{p['start']}` | `{p['end']}` |"
                  for p in paths]
    flow = report.get("flow_result", {})
    lines += ["", "## Result", ""]
    for key, text in report.get("status", {}).items():
        lines.append(f"- {key}: {text}")
    if flow.get("fmax_mhz"):
        lines.append(f"- nextpnr Fmax: " + ", ".join(f"{k} {v:.2f} MHz"
                                                     for k, v in flow["fmax_mhz"].items()))
    lines += ["", "## Files", ""]
    lines += [f"- `{name}`" for name in report["files"]]
    return "\n".join(lines) + "\n"


def write_report(out_dir, report, board):
    """Write ``report.json`` and ``summary.md``; returns the summary text."""
    out_dir = Path(out_dir)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = summary_markdown(report, board)
    (out_dir / "summary.md").write_text(text)
    return text
