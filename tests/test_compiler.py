"""The compiler: memory map, program structure, compile-time errors, the torch importer."""

import numpy as np
import pytest

from ef_train_hdl import layout
from ef_train_hdl.compiler import CompileError, compile_network
from ef_train_hdl.config import preset
from ef_train_hdl.descriptor import Opcode, check, ErrorCode, pack_program, unpack_program
from ef_train_hdl.network import (Conv2d, Flatten, Linear, MaxPool2d, Network, ReLU, lenet5,
                                  small_cnn, fuse)

CFG = preset("ultra96")


def test_lenet_program_structure():
    c = compile_network(lenet5(), 16, CFG, lr=0.05, momentum=0.9)
    ops = [d.opcode for d in c.train_program]
    n = len(c.layers)
    assert n == 5
    assert ops[:n] == [Opcode.CONV_FP, Opcode.CONV_FP, Opcode.FC_FP, Opcode.FC_FP, Opcode.FC_FP]
    assert ops[n] == Opcode.HOST_SYNC and ops[-1] == Opcode.END
    back = ops[n + 1:-1]
    # last layer first: BP then WU for every layer but the first, which has only WU.
    assert back == [Opcode.FC_BP, Opcode.FC_WU] * 3 + [Opcode.CONV_BP, Opcode.CONV_WU,
                                                       Opcode.CONV_WU]
    assert [d.layer for d in c.train_program[n + 1:-1]] == [4, 4, 3, 3, 2, 2, 1, 1, 0]
    for d in c.train_program:
        assert check(d, CFG, dram_words=c.dram_words)[0] == ErrorCode.OK
        if d.opcode in (Opcode.CONV_WU, Opcode.FC_WU):
            assert d.sgd and d.momentum and np.float32(d.lr) == np.float32(0.05)
    assert [d.opcode for d in c.infer_program] == ops[:n] + [Opcode.END]
    # The program round-trips through its DRAM words.
    assert unpack_program(pack_program(c.train_program)) == c.train_program
    # The FC after Flatten reads the conv layout.
    fc1 = c.train_program[2]
    assert fc1.flatten and (fc1.in_channels, fc1.in_h, fc1.in_w) == (16, 5, 5)
    assert not c.train_program[3].flatten


def test_memory_map_disjoint_and_aligned():
    c = compile_network(lenet5(), 8, CFG, lr=0.01, momentum=0.9)
    spans = sorted((t.base, t.base + t.words, t.name) for t in c.memory.tensors.values())
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        assert e0 <= b1, f"{n0} overlaps {n1}"
    for t in c.memory.tensors.values():
        assert t.base * 4 % 4096 == 0
    assert c.memory["act0"].words == layout.ActivationLayout(8, 1, 32, 32, CFG.tn).words
    # The BP of a layer writes the gradient of the previous layer's stored output, which has
    # the layout of this layer's input.
    for d in c.train_program:
        if d.opcode in (Opcode.CONV_BP, Opcode.FC_BP):
            assert d.addr_grad_in == c.memory[f"grad{d.layer - 1}"].base
            assert c.memory[f"grad{d.layer - 1}"].words == c.memory[f"act{d.layer}"].words


def test_plain_sgd_has_no_momentum_buffers():
    c = compile_network(small_cnn(), 4, CFG, lr=0.1)
    assert not any(name.startswith("momentum") for name in c.memory.tensors)
    assert all(not d.momentum for d in c.train_program)


@pytest.mark.parametrize("layers, index, words", [
    ([Conv2d(1, 4, 7), Flatten(), Linear(4 * 26 * 26, 10)], 0, "k_max"),
    ([Conv2d(1, 4, 3, stride=3), Flatten(), Linear(4 * 10 * 10, 10)], 0, "stride"),
    ([Conv2d(1, 4, 3), ReLU(), MaxPool2d(3), Flatten(), Linear(4, 10)], 2, "2x2"),
    ([Conv2d(1, 4, 3), ReLU(), "AvgPool2d", Flatten(), Linear(4, 10)], 2, "unknown"),
    ([Conv2d(1, 4, 3), Linear(4, 10)], 1, "Flatten"),
    ([Conv2d(2, 4, 3), Flatten(), Linear(4 * 30 * 30, 10)], 0, "channels"),
    ([Flatten(), Linear(1024, 10), ReLU()], 1, "logits"),
])
def test_unsupported_layers_named(layers, index, words):
    net = Network((1, 32, 32), layers)
    with pytest.raises(CompileError) as e:
        compile_network(net, 4, CFG)
    msg = str(e.value)
    assert f"layer {index}" in msg and words in msg


def test_batch_limit():
    with pytest.raises(CompileError, match="max_batch"):
        compile_network(lenet5(), CFG.max_batch + 1, CFG)


def test_buffer_too_small_is_a_compile_error():
    # A 3x3 conv on a 200-wide map needs 3 x 200 words of IFM buffer, not 32: refuse.
    cfg = preset("tiny", k_max=3, ifm_depth=32, weight_depth=32, ofm_depth=16, max_size=1024)
    net = Network((1, 8, 200), [Conv2d(1, 2, 3), Flatten(), Linear(2 * 6 * 198, 10)])
    with pytest.raises(CompileError) as e:
        compile_network(net, 1, cfg)
    assert "layer 0" in str(e.value)


def test_from_torch_and_flatten_permutation():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(5 * 4 * 4, 7))
    from ef_train_hdl.network import from_torch
    net = from_torch(seq, (3, 8, 8))
    c = compile_network(net, 2, CFG)
    fc = c.layers[1]
    assert fc.flatten
    w = net.params[4][0]
    w_dram = c.dram_weights(fc, w)
    assert w_dram.shape == (7, layout.flat_length(5, 4, 4, CFG.tn))
    np.testing.assert_array_equal(c.torch_weights(fc, w_dram), w)
    # Independent check of the permutation: y = W x over PyTorch's NCHW flatten equals
    # W_dram x_dram over the DRAM image of one image (float64).
    x = np.random.default_rng(1).standard_normal((1, 5, 4, 4))
    x_dram = layout.pack_activations(x, CFG.tn, dtype=np.float64)
    np.testing.assert_allclose(w_dram.astype(np.float64) @ x_dram,
                               w.astype(np.float64) @ x.reshape(-1), rtol=1e-12)


def test_from_torch_rejects_avgpool():
    torch = pytest.importorskip("torch")
    from ef_train_hdl.network import UnsupportedLayer, from_torch
    seq = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AvgPool2d(2))
    with pytest.raises(UnsupportedLayer, match="layer 1: AvgPool2d"):
        from_torch(seq, (1, 8, 8))


def test_fuse_shapes():
    hw = fuse(lenet5())
    assert [l.out_shape for l in hw] == [(6, 14, 14), (16, 5, 5), (120, 1, 1), (84, 1, 1),
                                         (10, 1, 1)]
    assert [(l.relu, l.pool) for l in hw] == [(True, True)] * 2 + [(True, False)] * 2 + [
        (False, False)]
