"""ef_train_hdl.model.ops against PyTorch autograd and torch.optim.SGD (float tolerance).

Each layer's FP output and its BP/WU gradients come from torch in float64; the model runs in
binary32 with the contract's summation order, so the comparison is within a tolerance scaled
to the magnitude of the sums. FC layers take their input in the DRAM flatten order
(``ops.flatten_hw``), so torch's NCHW-flattened Linear weights are permuted with
``layout.fc_weights_from_torch``.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ef_train_hdl.config import preset
from ef_train_hdl.layout import fc_weights_from_torch
from ef_train_hdl.model import ops

CFG = preset("tiny").replace(tm=2, tn=4)
RTOL = 2e-4


def t64(a, grad=False):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=grad)


def assert_close(actual, expected, scale=None, rtol=RTOL):
    """Element-wise ``|a - e| <= rtol * max(scale, |e|)``, ``scale`` a typical magnitude."""
    expected = expected.detach().numpy() if hasattr(expected, "detach") else expected
    actual = np.asarray(actual, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if scale is None:
        scale = np.abs(expected).max()
    err = np.abs(actual - expected)
    bound = rtol * np.maximum(np.abs(expected), scale)
    assert np.all(err <= bound), f"max error {err.max():.3g}, bound {bound.min():.3g}"


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("k,s,p", [(1, 1, 0), (3, 1, 1), (3, 2, 1), (5, 1, 2), (5, 2, 2),
                                   (2, 2, 0), (3, 2, 0)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_gradients(k, s, p, bias):
    rng = np.random.default_rng(k * 31 + s * 7 + p)
    x, w = randn(rng, 2, 5, 9, 8), randn(rng, 6, 5, k, k)
    b = randn(rng, 6) if bias else None
    xt, wt = t64(x, True), t64(w, True)
    bt = t64(b, True) if bias else None
    z = torch.nn.functional.conv2d(xt, wt, bt, stride=s, padding=p)
    g_z = randn(rng, *z.shape)
    z.backward(t64(g_z))
    zm = ops.conv_fp(x, w, b, s, p, CFG)
    assert_close(zm, z)
    assert_close(ops.conv_bp(g_z, w, (9, 8), s, p, CFG), xt.grad)
    assert_close(ops.conv_wu(g_z, x, k, s, p, CFG), wt.grad)
    if bias:
        assert_close(ops.bias_grad(g_z, CFG), bt.grad)


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_fc_gradients(batch):
    rng = np.random.default_rng(batch)
    x, w, b = randn(rng, batch, 37), randn(rng, 10, 37), randn(rng, 10)
    xt, wt, bt = t64(x, True), t64(w, True), t64(b, True)
    y = torch.nn.functional.linear(xt, wt, bt)
    g_y = randn(rng, batch, 10)
    y.backward(t64(g_y))
    assert_close(ops.fc_fp(x, w, b, CFG), y)
    assert_close(ops.fc_bp(g_y, w, CFG), xt.grad)
    assert_close(ops.fc_wu(g_y, x, CFG), wt.grad)
    assert_close(ops.bias_grad(g_y[:, :, None, None], CFG), bt.grad)


def test_relu_and_maxpool_gradients():
    rng = np.random.default_rng(4)
    x = randn(rng, 2, 3, 7, 9)     # odd sizes: torch drops the last row/column too
    xt = t64(x, True)
    y = torch.relu(xt)
    pooled = torch.nn.functional.max_pool2d(y, 2)
    g = randn(rng, *pooled.shape)
    pooled.backward(t64(g))
    ym = ops.relu_fp(x)
    pm, idx = ops.maxpool_fp(ym)
    assert np.array_equal(pm, pooled.detach().numpy().astype(np.float32))
    g_x = ops.relu_bp(ops.maxpool_bp(g, idx, (7, 9)), ym)
    # relu's zeros are ties inside a window; torch and the contract both take the first one,
    # and a tie of zeros carries no gradient through the relu anyway.
    assert np.array_equal(g_x, xt.grad.numpy().astype(np.float32))


def test_maxpool_gradient_without_ties():
    rng = np.random.default_rng(5)
    x = randn(rng, 1, 4, 6, 5)
    xt = t64(x, True)
    pooled = torch.nn.functional.max_pool2d(xt, 2)
    g = randn(rng, *pooled.shape)
    pooled.backward(t64(g))
    y, idx = ops.maxpool_fp(x)
    assert np.array_equal(y, pooled.detach().numpy().astype(np.float32))
    assert np.array_equal(ops.maxpool_bp(g, idx, (6, 5)), xt.grad.numpy().astype(np.float32))


class SmallCnn(torch.nn.Module):
    """conv3x3(3->5, pad 1) - relu - pool - conv3x3(5->6, stride 1) - relu - pool - fc(->4)."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 5, 3, padding=1)
        self.c2 = torch.nn.Conv2d(5, 6, 3)
        self.fc = torch.nn.Linear(6 * 2 * 2, 4)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.c2(x)), 2)
        return self.fc(x.flatten(1))


