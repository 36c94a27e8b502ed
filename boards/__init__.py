"""Board support that amaranth-boards lacks, installed as ``ef_train_hdl.boards``.

:data:`BOARDS` is the registry the build command (``python -m ef_train_hdl.build``) reads:
per board its device, the resources the fit check holds a configuration to, the default
preset and clock, and the flow that builds it.

- ``ultra96`` (Avnet Ultra96 / Ultra96-V2, XCZU3EG-SBVA484-1) and ``zcu102`` (XCZU9EG-FFVB1156-2,
  the paper's board): a Zynq UltraScale+ block design made by Vivado from the Tcl the build
  writes (:mod:`.zynq_us`; the platforms are in :mod:`.ultra96` and :mod:`.zcu102`), and
  open synthesis for the fit check and the resource report where Vivado is not installed.
- ``ulx3s`` (ECP5-85F, the platform from amaranth-boards): end to end with the open
  toolchain (:mod:`.ulx3s`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Board", "BOARDS", "board"]


@dataclass(frozen=True)
class Board:
    """One build target.

    Attributes
    ----------
    name : str
        ``--board`` value.
    title : str
        The board, as its maker calls it.
    device : str
        The FPGA (vendor part number, as the vendor tool takes it).
    family : str
        Open-synthesis family of :mod:`ef_train_hdl.synth` (``"xcup"`` or ``"ecp5"``).
    flow : str
        ``"vivado"`` (Zynq UltraScale+ block design) or ``"ecp5"`` (yosys + nextpnr).
    preset : str
        The :data:`ef_train_hdl.config.PRESETS` entry the board builds by default.
    clock_mhz : float
        Default accelerator clock.
    resources : dict
        What the device has, by the names of the fit check: ``lut``, ``ff``, ``dsp``,
        ``bram36`` (xcup; BRAM36 tiles, a RAMB18 is half) or ``lut``, ``ff``, ``dsp``
        (MULT18X18D), ``ebr`` (ecp5).
    reserve : dict
        What the fit check keeps free for the rest of the design: the PS interconnect of a
        Zynq block design (SmartConnect, AXI-Lite crossbar, reset), the memory and host
        bridge of the ULX3S top.
    board_part : str
        Vivado board part (PS presets: DDR, clocks, MIO), used when its board files are
        installed.
    notes : str
        What a user of this board should know.
    """

    name: str
    title: str
    device: str
    family: str
    flow: str
    preset: str
    clock_mhz: float
    resources: dict
    reserve: dict = field(default_factory=dict)
    board_part: str = ""
    notes: str = ""


#: What a Zynq block design adds to the accelerator (ef_train_hdl/build/vivado.py): a
#: SmartConnect from M_AXI_HPM0_FPD to the registers, which PG247 runs in its Low-Area Mode
#: (AXI4 to AXI4-Lite, one transaction at a time, no FIFOs: a few hundred LUTs), and a
#: proc_sys_reset; the DMA connects straight to S_AXI_HP0_FPD. An estimate with a margin:
#: Vivado's utilization.rpt has the real figure.
_ZYNQ_RESERVE = {"lut": 1_500, "ff": 2_000, "dsp": 0, "bram36": 0}

BOARDS = {
    "ultra96": Board(
        name="ultra96", title="Avnet Ultra96 / Ultra96-V2", device="xczu3eg-sbva484-1-e",
        family="xcup", flow="vivado", preset="ultra96", clock_mhz=100.0,
        resources={"lut": 70_560, "ff": 141_120, "dsp": 360, "bram36": 216},
        reserve=_ZYNQ_RESERVE,
        board_part="avnet.com:ultra96v2:part0:1.2",
        notes="Ultra96-V2 boards are -1-i parts (xczu3eg-sbva484-1-i): pass --part."),
    "zcu102": Board(
        name="zcu102", title="AMD Xilinx ZCU102", device="xczu9eg-ffvb1156-2-e",
        family="xcup", flow="vivado", preset="zcu102", clock_mhz=100.0,
        resources={"lut": 274_080, "ff": 548_160, "dsp": 2_520, "bram36": 912},
        reserve=_ZYNQ_RESERVE,
        board_part="xilinx.com:zcu102:part0:3.4",
        notes="The paper's board; Vivado ships its board files."),
    "ulx3s": Board(
        name="ulx3s", title="Radiona ULX3S (ECP5-85F)", device="LFE5U-85F-6BG381C",
        # 25 MHz, the oscillator's, no PLL: nextpnr placed the ulx3s preset at 31.89 MHz
        # (the address generator's job checks, 18 LUT4 + 2 CCU2C deep; docs/ulx3s.md).
        family="ecp5", flow="ecp5", preset="ulx3s", clock_mhz=25.0,
        resources={"lut": 83_640, "ff": 83_640, "dsp": 156, "ebr": 208},
        # Yosys's LUT4 + carry positions came out 7-8 % below nextpnr's TRELLIS_COMB
        # (55,489 vs 59,521 for the ulx3s preset, 31,824 vs 34,424 for tiny): LUTRAM and
        # the wide muxes take COMB cells too. The reserve keeps that margin free.
        reserve={"lut": 6_700},
        notes="On-chip memory as the accelerator's DRAM (see the build report)."),
}


def board(name):
    """The :class:`Board` called ``name``; ``ValueError`` naming the boards if none is."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; the boards are "
                         f"{', '.join(BOARDS)} (python -m ef_train_hdl.build --list-boards)") \
            from None
