"""ef_train_hdl: an FPGA accelerator for on-device CNN training, after EF-Train.

The package is laid out by the parts of the design (docs/architecture.md):

- :mod:`ef_train_hdl.config`   the configuration shared by gateware and host
- :mod:`ef_train_hdl.fp`       binary32 multiply and add units (gateware)
- :mod:`ef_train_hdl.model`    the bit-exact numpy model and the float64 reference (host)
- :mod:`ef_train_hdl.cosim`    running generated Verilog under cocotb + Verilator

``from ef_train_hdl import Accelerator`` is the whole accelerator as one component for larger
designs (docs/integration.md).
"""

from .config import AcceleratorConfig, PRESETS, preset

__all__ = ["AcceleratorConfig", "PRESETS", "preset", "Accelerator"]


def __getattr__(name):
    # The gateware is imported on first use, so host-only code does not pay for it.
    if name == "Accelerator":
        from .accel import Accelerator
        return Accelerator
    raise AttributeError(f"module 'ef_train_hdl' has no attribute {name!r}")
