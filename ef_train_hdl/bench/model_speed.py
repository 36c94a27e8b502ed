"""Wall-clock speed of the bit-exact numpy model: one LeNet-5 training step through model.ops.

The step is conv5x5 1->6 (pad 2) - relu - pool - conv5x5 6->16 - relu - pool - fc 400->120 -
relu - fc 120->84 - relu - fc 84->10 on 28x28 inputs: FP, the softmax cross-entropy gradient
(host numpy, float64), BP (not of the first layer: nobody needs the input's gradient), WU of
every weight and bias, and SGD with momentum. Every operation runs through
``ef_train_hdl.model.ops`` (and so ``model.fp``), exactly what the model backend computes. The
figures are wall-clock times of this Python process on this machine (median and minimum of
``--repeats`` runs after one warm-up run), not modelled hardware cycles.
"""

import time

import numpy as np

from ..config import preset
from ..layout import flat_length
from ..model import ops


def add_arguments(parser):
    parser.add_argument("--preset", default="ultra96",
                        help="configuration preset (default ultra96: Tn = 8 sets the adder tree "
                             "width and the flatten padding)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16],
                        help="batch sizes to time (default: 1 16)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs per batch size (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="random data seed (default 0)")


def _lenet5_params(rng, tn):
    def init(*shape, fan_in):
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    fc1_in = flat_length(16, 5, 5, tn)
    return {
        "c1.w": init(6, 1, 5, 5, fan_in=25), "c1.b": np.zeros(6, np.float32),
        "c2.w": init(16, 6, 5, 5, fan_in=150), "c2.b": np.zeros(16, np.float32),
        # the FC after the flatten takes its input in DRAM order; padding columns stay zero
        "f1.w": init(120, fc1_in, fan_in=400), "f1.b": np.zeros(120, np.float32),
        "f2.w": init(84, 120, fan_in=120), "f2.b": np.zeros(84, np.float32),
        "f3.w": init(10, 84, fan_in=84), "f3.b": np.zeros(10, np.float32),
    }


def _softmax_ce_grad(logits, labels):
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(labels)), labels]).mean()
    p[np.arange(len(labels)), labels] -= 1
    return (p / len(labels)).astype(np.float32), loss


def train_step(params, velocity, x, labels, cfg, lr=np.float32(0.02), mu=np.float32(0.9)):
    """One LeNet-5 SGD-with-momentum step through model.ops; updates ``params`` and
    ``velocity`` in place and returns the loss (float64, host side)."""
    p, tn = params, cfg.tn
    z1 = ops.conv_fp(x, p["c1.w"], p["c1.b"], 1, 2, cfg)
    y1 = ops.relu_fp(z1)
    a1, i1 = ops.maxpool_fp(y1)
    z2 = ops.conv_fp(a1, p["c2.w"], p["c2.b"], 1, 0, cfg)
    y2 = ops.relu_fp(z2)
    a2, i2 = ops.maxpool_fp(y2)
    f0 = ops.flatten_hw(a2, tn)
    f1 = ops.relu_fp(ops.fc_fp(f0, p["f1.w"], p["f1.b"], cfg))
    f2 = ops.relu_fp(ops.fc_fp(f1, p["f2.w"], p["f2.b"], cfg))
    logits = ops.fc_fp(f2, p["f3.w"], p["f3.b"], cfg)

    g3, loss = _softmax_ce_grad(logits, labels)
    grads = {"f3.w": ops.fc_wu(g3, f2, cfg), "f3.b": ops.bias_grad(g3[:, :, None, None], cfg)}
    g2 = ops.relu_bp(ops.fc_bp(g3, p["f3.w"], cfg), f2)
    grads["f2.w"], grads["f2.b"] = ops.fc_wu(g2, f1, cfg), ops.bias_grad(g2[:, :, None, None], cfg)
    g1 = ops.relu_bp(ops.fc_bp(g2, p["f2.w"], cfg), f1)
    grads["f1.w"], grads["f1.b"] = ops.fc_wu(g1, f0, cfg), ops.bias_grad(g1[:, :, None, None], cfg)
    g_a2 = ops.unflatten_hw(ops.fc_bp(g1, p["f1.w"], cfg), 16, 5, 5, tn)
    g_z2 = ops.relu_bp(ops.maxpool_bp(g_a2, i2, y2.shape[2:]), y2)
    grads["c2.w"], grads["c2.b"] = ops.conv_wu(g_z2, a1, 5, 1, 0, cfg), ops.bias_grad(g_z2, cfg)
    g_a1 = ops.conv_bp(g_z2, p["c2.w"], a1.shape[2:], 1, 0, cfg)
    g_z1 = ops.relu_bp(ops.maxpool_bp(g_a1, i1, y1.shape[2:]), y1)
    grads["c1.w"], grads["c1.b"] = ops.conv_wu(g_z1, x, 5, 1, 2, cfg), ops.bias_grad(g_z1, cfg)

    for name, g in grads.items():
        p[name], velocity[name] = ops.sgd(p[name], g, lr, cfg, mu=mu, v=velocity[name])
    return loss


def run(args):
    cfg = preset(args.preset)
    if args.repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {args.repeats!r}")
    print(f"model_speed: one LeNet-5 training step (FP, BP, WU, SGD with momentum) through "
          f"ef_train_hdl.model.ops, preset {cfg.name} (Tm={cfg.tm}, Tn={cfg.tn}, "
          f"{cfg.mult_format}), 28x28 input")
    print(f"wall-clock seconds on this machine, {args.repeats} timed runs after one warm-up")
    print(f"{'batch':>5} {'median s':>10} {'min s':>10} {'median ms/image':>16} {'loss, last run':>15}")
    for batch in args.batches:
        if batch < 1:
            raise ValueError(f"batches must be positive, not {batch!r}")
        rng = np.random.default_rng(args.seed)
        params = _lenet5_params(rng, cfg.tn)
        velocity = {k: np.zeros_like(v) for k, v in params.items()}
        x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
        labels = rng.integers(0, 10, batch)
        loss = train_step(params, velocity, x, labels, cfg)   # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            loss = train_step(params, velocity, x, labels, cfg)
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        print(f"{batch:>5} {med:>10.3f} {min(times):>10.3f} {1000 * med / batch:>16.1f} "
              f"{loss:>15.4f}")
    return 0
