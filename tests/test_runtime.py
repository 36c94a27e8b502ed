"""The host API over the model backend, against an independent composition of the numpy model
(bit for bit) and against PyTorch (within float tolerance)."""

import numpy as np
import pytest

from ef_train_hdl import descriptor as D
from ef_train_hdl.config import preset
from ef_train_hdl.descriptor import ErrorCode, Opcode
from ef_train_hdl.model import fp
from ef_train_hdl.network import (Conv2d, Flatten, Linear, MaxPool2d, Network, ReLU, fuse,
                                  lenet5, small_cnn)
from ef_train_hdl.runtime import AcceleratorError, Trainer, softmax_xent
from ef_train_hdl import layout
from ef_train_hdl.model import ops

CFG = preset("ultra96")


def mixed_net():
    """Stride 2, padding, a conv without pool, a pool without ReLU, no bias, FC after FC."""
    return Network((3, 11, 11), [
        Conv2d(3, 5, 3, stride=2, padding=1), ReLU(),          # 6x6
        Conv2d(5, 9, 3, padding=1, bias=False), MaxPool2d(2),  # 3x3, pool without ReLU
        Flatten(),
        Linear(9 * 3 * 3, 12), ReLU(),
        Linear(12, 4),
    ])


def reference_step(net, params, x, labels, cfg, lr, mu, velocity):
    """One training step composed directly from ops.* on numpy arrays (no DRAM, no layout,
    no descriptors): params {layer index: (w, b)} in PyTorch order; returns (loss, params,
    velocity)."""
    tn = cfg.tn
    hw = fuse(net)
    lr, mu = np.float32(lr), np.float32(mu)
    # PyTorch-order FC weights after a flatten, permuted to the flatten_hw order.
    w_hw = {}
    for L in hw:
        w, b = params[L.source]
        if L.kind == "fc" and L.flatten:
            c, h, ww = L.in_shape
            w = layout.fc_weights_from_torch(w, c, h, ww, tn)
        w_hw[L.index] = (np.asarray(w, np.float32), None if b is None else np.float32(b))
    acts, saved = [np.asarray(x, np.float32)], []
    for L in hw:
        a = acts[-1]
        w, b = w_hw[L.index]
        if L.kind == "conv":
            y = ops.conv_fp(a, w, b, L.stride, L.pad, cfg)
        else:
            if L.flatten:
                a = ops.flatten_hw(a, tn)
            y = ops.fc_fp(a, w, b, cfg)
        if L.relu:
            y = ops.relu_fp(y)
        idx = None
        if L.pool:
            y, idx = ops.maxpool_fp(y)
        saved.append(idx)
        acts.append(y)
    loss, g = softmax_xent(acts[-1], labels)
    new_params, new_v = {}, {}
    for L in reversed(hw):
        i = L.index
        w, b = w_hw[i]
        if L.relu:
            g = ops.relu_bp(g, acts[i + 1])
        if L.pool:
            g = ops.maxpool_bp(g, saved[i], L.conv_out_hw)
        a = acts[i]
        if L.kind == "conv":
            dw = ops.conv_wu(g, a, L.kernel, L.stride, L.pad, cfg)
            db = ops.bias_grad(g, cfg) if L.bias else None
            g_in = ops.conv_bp(g, w, L.in_shape[1:], L.stride, L.pad, cfg) if i else None
        else:
            af = ops.flatten_hw(a, tn) if L.flatten else a
            dw = ops.fc_wu(g, af, cfg)
            db = ops.bias_grad(g[:, :, None, None], cfg) if L.bias else None
            g_in = ops.fc_bp(g, w, cfg) if i else None
            if g_in is not None and L.flatten:
                g_in = ops.unflatten_hw(g_in, *L.in_shape, tn)
        vw, vb = velocity.get(i, (None, None)) if mu else (None, None)
        if mu:
            vw = np.zeros_like(w) if vw is None else vw
            w2, vw2 = ops.sgd(w, dw, lr, cfg, mu=mu, v=vw)
        else:
            w2, vw2 = ops.sgd(w, dw, lr, cfg)
        b2 = vb2 = None
        if L.bias:
            if mu:
                vb = np.zeros_like(b) if vb is None else vb
                b2, vb2 = ops.sgd(b, db, lr, cfg, mu=mu, v=vb)
            else:
                b2, _ = ops.sgd(b, db, lr, cfg)
        if L.kind == "fc" and L.flatten:
            c, h, ww = L.in_shape
            cc, hh, xx = np.meshgrid(np.arange(c), np.arange(h), np.arange(ww), indexing="ij")
            w2 = w2[:, layout.flatten_index(cc, hh, xx, h, ww, tn).reshape(-1)]
        new_params[L.source] = (w2, b2)
        new_v[i] = (vw2, vb2)
        g = g_in
    return loss, new_params, new_v


