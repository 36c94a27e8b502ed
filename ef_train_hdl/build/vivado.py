"""The Zynq UltraScale+ flow: the files a Vivado project of the accelerator is made from.

:func:`write_project` writes, into the build folder:

``ef_train_accel.v``
    The accelerator's Verilog (Amaranth's, top module ``ef_train_accel``: ports ``clk``,
    ``rst``, ``s_axil__*``, ``m_axi__*``, ``irq``).
``ef_train_top.v``
    A wrapper with the ports Vivado's block designer expects of a module reference: AMBA
    names with one underscore (``s_axil_awaddr``, ``m_axi_rdata``), ``X_INTERFACE_INFO``
    attributes that make ``s_axil`` an AXI4-Lite subordinate, ``m_axi`` an AXI4 manager, ``aclk``
    their clock, ``aresetn`` their active-low reset and ``irq`` a level-high interrupt.
``ef_train.xdc``
    Constraints. The clock comes from the PS (its constraint is the PS IP's own), there are
    no PL pins; what is left are the bitstream settings.
``create_project.tcl``
    Creates the project and the block design: the PS (:mod:`ef_train_hdl.boards.zynq_us`:
    M_AXI_HPM0_FPD -> SmartConnect (AXI4 to AXI4-Lite, its Low-Area mode) -> the registers
    at 0xA000_0000; the accelerator's manager straight to S_AXI_HP0_FPD, 128 bits, DDR (a
    SmartConnect downsizes a wider beat); ``pl_clk0`` at the build's clock;
    ``pl_resetn0`` through a ``proc_sys_reset``; ``irq`` -> ``pl_ps_irq0``), validates it and
    makes its HDL wrapper the top.
``implement.tcl``
    Synthesis, implementation, the bitstream, the utilisation and timing reports and the
    hardware platform (``.xsa``, with the bitstream) for PetaLinux / PYNQ.
``vivado.sh``
    Runs both in batch mode: ``./vivado.sh`` (what the build does when ``vivado`` is on PATH).

Every path in the Tcl is relative to the script's own folder, so the build folder can be
copied to a machine with Vivado and run there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ..boards import zynq_us

__all__ = ["write_project", "run_vivado", "wrapper_verilog", "TOP", "CORE", "TCL_FILES"]

#: Module names: the block design's module reference, and the Amaranth core inside it.
TOP = "ef_train_top"
CORE = "ef_train_accel"
TCL_FILES = ("create_project.tcl", "implement.tcl")

_PORT = re.compile(r"^\s*(input|output)\s+(\[(\d+):0\]\s+)?(\S+)\s*;", re.M)


def _core_ports(verilog, module=CORE):
    """``[(direction, width, name)]`` of the top module's ports, from Amaranth's Verilog."""
    start = verilog.index(f"module {module}(")
    end = verilog.index("endmodule", start)
    ports = []
    for match in _PORT.finditer(verilog, start, end):
        direction, _, msb, name = match.groups()
        ports.append((direction, int(msb) + 1 if msb else 1, name))
    return ports


def wrapper_verilog(core_verilog, *, clock_mhz, module=TOP, core=CORE):
    """The module-reference wrapper of the accelerator (see the module docstring)."""
    ports = _core_ports(core_verilog, core)
    names = {name for _, _, name in ports}
    if not {"clk", "rst", "irq"} <= names:
        raise ValueError(f"the core's ports {sorted(names)} lack clk, rst or irq")
    freq = int(round(clock_mhz * 1e6))
    decl = [
        '    (* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 aclk CLK" *)',
        f'    (* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF s_axil:m_axi, '
        f'ASSOCIATED_RESET aresetn, FREQ_HZ {freq}" *)',
        "    input  wire aclk,",
        '    (* X_INTERFACE_INFO = "xilinx.com:signal:reset:1.0 aresetn RST" *)',
        '    (* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW" *)',
        "    input  wire aresetn,",
    ]
    conns = ["        .clk(aclk),", "        .rst(~aresetn),"]
    first = {}
    for direction, width, name in ports:
        if "__" not in name:
            continue
        bus, signal = name.split("__", 1)
        if bus not in ("s_axil", "m_axi"):
            raise ValueError(f"unexpected bus port {name!r} on {core}")
        if bus not in first:
            first[bus] = True
            if bus == "s_axil":
                aw = next(w for _, w, n in ports if n == "s_axil__awaddr")
                param = f"PROTOCOL AXI4LITE, DATA_WIDTH 32, ADDR_WIDTH {aw}"
            else:
                dw = next(w for _, w, n in ports if n == "m_axi__wdata")
                aw = next(w for _, w, n in ports if n == "m_axi__awaddr")
                iw = next(w for _, w, n in ports if n == "m_axi__awid")
                param = (f"PROTOCOL AXI4, DATA_WIDTH {dw}, ADDR_WIDTH {aw}, ID_WIDTH {iw}, "
                         f"MAX_BURST_LENGTH 256, NUM_READ_OUTSTANDING 8, "
                         f"NUM_WRITE_OUTSTANDING 8")
            decl.append(f'    (* X_INTERFACE_PARAMETER = "{param}" *)')
        decl.append(f'    (* X_INTERFACE_INFO = "xilinx.com:interface:aximm:1.0 {bus} '
                    f'{signal.upper()}" *)')
        rng = f"[{width - 1}:0] " if width > 1 else ""
        decl.append(f"    {direction:6} wire {rng}{bus}_{signal},")
        conns.append(f"        .{name}({bus}_{signal}),")
    decl += ['    (* X_INTERFACE_INFO = "xilinx.com:signal:interrupt:1.0 irq INTERRUPT" *)',
             '    (* X_INTERFACE_PARAMETER = "SENSITIVITY LEVEL_HIGH" *)',
             "    output wire irq"]
    conns.append("        .irq(irq)")
    return "\n".join([
        "// Generated by python -m ef_train_hdl.build: the accelerator as a Vivado block-design",
        "// module reference (AMBA port names, interface attributes, active-low reset).",
        "`default_nettype none",
        f"module {module} (",
        *decl,
        ");",
        f"    {core} core (",
        *conns,
        "    );",
        "endmodule",
        "`default_nettype wire",
        "",
    ])


def _tcl_dict(props):
    return " ".join(f"CONFIG.{k} {{{v}}}" for k, v in props.items())


def create_project_tcl(board, *, part, clock_mhz, project, dma_data_width=128):
    ps = dict(zynq_us.PS_PROPERTIES)
    # The HP port is 32, 64 or 128 bits wide; the SmartConnect converts a wider DMA beat.
    ps["PSU__SAXIGP2__DATA_WIDTH"] = min(int(dma_data_width), 128)
    if dma_data_width <= 128:
        # The HP port takes the accelerator's AXI4 as it is (same width, ID width 1 <= 6):
        # no interconnect on the DMA path, none of its LUTs or latency.
        ddr = ("# The DMA goes straight to the HP port: same protocol, width and clock.\n"
               "connect_bd_intf_net [get_bd_intf_pins accel/m_axi] "
               "[get_bd_intf_pins ps/S_AXI_HP0_FPD]")
        ddr_clk = ddr_rst = ""
    else:
        ddr = ("# A beat wider than the HP port's 128 bits: a SmartConnect downsizes it.\n"
               "set sc_ddr [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect sc_ddr]\n"
               "set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $sc_ddr\n"
               "connect_bd_intf_net [get_bd_intf_pins accel/m_axi] "
               "[get_bd_intf_pins sc_ddr/S00_AXI]\n"
               "connect_bd_intf_net [get_bd_intf_pins sc_ddr/M00_AXI] "
               "[get_bd_intf_pins ps/S_AXI_HP0_FPD]")
        ddr_clk = " [get_bd_pins sc_ddr/aclk]"
        ddr_rst = " [get_bd_pins sc_ddr/aresetn]"
    ps["PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"] = f"{clock_mhz:g}"
    return f"""\
