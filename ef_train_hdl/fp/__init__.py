"""Binary32 arithmetic units of the PE array (gateware).

:class:`FMul` and :class:`FAdd` are flow-through pipelines: one operation per cycle (II = 1), a
fixed latency (:data:`ef_train_hdl.config.FMUL_LATENCY`, :data:`~ef_train_hdl.config.FADD_LATENCY`),
a valid bit travelling with the data, and no back-pressure. Their numerics are the contract of
docs/numerics.md section 1, modelled bit for bit by :mod:`ef_train_hdl.model.fp`.
"""

from .format import Float32
from .fmul import FMul
from .fadd import FAdd

__all__ = ["Float32", "FMul", "FAdd", "UNIT_NAMES", "unit"]

#: The units by the names reports, benchmarks and tests use for them.
UNIT_NAMES = ("fmul_fp32", "fmul_bf16", "fadd")


def unit(name):
    """A new unit called ``name`` (one of :data:`UNIT_NAMES`)."""
    if name == "fmul_fp32":
        return FMul(mult_format="fp32")
    if name == "fmul_bf16":
        return FMul(mult_format="bf16")
    if name == "fadd":
        return FAdd()
    raise ValueError(f"unknown FP unit {name!r}; the units are {', '.join(UNIT_NAMES)}")
