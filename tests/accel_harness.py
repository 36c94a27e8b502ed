"""Shared pieces of the accelerator unit tests: a DRAM image with data in every tensor (from a
training step on the tile machine), and the programs' instructions by opcode."""

import functools

import numpy as np

from ef_train_hdl import isa
from ef_train_hdl.config import preset
from ef_train_hdl.network import Conv2d, Flatten, Linear, MaxPool2d, Network, ReLU
from ef_train_hdl.runtime import Trainer

TINY = preset("tiny")


def unit_net():
    """Every LOAD and STORE mode: pool with ReLU, ReLU alone, pool alone, stride 2, FC after
    a flatten, FC after FC, biases."""
    return Network((2, 8, 8), [
        Conv2d(2, 3, 3, padding=1), ReLU(), MaxPool2d(2),        # 4x4: RELU_POOL
        Conv2d(3, 2, 3, stride=2, padding=1), ReLU(),            # 2x2: RELU
        Conv2d(2, 4, 1, bias=False), MaxPool2d(2),               # 1x1: POOL
        Flatten(), Linear(4, 6), ReLU(), Linear(6, 3),
    ])


@functools.lru_cache(maxsize=None)
def trained_image(cfg_name="tiny", batch=2, momentum=0.9):
    """``(compiled, dram words after one training step)`` on the tile machine."""
    cfg = preset(cfg_name)
    t = Trainer(unit_net(), batch, cfg, backend="tiles", lr=0.1, momentum=momentum)
    t.init(seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 2, 8, 8)).astype(np.float32)
    t.train_step(x, rng.integers(0, 3, batch))
    return t.compiled, t.backend.mem.copy()


def instructions(compiled, op):
    return [i for i in compiled.train_tiles if i.op == op]


def dispatch(instr, index=0):
    """The dispatch payload (raw bits, index) of an instruction."""
    words = isa.pack(instr)
    return {"bits": sum(int(w) << (32 * k) for k, w in enumerate(words)), "index": index}
