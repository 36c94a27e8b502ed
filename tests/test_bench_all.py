"""``python -m ef_train_hdl.bench all`` with kept simulation records: the report it writes holds
every recorded layer, the model column is the tile-program model of the recorded programs, and
the comparison with the paper is there."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from ef_train_hdl.bench.sim import remodel

RECORDS = Path(__file__).resolve().parent.parent / "docs" / "perf"


def test_bench_all_reuses_records_and_writes_the_report(tmp_path):
    batches = ["1", "16"]
    for b in batches:
        src = RECORDS / f"sim_ultra96_b{b}.json"
        assert src.exists(), f"{src} is the record docs/performance.md is made from"
        shutil.copy(src, tmp_path / src.name)
    out, js = tmp_path / "performance.md", tmp_path / "performance.json"
    subprocess.run([sys.executable, "-m", "ef_train_hdl.bench", "all", "--reuse",
                    "--batches", *batches, "--records", str(tmp_path), "--out", str(out),
                    "--json", str(js)], check=True, capture_output=True, text=True)
    text = out.read_text()
    assert "EF-Train (paper, ZCU102, measured)" in text
    assert "## The goals" in text
    assert text.count("| tile-program model within 2 % of simulation, every layer |") == 2
    record = json.loads(js.read_text())
    assert [s["batch"] for s in record["sim"]] == [int(b) for b in batches]
    for b, sim in zip(batches, record["sim"]):
        assert f"## Cycle-accurate simulation (ultra96, batch {b}, verilator)" in text
        kept = json.loads((tmp_path / f"sim_ultra96_b{b}.json").read_text())
        fresh = remodel(json.loads(json.dumps(kept)))
        for net, data in sim["networks"].items():
            for row, old, new in zip(data["layers"], kept["networks"][net]["layers"],
                                     fresh["networks"][net]["layers"]):
                assert row["cycles"] == old["cycles"]          # the simulation, as recorded
                assert row["model_cycles"] == new["model_cycles"]
                assert ("layer_model_cycles" in row) == ("conv" in row["layer"])
                assert f"| {net} | {row['layer']} | {row['phase']} | {row['cycles']:,} |" \
                    in text


def test_cycle_budget_splits_the_counters():
    """The 'where the cycles go' rows: MACs over the array, the array's other cycles, the
    engine's idle ones and its waits, each as a share of the layer's cycles."""
    from ef_train_hdl.bench.report import _cycle_budget
    row = {"layer": "2:conv3", "phase": "WU", "cycles": 1000, "macs": 64 * 800,
           "counters": {"pe_busy": 900, "engine_wait_load": 25, "engine_wait_fetch": 5}}
    fc = dict(row, layer="3:fc")
    lines = _cycle_budget({"networks": {"vgg": {"layers": [row, fc]}}}, 64)
    rows = [line for line in lines if line.startswith("| vgg")]
    assert rows == ["| vgg | 2:conv3 | WU | 1,000 | 80.0 % | 10.0 % | 10.0 % | 2.5 % / 0.5 % |"]
    assert _cycle_budget({"networks": {"vgg": {"layers": [fc]}}}, 64) == []


def test_remodel_refuses_a_record_of_another_program():
    """A record simulated from another tiling or lowering than the compiler's current one is
    refused (its model column would time a program that was never simulated)."""
    import pytest
    kept = json.loads((RECORDS / "sim_ultra96_b16.json").read_text())
    kept["networks"] = {"lenet": kept["networks"]["lenet"]}
    remodel(json.loads(json.dumps(kept)))                   # the kept record matches
    row = kept["networks"]["lenet"]["layers"][0]
    row["counters"]["instructions"] += 1
    with pytest.raises(ValueError, match="simulate it again"):
        remodel(kept)


def test_goals_say_met_or_not_from_the_figures(tmp_path):
    """The goals table: each goal against its figure, 'no' where a figure misses."""
    from types import SimpleNamespace
    from ef_train_hdl.bench.report import _goals
    cfg = SimpleNamespace(tm=8, tn=8)

    def mrow(layer, phase, util):
        return {"layer": layer, "phase": phase, "utilisation": util, "roofline": 1.0}
    models = {"ultra96": (cfg, None, [mrow("conv1", "FP", 0.37), mrow("conv2", "FP", 0.99),
                                      mrow("conv2", "BP", 0.98), mrow("conv2", "WU", 0.965)])}

    def srow(layer, describe, util, err):
        return {"layer": layer, "phase": "FP", "describe": describe, "utilisation": util,
                "roofline": 1.0, "model_error": err}
    sim = {"preset": "ultra96", "batch": 1, "backend": "verilator",
           "speed": {"verilator": 30000.0, "amaranth": 100.0},
           "networks": {"vgg": {"layers": [
               srow("1:conv3", "Conv2d(32, 32, k=3, stride=1, pad=1)", 0.95, 0.001),
               srow("0:conv3", "Conv2d(3, 32, k=3, stride=1, pad=1)", 0.35, 0.001),
               srow("6:fc", "Linear(2048, 10)", 0.01, -0.036)]}}}
    (tmp_path / "ultra96").mkdir()
    (tmp_path / "ultra96" / "report.json").write_text(json.dumps(
        {"resources": {"yosys": {"LUT levels (deepest register-to-register path)": 18}}}))
    lines = _goals(models, [sim], tmp_path)
    table = "\n".join(lines)
    assert "WU 96.5 % (conv2)" in table and "conv1 (3 input channels on 8 lanes): FP 37.0 %" \
        in table and table.count("| no |") == 3
    assert "lowest 95.0 % (1:conv3 FP) | yes |" in table        # 0:conv3 has 3 channels
    assert "worst 3.6 %; over 2 %: vgg 6:fc FP -3.6 % | no |" in table
    assert "| 18 LUT levels | no |" in table
    assert "| 300x | yes |" in table
