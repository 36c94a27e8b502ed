"""The lowering (layer descriptors -> tile program) and the tile machine, against the layer-level
model: a training step run through the tile program on the tile machine leaves DRAM equal, bit
for bit, to the model backend's after the same step; the tokens order every conflicting pair of
instructions (checked by running the three units concurrently with random durations)."""

import numpy as np
import pytest

from ef_train_hdl import isa
from ef_train_hdl.config import AcceleratorConfig, preset
from ef_train_hdl.descriptor import ErrorCode
from ef_train_hdl.lower import LoweringError, check_config, dependencies, lower_program
from ef_train_hdl.model.machine import TileMachine, check_tokens
from ef_train_hdl.network import (Conv2d, Flatten, Linear, MaxPool2d, Network, ReLU, lenet5,
                                  small_cnn)
from ef_train_hdl.runtime import Trainer

TINY = preset("tiny")


def mixed_net():
    """Stride 2, padding, a pool without ReLU, odd maps, no bias, FC after FC, a flatten."""
    return Network((3, 11, 11), [
        Conv2d(3, 5, 3, stride=2, padding=1), ReLU(),          # 6x6
        Conv2d(5, 9, 3, padding=1, bias=False), MaxPool2d(2),  # 3x3, pool without ReLU
        Flatten(),
        Linear(9 * 3 * 3, 12), ReLU(),
        Linear(12, 4),
    ])


def odd_pool_net():
    """A 5x5 conv output pooled (odd last row and column dropped), a 1x1 conv, stride-2 BP."""
    return Network((2, 7, 7), [
        Conv2d(2, 3, 3, padding=1), ReLU(), MaxPool2d(2),     # 7x7 -> 3x3
        Conv2d(3, 4, 1),                                       # 1x1 conv, no ReLU
        Conv2d(4, 3, 3, stride=2, padding=1), ReLU(),          # 2x2
        Flatten(), Linear(3 * 2 * 2, 3),
    ])


NETS = {
    "small": (small_cnn, 2, TINY, 0.0),
    "small_momentum": (small_cnn, 3, TINY, 0.9),
    "mixed": (mixed_net, 2, TINY, 0.5),
    "odd_pool": (odd_pool_net, 3, TINY, 0.0),
    "lenet_ultra96": (lambda: lenet5(size=32), 2, preset("ultra96"), 0.9),
    "mixed_4x4": (mixed_net, 1, preset("ulx3s"), 0.0),
}


def _step(name, backend):
    make, batch, cfg, mu = NETS[name]
    rng = np.random.default_rng(len(name))
    t = Trainer(make(), batch, cfg, backend=backend, lr=0.05, momentum=mu)
    t.init(seed=3)
    x = rng.standard_normal((batch,) + tuple(t.compiled.network.input_shape)).astype(
        np.float32)
    labels = rng.integers(0, t.compiled.num_classes, batch)
    loss = t.train_step(x, labels)
    return t, loss


@pytest.mark.parametrize("name", list(NETS))
def test_training_step_matches_model(name):
    """Every tensor in DRAM after one training step (activations, pool indices, gradients,
    updated weights and momentum) equals the layer-level model's, bit for bit."""
    ref, loss_ref = _step(name, "model")
    got, loss = _step(name, "tiles")
    assert loss == loss_ref
    mm = ref.compiled.memory
    for t in mm.tensors.values():
        if t.kind == "program":
            continue
        a = ref.backend.read(t.base, t.words)
        b = got.backend.read(t.base, t.words)
        bad = np.flatnonzero(a != b)
        assert bad.size == 0, (f"{t.name}: {bad.size} of {t.words} words differ, first at "
                               f"{bad[0]}: model 0x{a[bad[0]]:08X}, tiles 0x{b[bad[0]]:08X}")


@pytest.mark.parametrize("name", ["small", "mixed", "odd_pool", "small_momentum"])
@pytest.mark.parametrize("seed", [0, 1])
def test_tokens_order_every_conflict(name, seed):
    """The three instruction streams run concurrently with random durations, honouring only
    the tokens: no two conflicting instructions overlap, no deadlock, no token left over."""
    make, batch, cfg, mu = NETS[name]
    t = Trainer(make(), batch, cfg, backend="model", momentum=mu)
    for prog in (t.compiled.train_tiles, t.compiled.infer_tiles):
        check_tokens(prog, seed=seed)


def test_wait_counts_are_single_tokens():
    """The token assignment needs at most one token per wait (the hardware allows 15)."""
    t = Trainer(mixed_net(), 2, TINY, backend="model")
    prog = t.compiled.train_tiles
    for instr in prog:
        assert all(instr[f] <= 1 for f in ("wait_load", "wait_compute", "wait_store"))
    assert sum(i.op == isa.Op.COMPUTE for i in prog) > 0


