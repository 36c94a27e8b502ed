"""The host runtime: one API (:class:`Trainer`) over interchangeable backends.

``Trainer(network, batch, cfg, backend="model", lr=..., momentum=...)`` compiles the network,
loads it into the backend's DRAM and trains it step by step (:mod:`.api`). A backend implements
:class:`Backend` — write and read DRAM words, run the descriptor program from an address, read
counters — so the numpy model (``"model"``, :mod:`.model_backend`), the Amaranth simulator,
Verilator and a board (``"board"``, :mod:`.board_backend`) all sit behind the same calls.
"""

from .api import (AcceleratorError, Backend, BACKENDS, RunStatus, Trainer, make_backend,
                  register_backend, softmax_xent)
from . import model_backend  # noqa: F401  (registers the "model" backend)
from . import tiles_backend  # noqa: F401  (registers the "tiles" backend)
from . import sim_backend  # noqa: F401  (registers the "sim" backend)
from . import verilator_backend  # noqa: F401  (registers the "verilator" backend)
from . import board_backend  # noqa: F401  (registers the "board" backend; pynq only when used)
from .board_backend import BoardBackend
from .model_backend import ModelBackend
from .tiles_backend import TilesBackend

__all__ = ["Trainer", "Backend", "RunStatus", "AcceleratorError", "ModelBackend",
           "TilesBackend", "BoardBackend", "BACKENDS",
           "make_backend", "register_backend", "softmax_xent"]
