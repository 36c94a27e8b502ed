"""Binary32 arithmetic units of the PE array (gateware).

:class:`FMul` and :class:`FAdd` are flow-through pipelines: one operation per cycle (II = 1), a
fixed latency (:data:`ef_train_hdl.config.FMUL_LATENCY`, :data:`~ef_train_hdl.config.FADD_LATENCY`),
a valid bit travelling with the data, and no back-pressure. Their numerics are the contract of
docs/numerics.md section 1, modelled bit for bit by :mod:`ef_train_hdl.model.fp`.
"""

from .format import Float32
from .fmul import FMul
from .fadd import FAdd

__all__ = ["Float32", "FMul", "FAdd"]
