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