def _softmax_ce_grad(logits, labels):
    """d(mean cross-entropy)/d(logits), in float64 on the host."""
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    p[np.arange(len(labels)), labels] -= 1
    return (p / len(labels)).astype(np.float32)


def test_small_cnn_training_step():
    torch.manual_seed(0)
    net = SmallCnn().double()
    rng = np.random.default_rng(0)
    batch = 4
    x = randn(rng, batch, 3, 12, 12)
    labels = rng.integers(0, 4, batch)
    tn = CFG.tn

    p = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    fc_w = fc_weights_from_torch(p["fc.weight"], 6, 2, 2, tn)

    # forward through ops
    z1 = ops.conv_fp(x, p["c1.weight"], p["c1.bias"], 1, 1, CFG)
    y1 = ops.relu_fp(z1)
    a1, i1 = ops.maxpool_fp(y1)
    z2 = ops.conv_fp(a1, p["c2.weight"], p["c2.bias"], 1, 0, CFG)
    y2 = ops.relu_fp(z2)
    a2, i2 = ops.maxpool_fp(y2)
    f = ops.flatten_hw(a2, tn)
    logits = ops.fc_fp(f, fc_w, p["fc.bias"], CFG)

    # torch forward and backward
    xt = t64(x)
    out = net(xt)
    loss = torch.nn.functional.cross_entropy(out, torch.tensor(labels))
    loss.backward()
    assert_close(logits, out)

    # backward + weight update through ops
    g = _softmax_ce_grad(logits, labels)
    d_fc_w = ops.fc_wu(g, f, CFG)
    d_fc_b = ops.bias_grad(g[:, :, None, None], CFG)
    g_f = ops.fc_bp(g, fc_w, CFG)
    g_a2 = ops.unflatten_hw(g_f, 6, 2, 2, tn)
    g_z2 = ops.relu_bp(ops.maxpool_bp(g_a2, i2, y2.shape[2:]), y2)
    d_c2_w = ops.conv_wu(g_z2, a1, 3, 1, 0, CFG)
    d_c2_b = ops.bias_grad(g_z2, CFG)
    g_a1 = ops.conv_bp(g_z2, p["c2.weight"], a1.shape[2:], 1, 0, CFG)
    g_z1 = ops.relu_bp(ops.maxpool_bp(g_a1, i1, y1.shape[2:]), y1)
    d_c1_w = ops.conv_wu(g_z1, x, 3, 1, 1, CFG)
    d_c1_b = ops.bias_grad(g_z1, CFG)

    grads = dict(net.named_parameters())
    assert_close(d_fc_w, fc_weights_from_torch(grads["fc.weight"].grad.numpy(), 6, 2, 2, tn))
    assert_close(d_fc_b, grads["fc.bias"].grad)
    assert_close(d_c2_w, grads["c2.weight"].grad)
    assert_close(d_c2_b, grads["c2.bias"].grad)
    assert_close(d_c1_w, grads["c1.weight"].grad)
    assert_close(d_c1_b, grads["c1.bias"].grad)
    # the padding columns of the permuted FC weights get no gradient
    padding = fc_weights_from_torch(np.ones((4, 24)), 6, 2, 2, tn) == 0
    assert padding.any() and np.all(d_fc_w[padding] == 0)


