"""The whole accelerator around the compute core (DESIGN.md section 2): the command processor
that runs a tile program (docs/isa.md), the loader and the storer with their post-ops, the
DRAM read router, and the top level :class:`Accelerator` with its AXI4-Lite registers and
AXI4 DRAM port (docs/axi.md, docs/integration.md)."""

from .top import Accelerator, Core

__all__ = ["Accelerator", "Core"]
