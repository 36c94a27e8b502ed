"""The accelerator's generated Verilog under Verilator (the ``verilator`` backend: C++ DRAM and
host, ef_train_hdl/vsim): full training steps of a small CNN (conv, ReLU, max-pool, FC) leave
DRAM equal, bit for bit, to the layer-level numpy model's — on ``tiny`` with random AXI stalls,
and on ``ultra96`` (8x8 PEs) at batch 1 and 4.

The ``ultra96`` model takes about eight minutes to build here, once (cached in the pytest
cache); its test is marked ``slow``: ``pytest -m slow tests/test_accel_verilator.py``.
"""

import numpy as np
import pytest

from ef_train_hdl.config import preset
from ef_train_hdl.network import Conv2d, Flatten, Linear, MaxPool2d, Network, ReLU, small_cnn
from ef_train_hdl.runtime import Trainer

from accel_harness import unit_net

pytestmark = pytest.mark.verilator


def _compare(make, batch, cfg, momentum, cache, **vl):
    rng = np.random.default_rng(batch)
    out = {}
    for backend in ("model", "verilator"):
        opts = dict(cache_dir=cache, **vl) if backend == "verilator" else {}
        t = Trainer(make(), batch, cfg, backend=backend, lr=0.05, momentum=momentum, **opts)
        t.init(seed=7)
        shape = (batch,) + tuple(t.compiled.network.input_shape)
        x = np.random.default_rng(11).standard_normal(shape).astype(np.float32)
        labels = np.random.default_rng(12).integers(0, t.compiled.num_classes, batch)
        losses = [t.train_step(x, labels) for _ in range(2)]
        out[backend] = (t, losses)
    ref, got = out["model"][0], out["verilator"][0]
    assert out["model"][1] == out["verilator"][1]
    for t in ref.compiled.memory.tensors.values():
        if t.kind == "program":
            continue
        a, b = ref.backend.read(t.base, t.words), got.backend.read(t.base, t.words)
        bad = np.flatnonzero(a != b)
        assert bad.size == 0, (f"{t.name}: {bad.size} of {t.words} words differ, first at "
                               f"{bad[0]}: model 0x{a[bad[0]]:08X}, Verilog 0x{b[bad[0]]:08X}")
    return got


def test_tiny_training_steps_with_stalls(cosim_cache):
    got = _compare(unit_net, 2, preset("tiny"), 0.9, cosim_cache, read_latency=17, gap=0.3,
                   stall=0.3, seed=3)
    c = got.backend.read_counters()
    assert c["stall_rd_addr"] > 0 and c["stall_wr_data"] > 0, "the DRAM did not stall"


def lenet_like():
    """conv, ReLU, pool twice, then FC: a small CNN on 12x12 inputs."""
    return Network((1, 12, 12), [
        Conv2d(1, 8, 3, padding=1), ReLU(), MaxPool2d(2),          # 6x6
        Conv2d(8, 12, 3, padding=1), ReLU(), MaxPool2d(2),         # 3x3, 12 channels: 2 groups
        Flatten(), Linear(12 * 3 * 3, 20), ReLU(), Linear(20, 10),
    ])


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 4])
def test_ultra96_training_steps(cosim_cache, batch):
    _compare(lenet_like, batch, preset("ultra96"), 0.9, cosim_cache, read_latency=30)