def test_sgd_momentum_matches_torch():
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    w0 = randn(rng, 6, 5, 3, 3)
    lr, mu = 0.05, 0.9
    param = torch.nn.Parameter(t64(w0))
    opt = torch.optim.SGD([param], lr=lr, momentum=mu)
    w, v = w0, np.zeros_like(w0)
    for step in range(3):
        dw = randn(rng, *w0.shape)
        param.grad = t64(dw)
        opt.step()
        w, v = ops.sgd(w, dw, np.float32(lr), CFG, mu=np.float32(mu), v=v)
        assert_close(w, param, rtol=1e-5)
        assert_close(v, opt.state[param]["momentum_buffer"], rtol=1e-5)


def test_sgd_plain_matches_torch():
    rng = np.random.default_rng(2)
    w0, dw = randn(rng, 40), randn(rng, 40)
    param = torch.nn.Parameter(t64(w0))
    param.grad = t64(dw)
    torch.optim.SGD([param], lr=0.1).step()
    w, v = ops.sgd(w0, dw, np.float32(0.1), CFG)
    assert v is None
    assert_close(w, param, rtol=1e-6)


def test_lenet5_bench_step_matches_torch():
    """The step timed by ``bench model_speed`` is a real LeNet-5 training step: its updated
    parameters equal torch's (SGD with momentum) within tolerance."""
    from ef_train_hdl.bench.model_speed import _lenet5_params, train_step

    cfg = preset("ultra96")
    tn = cfg.tn
    rng = np.random.default_rng(3)
    params = _lenet5_params(rng, tn)
    for name in ("c1.b", "c2.b", "f1.b", "f2.b", "f3.b"):
        params[name] = randn(rng, *params[name].shape) * np.float32(0.1)
    x = randn(rng, 4, 1, 28, 28)
    labels = rng.integers(0, 10, 4)

    # torch weights from the model's: undo the flatten permutation of fc1
    cols = fc_weights_from_torch(np.arange(400)[None, :] + 1, 16, 5, 5, tn)[0]
    f1_torch = np.zeros((120, 400), np.float32)
    f1_torch[:, cols[cols > 0] - 1] = params["f1.w"][:, cols > 0]
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
        torch.nn.Linear(84, 10)).double()
    mods = {"c1": net[0], "c2": net[3], "f1": net[7], "f2": net[9], "f3": net[11]}
    with torch.no_grad():
        for key, mod in mods.items():
            mod.weight.copy_(t64(f1_torch if key == "f1" else params[key + ".w"]))
            mod.bias.copy_(t64(params[key + ".b"]))
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)

    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    loss = train_step(params, velocity, x, labels, cfg)
    t_loss = torch.nn.functional.cross_entropy(net(t64(x)), torch.tensor(labels))
    t_loss.backward()
    opt.step()
    assert abs(loss - t_loss.item()) <= 1e-4 * abs(t_loss.item())
    for key, mod in mods.items():
        w = mod.weight.detach().numpy()
        if key == "f1":
            w = fc_weights_from_torch(w, 16, 5, 5, tn)
        assert_close(params[key + ".w"], w, rtol=1e-5)
        assert_close(params[key + ".b"], mod.bias.detach().numpy(), rtol=1e-5)
        assert_close(velocity[key + ".w"], np.asarray(
            fc_weights_from_torch(mod.weight.grad.numpy(), 16, 5, 5, tn) if key == "f1"
            else mod.weight.grad.numpy()))
