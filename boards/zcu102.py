"""AMD Xilinx ZCU102: XCZU9EG-FFVB1156-2, the EF-Train paper's board.

amaranth-boards has no platform for it; like the Ultra96 the accelerator is reached through
the PS only (:mod:`.zynq_us`). Vivado ships the ZCU102's board files.
"""

from .zynq_us import ZynqUltraScalePlusPlatform

__all__ = ["ZCU102Platform"]


class ZCU102Platform(ZynqUltraScalePlusPlatform):
    title = "AMD Xilinx ZCU102"
    device = "xczu9eg"
    package = "ffvb1156"
    speed = "2-e"
    board_part = "xilinx.com:zcu102:part0:3.4"