def bits_equal(a, b):
    np.testing.assert_array_equal(np.asarray(a, np.float32).view(np.uint32),
                                  np.asarray(b, np.float32).view(np.uint32))


@pytest.mark.parametrize("make, batch, momentum, cfg", [
    (small_cnn, 4, 0.9, CFG),
    (mixed_net, 3, 0.0, CFG),
    (mixed_net, 2, 0.5, preset("tiny")),
])
def test_train_step_bit_exact_against_ops_composition(make, batch, momentum, cfg):
    net = make()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((batch,) + net.input_shape).astype(np.float32)
    labels = rng.integers(0, fuse(net)[-1].out_channels, batch)
    t = Trainer(net, batch, cfg, lr=0.05, momentum=momentum)
    t.init(7)
    params = t.read_weights()
    v = {}
    for step in range(2):  # the second step exercises the momentum buffers
        loss, params, v = reference_step(net, params, x, labels, cfg, 0.05, momentum, v)
        got = t.train_step(x, labels)
        assert got == loss
        for k, (w, b) in t.read_weights().items():
            bits_equal(w, params[k][0])
            if b is not None:
                bits_equal(b, params[k][1])


def test_lenet_step_bit_exact():
    net = lenet5()
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 32, 32)).astype(np.float32)
    labels = np.array([3, 8])
    t = Trainer(net, 2, CFG, lr=0.1, momentum=0.9)
    t.init(1)
    loss, params, _ = reference_step(net, t.read_weights(), x, labels, CFG, 0.1, 0.9, {})
    assert t.train_step(x, labels) == loss
    for k, (w, b) in t.read_weights().items():
        bits_equal(w, params[k][0])
        bits_equal(b, params[k][1])
    c = t.counters()
    assert c["step_cycles"] > 0 and 0 < c["step_utilisation"] <= 1
    assert {phase for (_, phase) in c["per_layer"]} == {"FP", "BP", "WU"}


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * 2 * 2, 16), nn.ReLU(), nn.Linear(16, 10))
    from ef_train_hdl.network import from_torch
    net = from_torch(seq, (1, 8, 8))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    t = Trainer(net, 8, CFG, lr=0.1, momentum=0.9)  # weights copied from seq
    opt = torch.optim.SGD(seq.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        loss_hw = t.train_step(x, labels)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(seq(torch.from_numpy(x)), torch.from_numpy(labels))
        loss.backward()
        opt.step()
        assert loss_hw == pytest.approx(loss.item(), rel=1e-5)
    got = t.read_weights()
    for i, m in enumerate(seq):
        if hasattr(m, "weight"):
            np.testing.assert_allclose(got[i][0], m.weight.detach().numpy(), rtol=1e-4,
                                       atol=1e-5)
            np.testing.assert_allclose(got[i][1], m.bias.detach().numpy(), rtol=1e-4,
                                       atol=1e-5)
    logits = t.predict(x[:5])
    np.testing.assert_allclose(logits, seq(torch.from_numpy(x[:5])).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


def test_softmax_xent_against_float64():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 10)).astype(np.float32) * 10
    y = rng.integers(0, 10, 5)
    loss, g = softmax_xent(z, y)
    zz = z.astype(np.float64)
    p = np.exp(zz) / np.exp(zz).sum(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(5), y])), rel=1e-12)
    onehot = np.eye(10)[y]
    np.testing.assert_allclose(g, (p - onehot) / 5, rtol=1e-6, atol=1e-9)