# Generated by python -m ef_train_hdl.build --board {board.name}: the Vivado project of the
# accelerator on the {board.title} ({part}). Run: vivado -mode batch -source create_project.tcl
# (or ./vivado.sh, which then runs implement.tcl). Paths are relative to this script's folder.
set here [file normalize [file dirname [info script]]]
set part {part}
# Any version of the board files will do; the newest installed is taken.
set board_glob {board.board_part.rsplit(":", 1)[0]}:*
set project {project}

create_project -force $project [file join $here vivado] -part $part
# The board files give the PS its DDR, MIO and clock set-up. Vivado ships the ZCU102's; the
# Ultra96-V2's come from the Xilinx board store (Tools > Vivado Store > Boards, or
# xhub::install [xhub::get_xitems *ultra96v2*]).
set found [lsort -dictionary [lsearch -all -inline -glob [get_board_parts -quiet] $board_glob]]
if {{[llength $found] > 0}} {{
    set board_part [lindex $found end]
    set_property board_part $board_part [current_project]
}} else {{
    puts "ERROR: no board files match $board_glob; without them the PS has no DDR set-up."
    puts "       Install them (Vivado Store > Boards) and run this script again."
    exit 1
}}

add_files -norecurse [list [file join $here {CORE}.v] [file join $here {TOP}.v]]
add_files -fileset constrs_1 -norecurse [file join $here ef_train.xdc]
update_compile_order -fileset sources_1

create_bd_design system
set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e ps]
apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {{apply_board_preset "1"}} $ps
set_property -dict [list {_tcl_dict(ps)}] $ps

set accel [create_bd_cell -type module -reference {TOP} accel]
set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset rst]
set sc_csr [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect sc_csr]
set_property -dict [list CONFIG.NUM_SI {{1}} CONFIG.NUM_MI {{1}}] $sc_csr
{ddr}
connect_bd_intf_net [get_bd_intf_pins ps/M_AXI_HPM0_FPD] [get_bd_intf_pins sc_csr/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins sc_csr/M00_AXI] [get_bd_intf_pins accel/s_axil]

