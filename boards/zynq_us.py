"""What the Zynq UltraScale+ boards share: the platform base and the block design's PS setup.

On these boards the accelerator has no pins of its own. Everything reaches it through the
processing system (PS):

- its AXI4-Lite registers on the PS master port ``M_AXI_HPM0_FPD`` (32-bit data), at
  :data:`CSR_BASE`;
- its AXI4 manager on the high-performance subordinate port ``S_AXI_HP0_FPD`` (128-bit data,
  the accelerator's default beat) into the PS DDR controller, which serves the low 2 GiB of
  DDR there (``HP0_DDR_LOW``: the accelerator's 32-bit addresses);
- its clock from ``pl_clk0``, its reset from ``pl_resetn0`` through a ``proc_sys_reset``;
- its interrupt on ``pl_ps_irq0[0]`` (GIC SPI 89, interrupt ID 121 on Zynq UltraScale+, level
  high; a device tree names it ``interrupts = <0 89 4>``).

So the platforms (:class:`ZynqUltraScalePlusPlatform` and the boards' subclasses) carry the
part and no resources: a design that adds PL pins of its own (a fan, the expansion headers)
adds them to a subclass.
"""

from amaranth.vendor import XilinxPlatform

__all__ = ["ZynqUltraScalePlusPlatform", "CSR_BASE", "CSR_RANGE", "PS_PROPERTIES",
           "PS_CLOCK_NET", "IRQ_SPI"]

#: Where the block design puts the accelerator's registers (the start of M_AXI_HPM0_FPD's
#: window) and how much it maps: the CSR block decodes 12 address bits.
CSR_BASE = 0xA000_0000
CSR_RANGE = 0x1000
#: The interrupt's GIC number: pl_ps_irq0[0] is SPI 89 -> interrupt ID 121.
IRQ_SPI = 89
#: The PS clock the accelerator runs on.
PS_CLOCK_NET = "pl_clk0"

#: The ``zynq_ultra_ps_e`` properties the block design sets (the PL clock is set apart).
PS_PROPERTIES = {
    "PSU__USE__M_AXI_GP0": 1,           # M_AXI_HPM0_FPD: the CSRs
    "PSU__MAXIGP0__DATA_WIDTH": 32,
    "PSU__USE__M_AXI_GP1": 0,           # M_AXI_HPM1_FPD: unused
    "PSU__USE__M_AXI_GP2": 0,           # M_AXI_HPM0_LPD: unused
    "PSU__USE__S_AXI_GP2": 1,           # S_AXI_HP0_FPD: the accelerator's DMA
    "PSU__SAXIGP2__DATA_WIDTH": 128,
    "PSU__USE__IRQ0": 1,                # pl_ps_irq0
    "PSU__FPGA_PL0_ENABLE": 1,          # pl_clk0
}


class ZynqUltraScalePlusPlatform(XilinxPlatform):
    """A Zynq UltraScale+ board whose PL reaches the world through the PS only.

    Subclasses set ``device``, ``package``, ``speed``, ``board_part`` and ``title``.
    ``resources`` and ``connectors`` are empty: see the module docstring.
    """

    resources = []
    connectors = []
    default_clk = None
    default_rst = None
    board_part = ""
    title = ""

    @property
    def part(self):
        """The Vivado part name, e.g. ``xczu3eg-sbva484-1-e``."""
        return f"{self.device}-{self.package}-{self.speed}".lower()