def test_predict_pads_and_load_save(tmp_path):
    net = small_cnn()
    t = Trainer(net, 4, CFG, lr=0.1)
    t.init(0)
    x = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    full = t.predict(x)
    np.testing.assert_array_equal(t.predict(x[:3]), full[:3])
    path = tmp_path / "w.npz"
    t.save_weights(path)
    t2 = Trainer(net, 4, CFG, lr=0.1)
    t2.load_weights(path)
    np.testing.assert_array_equal(t2.predict(x), full)
    with pytest.raises(ValueError, match="weight shape"):
        t2.load_weights({k: (w[:1], b) for k, (w, b) in t.read_weights().items()})


def test_bad_descriptor_stops_with_error_code():
    t = Trainer(small_cnn(), 2, CFG)
    t.init(0)
    c = t.compiled
    words = t.backend.read(c.infer_addr, D.DESC_WORDS)
    words[1] ^= 1  # corrupt a shape: the checksum no longer matches
    t.backend.write(c.infer_addr, words)
    with pytest.raises(AcceleratorError, match="BAD_CHECKSUM"):
        t.predict(np.zeros((2, 1, 8, 8), np.float32))
    # A well-formed descriptor that asks for too much: stride 3.
    bad = c.infer_program[0].replace(stride=3)
    t.backend.write(c.infer_addr, D.pack(bad))
    status = t.backend.run(c.infer_addr)
    assert status.code == ErrorCode.BAD_STRIDE and "stride" in status.message
    # A wrong interleave is refused as the hardware would.
    t.backend.write(c.infer_addr, D.pack(c.infer_program[0].replace(interleave=8)))
    assert t.backend.run(c.infer_addr).code == ErrorCode.BAD_INTERLEAVE


def test_standalone_sgd_descriptor():
    t = Trainer(small_cnn(), 2, CFG)
    be = t.backend
    rng = np.random.default_rng(0)
    w = rng.standard_normal(64).astype(np.float32)
    dw = rng.standard_normal(64).astype(np.float32)
    v = rng.standard_normal(64).astype(np.float32)
    base = t.compiled.dram_words - 4096
    be.write_f32(base, w)
    be.write_f32(base + 1024, dw)
    be.write_f32(base + 2048, v)
    prog = D.pack_program([D.Descriptor(opcode=Opcode.SGD, momentum=True, addr_weight=base,
                                        addr_grad_w=base + 1024, addr_momentum=base + 2048,
                                        length=64, lr=0.25, mu=0.5)])
    be.write(base + 3072, prog)
    assert be.run(base + 3072).code == ErrorCode.OK
    v2 = fp.fadd(fp.fmul(np.float32(0.5), v), dw)
    w2 = fp.fsub(w, fp.fmul(np.float32(0.25), v2))
    bits_equal(be.read_f32(base, 64), w2)
    bits_equal(be.read_f32(base + 2048, 64), v2)


def test_training_reduces_loss():
    from ef_train_hdl.datasets import digits
    x, y, _, _ = digits(8, train_subset=64)
    t = Trainer(small_cnn(), 16, CFG, lr=0.2, momentum=0.9)
    t.init(0)
    epochs = [np.mean([t.train_step(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)])
              for _ in range(6)]
    assert epochs[-1] < epochs[0] - 0.1
    # A small plain step on one batch lowers that batch's loss (the gradient points uphill).
    t2 = Trainer(small_cnn(), 16, CFG, lr=0.05)
    t2.init(1)
    before = t2.train_step(x[:16], y[:16])
    assert t2.train_step(x[:16], y[:16]) < before