def test_every_instruction_passes_the_hardware_checks():
    t = Trainer(lenet5(), 4, preset("ultra96"), backend="model")
    for prog in (t.compiled.train_tiles, t.compiled.infer_tiles):
        for k, instr in enumerate(prog):
            assert isa.check(instr, t.cfg)[0] == ErrorCode.OK, (k, instr)
        words = isa.pack_program(prog)
        assert [i.op for i in isa.unpack_program(words)] == [i.op for i in prog]


def test_dependencies_find_raw_war_waw():
    I = isa.Instr
    Op, T = isa.Op, isa.Target
    prog = [
        I(Op.LOAD, target=T.IFM, count=4, runs=1, _reads=[("dram", 0, 0, 16)],
          _writes=[("ifm", 0, 0, 4)]),
        I(Op.COMPUTE, _reads=[("ifm", 0, 0, 4), ("ofm", 0, 0, 4)], _writes=[("ofm", 0, 0, 4)]),
        I(Op.LOAD, target=T.IFM, count=4, runs=1, _reads=[("dram", 0, 16, 32)],
          _writes=[("ifm", 0, 2, 6)]),                     # WAR on ifm half 0 words 2..3
        I(Op.STORE, _reads=[("ofm", 0, 0, 4)], _writes=[("dram", 0, 8, 12)]),   # RAW + WAR dram
        I(Op.LOAD, target=T.IFM, count=1, runs=1, _reads=[("dram", 0, 8, 12)],
          _writes=[("ifm", 1, 0, 1)]),                     # RAW through DRAM
    ]
    deps = dependencies(prog)
    assert deps[1] == {0}
    assert deps[2] == {0, 1}          # WAW on the first load (same unit: no token), WAR
    assert deps[3] == {0, 1}
    assert deps[4] == {3}


def test_config_the_accelerator_needs():
    with pytest.raises(LoweringError, match="square"):
        check_config(AcceleratorConfig(tm=4, tn=8))
    with pytest.raises(LoweringError, match="dma_data_width <= 64"):
        check_config(preset("tiny").replace(dma_data_width=128))
    t = Trainer(small_cnn(), 1, AcceleratorConfig(tm=4, tn=8, max_batch=4), backend="model")
    assert t.compiled.train_tiles is None and "square" in t.compiled.tile_error
    with pytest.raises(ValueError, match="square"):
        Trainer(small_cnn(), 1, AcceleratorConfig(tm=4, tn=8, max_batch=4), backend="tiles")


def test_machine_reports_errors_like_the_hardware():
    """Bad magic, checksum, opcode, misaligned address, a tile that does not fit."""
    cfg = TINY
    mem = np.zeros(4096, np.uint32)
    good = isa.Instr(isa.Op.LOAD, target=isa.Target.IFM, count=4, runs=1, addr_a=64,
                     bank_step=1)
    cases = {
        "magic": (lambda w: w.__setitem__(0, w[0] ^ (1 << 24)), ErrorCode.BAD_MAGIC),
        "checksum": (lambda w: w.__setitem__(3, w[3] ^ 1), ErrorCode.BAD_CHECKSUM),
    }
    for name, (corrupt, code) in cases.items():
        words = isa.pack(good)
        corrupt(words)
        mem[:16] = words
        assert TileMachine(cfg, mem).run(0)[2] == code, name
    for instr, code in [
        (good.replace(addr_a=65), ErrorCode.MISALIGNED_ADDRESS),
        (isa.Instr(isa.Op.LOAD, target=isa.Target.IFM, count=600, runs=1, bank_step=1),
         ErrorCode.BAD_TILE),
        (isa.Instr(isa.Op.COMPUTE, kernel=7, stride=1, in_rows=1, in_cols=1, out_rows=1,
                   out_cols=1), ErrorCode.BAD_KERNEL),
        (isa.Instr(isa.Op.STORE, source=isa.Source.OFM, post=isa.Post.SGD, runs=1,
                   run_words=2, drain_count=1), ErrorCode.BAD_FLAGS),
    ]:
        mem[:16] = isa.pack(instr)
        mem[16:32] = isa.pack(isa.Instr(isa.Op.END))
        assert TileMachine(cfg, mem).run(0)[2] == code, instr
    words = isa.pack(isa.Instr(isa.Op.END))
    words[0] = (int(words[0]) & ~0xF) | 9
    words[15] = isa.checksum(words)
    mem[:16] = words
    assert TileMachine(cfg, mem).run(0)[2] == ErrorCode.BAD_OPCODE
