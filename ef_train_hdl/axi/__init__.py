"""AXI4 / AXI4-Lite interfaces, the DMA read and write engines and the CSR block.

- :mod:`.signature`: :class:`AXI4Signature`, :class:`AXI4LiteSignature` (AMBA names) and
  :func:`axi_ports` for Vivado / cocotbext-axi port names (``m_axi_araddr``).
- :mod:`.dma_read`, :mod:`.dma_write`: the DMA engines between DRAM and the tile buffers.
- :mod:`.csr`: the AXI4-Lite register block, generated from the one table ``CSR_MAP``.
- :mod:`.dram_model`: an AXI4 RAM model for the Amaranth simulator (tests, ``sim`` backend).
- :mod:`.sram`: :class:`AxiSram`, an AXI4 on-chip memory (gateware) for small SoCs.
- :mod:`.lite_master`: an AXI4-Lite manager for simulator testbenches (the host side).

See docs/axi.md.
"""

from .common import DmaError, command_layout
from .signature import AXI4LiteSignature, AXI4Signature, Burst, Resp, axi_ports
from .sram import AxiSram

__all__ = ["AXI4Signature", "AXI4LiteSignature", "Resp", "Burst", "axi_ports", "DmaError",
           "command_layout", "AxiSram"]
