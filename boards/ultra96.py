"""Avnet Ultra96 / Ultra96-V2: XCZU3EG-SBVA484-1 (amaranth-boards has no platform for it).

The PL has no clock or reset pin of its own; the accelerator runs from the PS's ``pl_clk0``
(see :mod:`.zynq_us`). Ultra96-V2 boards carry the industrial grade part
(``xczu3eg-sbva484-1-i``): build with ``--part xczu3eg-sbva484-1-i`` (the resources are the
same).
"""

from .zynq_us import ZynqUltraScalePlusPlatform

__all__ = ["Ultra96Platform"]


class Ultra96Platform(ZynqUltraScalePlusPlatform):
    title = "Avnet Ultra96 / Ultra96-V2"
    device = "xczu3eg"
    package = "sbva484"
    speed = "1-e"
    board_part = "avnet.com:ultra96v2:part0:1.2"
