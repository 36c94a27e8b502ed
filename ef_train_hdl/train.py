"""Train a CNN end to end on the accelerator: ``python -m ef_train_hdl.train``.

The network is compiled to a descriptor program and a tile program (:mod:`ef_train_hdl.compiler`)
and trained through the host API (:mod:`ef_train_hdl.runtime`) on the chosen backend: the
``model`` backend executes the descriptors with the bit-exact numpy model on the same DRAM image
the hardware sees; ``verilator`` runs the accelerator's generated Verilog (``sim`` the same in
the Amaranth simulator, far slower). Each epoch prints the mean training loss and the test
accuracy; each step shows the accelerator cycles (modelled, or counted by the simulated
hardware) and PE utilisation on the progress bar. Wall-clock figures are those of this host,
labelled as such.

Fine-tuning (online adaptation): ``--save w.npz`` after a run writes the weights; a later run
with ``--init w.npz --shift rotate`` (or ``invert``) starts from them on a shifted domain and
prints the accuracy before and after adaptation.

Dataset: scikit-learn's bundled 8x8 digits (no download), 1437 training / 360 test images,
upsampled by nearest neighbour to the network's input size (32x32 for LeNet-5), see
:mod:`ef_train_hdl.datasets`.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["main", "build_parser", "evaluate"]


def build_parser():
    from .config import PRESETS
    from .network import NETWORKS
    from .datasets import SHIFTS
    p = argparse.ArgumentParser(
        prog="python -m ef_train_hdl.train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="model",
                   choices=["model", "tiles", "sim", "verilator", "board"],
                   help="runtime backend: model (the bit-exact numpy model running the layer "
                        "descriptors; cycles from the analytical model), tiles (the tile "
                        "machine: the accelerator's tile program in numpy), sim (the whole "
                        "accelerator in the Amaranth simulator: slow), verilator (its Verilog "
                        "under Verilator; the first run builds the model, minutes), board "
                        "(the accelerator on a Zynq running Linux: docs/boards.md) "
                        "(default: model)")
    p.add_argument("--csr-base", type=lambda s: int(s, 0), default=0xA000_0000,
                   metavar="ADDR", help="board: physical address of the registers "
                                        "(default: 0xA0000000, where the build puts them)")
    p.add_argument("--udmabuf", metavar="NAME",
                   help="board: use this u-dma-buf buffer (default: pynq.allocate where "
                        "pynq is installed, else udmabuf0)")
    p.add_argument("--irq", metavar="DEV",
                   help="board: wait for the interrupt on this generic-uio device "
                        "(/dev/uioN) instead of polling")
    p.add_argument("--dram-latency", type=int, default=30, metavar="CYCLES",
                   help="sim/verilator: DRAM read latency per burst in cycles (default: 30)")
    p.add_argument("--net", default="lenet", choices=sorted(NETWORKS),
                   help="network: lenet (LeNet-5, 32x32 input, ReLU + max-pool) or small "
                        "(two 3x3 convs on the raw 8x8 images; fast) (default: lenet)")
    p.add_argument("--dataset", default="digits", choices=["digits"],
                   help="dataset: digits = scikit-learn's bundled 8x8 digits (default)")
    p.add_argument("--preset", default="ultra96", choices=sorted(PRESETS),
                   help="accelerator configuration preset (Tm, Tn, buffers) (default: ultra96)")
    p.add_argument("--batch", type=int, default=16,
                   help="batch size compiled into the program (default: 16)")
    p.add_argument("--lr", type=float, default=0.02,
                   help="SGD learning rate (binary32 in the descriptors) (default: 0.02)")
    p.add_argument("--momentum", type=float, default=0.9,
                   help="SGD momentum; 0 disables the momentum buffers (default: 0.9)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs (default: 5)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weight initialisation and the shuffling (default: 0)")
    p.add_argument("--init", metavar="NPZ",
                   help="start from the weights in this .npz (written by --save) instead of "
                        "a random initialisation")
    p.add_argument("--save", metavar="NPZ", help="write the trained weights to this .npz")
    p.add_argument("--shift", default="none", choices=SHIFTS,
                   help="domain shift applied to train and test images: rotate (90 degrees) "
                        "or invert (1 - x); with --init this is fine-tuning, and the test "
                        "accuracy before adaptation is printed first (default: none)")
    p.add_argument("--train-subset", type=int, metavar="N",
                   help="use only the first N training images (quick runs)")
    p.add_argument("--max-steps", type=int, metavar="N",
                   help="stop after N training steps in total (quick runs, tests)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def evaluate(trainer, x, y):
    """Test accuracy of ``trainer`` on ``(x, y)`` (batched through the FP program)."""
    correct = 0
    for i in range(0, len(x), trainer.batch):
        logits = trainer.predict(x[i:i + trainer.batch])
        correct += int(np.sum(np.argmax(logits, axis=1) == y[i:i + trainer.batch]))
    return correct / len(x)


def main(argv=None):
    args = build_parser().parse_args(argv)
    from tqdm import tqdm
    from .config import preset
    from .datasets import digits
    from .network import NETWORKS
    from .runtime import Trainer

    size = 32 if args.net == "lenet" else 8
    net = NETWORKS[args.net]()
    cfg = preset(args.preset)
    x_train, y_train, x_test, y_test = digits(size, args.shift,
                                              train_subset=args.train_subset)
    options = {}
    if args.backend == "verilator":
        options = dict(read_latency=args.dram_latency,
                       log=lambda msg: print(msg, file=sys.stderr, flush=True))
    elif args.backend == "sim":
        from .runtime.sim_backend import DramTiming
        options = dict(dram=DramTiming(read_latency=args.dram_latency))
    elif args.backend == "board":
        options = dict(csr_base=args.csr_base, udmabuf=args.udmabuf, irq=args.irq)
    trainer = Trainer(net, args.batch, cfg, backend=args.backend, lr=args.lr,
                      momentum=args.momentum, **options)
    if args.init:
        trainer.load_weights(args.init)
    else:
        trainer.init(args.seed)
    c = trainer.compiled
    print(f"network {args.net}: " + "; ".join(l.describe() for l in c.layers))
    tiles = f", {len(c.train_tiles)} tile instructions" if c.train_tiles else ""
    print(f"config {cfg.name}: Tm={cfg.tm} Tn={cfg.tn}; batch {args.batch}; program "
          f"{len(c.train_program)} descriptors{tiles}; DRAM image {c.dram_words * 4} bytes; "
          f"backend {args.backend}")
    if args.init:
        acc = evaluate(trainer, x_test, y_test)
        print(f"before adaptation (shift {args.shift}): test accuracy {100 * acc:.2f} %")

    rng = np.random.default_rng(args.seed)
    steps_per_epoch = len(x_train) // args.batch
    if steps_per_epoch == 0:
        print(f"error: --batch {args.batch} is larger than the {len(x_train)} training "
              f"images", file=sys.stderr)
        return 2
    step = 0
    t_start = time.perf_counter()
    history = []
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}",
                   disable=args.no_progress, leave=False, file=sys.stderr)
        for i in bar:
            idx = order[i * args.batch:(i + 1) * args.batch]
            loss = trainer.train_step(x_train[idx], y_train[idx])
            losses.append(loss)
            step += 1
            cnt = trainer.counters()
            bar.set_postfix(loss=f"{loss:.4f}", cycles=cnt["step_cycles"],
                            util=f"{100 * cnt['step_utilisation']:.1f}%")
            if args.max_steps and step >= args.max_steps:
                break
        bar.close()
        acc = evaluate(trainer, x_test, y_test)
        wall = time.perf_counter() - t_start
        history.append((epoch + 1, float(np.mean(losses)), acc))
        print(f"epoch {epoch + 1}: train loss {np.mean(losses):.4f}  test accuracy "
              f"{100 * acc:.2f} %  (wall clock {wall:.1f} s)")
        if args.max_steps and step >= args.max_steps:
            break
    cnt = trainer.counters()
    what = ("modelled accelerator" if args.backend == "model" else "simulated accelerator")
    print(f"{what} per training step ({cnt.get('source', '')}, {cfg.name}): "
          f"{cnt['step_cycles']} cycles, PE utilisation {100 * cnt['step_utilisation']:.2f} %, "
          f"{cnt['step_macs']} MACs")
    for (layer, phase), cyc in cnt["per_layer"].items():
        print(f"  layer {layer} {phase:3s}: {cyc['cycles']:>10d} cycles  "
              f"utilisation {100 * cyc['utilisation']:6.2f} %")
    if args.shift != "none" and args.init:
        print(f"after adaptation (shift {args.shift}): test accuracy "
              f"{100 * history[-1][2]:.2f} %")
    if args.save:
        trainer.save_weights(args.save)
        print(f"weights written to {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