connect_bd_net [get_bd_pins ps/{zynq_us.PS_CLOCK_NET}] [get_bd_pins ps/maxihpm0_fpd_aclk] \\
    [get_bd_pins ps/saxihp0_fpd_aclk] [get_bd_pins accel/aclk] [get_bd_pins sc_csr/aclk] \\
    [get_bd_pins rst/slowest_sync_clk]{ddr_clk}
connect_bd_net [get_bd_pins ps/pl_resetn0] [get_bd_pins rst/ext_reset_in]
connect_bd_net [get_bd_pins rst/peripheral_aresetn] [get_bd_pins accel/aresetn] \\
    [get_bd_pins sc_csr/aresetn]{ddr_rst}
connect_bd_net [get_bd_pins accel/irq] [get_bd_pins ps/pl_ps_irq0]

# The registers at 0x{zynq_us.CSR_BASE:08X} (4 KiB); the accelerator reaches the low 2 GiB of DDR.
assign_bd_address -offset 0x{zynq_us.CSR_BASE:08X} -range 0x{zynq_us.CSR_RANGE:X} \\
    -target_address_space [get_bd_addr_spaces ps/Data] [get_bd_addr_segs accel/s_axil/reg0]
assign_bd_address -target_address_space [get_bd_addr_spaces accel/m_axi] \\
    [get_bd_addr_segs ps/SAXIGP2/HP0_DDR_LOW]

validate_bd_design
save_bd_design
set wrapper [make_wrapper -files [get_files system.bd] -top]
add_files -norecurse $wrapper
set_property top system_wrapper [current_fileset]
update_compile_order -fileset sources_1
puts "created [file join $here vivado $project.xpr]"
"""


def implement_tcl(board, *, project, jobs=2):
    return f"""\
# Generated by python -m ef_train_hdl.build --board {board.name}: synthesis, implementation,
# bitstream and hardware platform of the project create_project.tcl made.
set here [file normalize [file dirname [info script]]]
set project {project}
open_project [file join $here vivado $project.xpr]
reset_run synth_1
launch_runs impl_1 -to_step write_bitstream -jobs {jobs}
wait_on_run impl_1
if {{[get_property PROGRESS [get_runs impl_1]] ne "100%"}} {{
    puts "ERROR: implementation did not finish: see [file join $here vivado $project.runs impl_1]"
    exit 1
}}
open_run impl_1
report_utilization -file [file join $here utilization.rpt]
report_timing_summary -file [file join $here timing.rpt]
write_hw_platform -fixed -include_bit -force -file [file join $here $project.xsa]
set bit [glob -nocomplain [file join $here vivado $project.runs impl_1 *.bit]]
if {{[llength $bit] == 1}} {{
    file copy -force [lindex $bit 0] [file join $here $project.bit]
}}
puts "bitstream: [file join $here $project.bit], hardware platform: [file join $here $project.xsa]"
"""


XDC = """\
# Generated by python -m ef_train_hdl.build. The accelerator's clock is the PS's pl_clk0, whose
# period the zynq_ultra_ps_e IP constrains itself; the PL has no pins in this design.
set_property BITSTREAM.GENERAL.COMPRESS TRUE [current_design]
"""

VIVADO_SH = """\
#!/bin/sh
# Generated by python -m ef_train_hdl.build: the Vivado project, then the bitstream.
set -e
cd "$(dirname "$0")"
vivado -mode batch -nojournal -log create_project.log -source create_project.tcl
vivado -mode batch -nojournal -log implement.log -source implement.tcl
"""


def write_project(board, out_dir, core_verilog, *, part, clock_mhz, project=None,
                  dma_data_width=128):
    """Write the files of the module docstring into ``out_dir``; returns their names."""
    out_dir = Path(out_dir)
    project = project or f"ef_train_{board.name}"
    files = {
        f"{CORE}.v": core_verilog,
        f"{TOP}.v": wrapper_verilog(core_verilog, clock_mhz=clock_mhz),
        "ef_train.xdc": XDC,
        "create_project.tcl": create_project_tcl(board, part=part, clock_mhz=clock_mhz,
                                                 project=project,
                                                 dma_data_width=dma_data_width),
        "implement.tcl": implement_tcl(board, project=project),
        "vivado.sh": VIVADO_SH,
    }
    for name, text in files.items():
        (out_dir / name).write_text(text)
    (out_dir / "vivado.sh").chmod(0o755)
    return list(files)


def run_vivado(out_dir, progress=print):
    """Run ``vivado.sh`` if Vivado is on PATH. Returns ``None`` if it is not, else the
    bitstream's name."""
    if shutil.which("vivado") is None:
        return None
    progress("Vivado found: creating the project and running it to a bitstream "
             "(vivado.sh; logs create_project.log, implement.log)")
    proc = subprocess.run(["sh", "vivado.sh"], cwd=out_dir, capture_output=True, text=True)
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"Vivado failed (exit {proc.returncode}) in {out_dir}:\n{tail}")
    bits = sorted(Path(out_dir).glob("*.bit"))
    return bits[0].name if bits else None
