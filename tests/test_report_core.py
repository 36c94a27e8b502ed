"""``report core``'s tables and resource arithmetic, on a made-up synthesis result (no Yosys)."""

from ef_train_hdl.report import core

RESULT = {
    "lut": 1000, "lut_by_size": {"3": 200, "6": 800}, "ff": 2000, "dsp": 8, "carry": 30,
    "carry8": 15, "bram": {"RAMB36E2": 3, "RAMB18E2": 5}, "lutram": {"RAM64M": 10},
    "srl": 4, "lut_levels": 4, "carry_on_path": 2, "mux_on_path": 0,
    "longest_carry_chain": 7, "path": ["FDRE", "LUT6", "CARRY4"], "seconds": 12.3,
}


def test_resource_arithmetic():
    assert core.bram36({"RAMB36E2": 3, "RAMB18E2": 5}) == (5.5, 3, 5)
    assert core.lutram_luts({"RAM64M": 10, "RAM32X1D": 1}) == 42
    rows = {name: (used, avail) for name, used, avail, _ in
            core.resource_rows(RESULT, core.DEVICES["ultra96"][1])}
    assert rows["LUT"] == (1000 + 40 + 4, 70_560)
    assert rows["BRAM36"] == (5.5, 216)
    assert rows["DSP48E2"] == (8, 360)


def test_tables_format():
    text = core.format_resources("title", RESULT, core.DEVICES["ultra96"][1])
    assert "DSP48E2" in text and "2.2%" in text and "5.5" in text
    depths = core.format_depths([("PeArray", "2x2", RESULT, "ok"),
                                 ("TileEngine", "16x16", None, "skipped")])
    lines = depths.splitlines()
    assert len(lines) == 4
    assert lines[2].split()[:4] == ["PeArray", "2x2", "4", "2"]
    assert "skipped" in lines[3]
