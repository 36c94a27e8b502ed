"""Every performance measurement of issue 7 in one run: the simulations, then the report.

``python -m ef_train_hdl.bench all`` runs, in order:

1. ``bench sim`` at each ``--batches`` size (default 1 and 16): the reduced VGG stack and
   LeNet-5 layer by layer on the Verilator model of the ``--preset`` accelerator (default
   ``ultra96``), every layer's cycles against the roofline and the tile-program model, writing
   ``<records>/sim_<preset>_b<batch>.json``; at batch 1 also whole training steps and the
   Amaranth simulator's speed (``--pysim-cycles``);
2. ``bench report`` on those records: the VGG-16 table through the analytical model for the
   ``zcu102`` and ``ultra96`` presets, the comparison with the paper, the plots, and
   ``docs/performance.md`` (``--out``), with every figure also in ``--json``.

``--reuse`` skips a simulation whose record already exists (the report then recomputes the
model column from the recorded programs). On this two-core machine the first run builds the
Verilator model (about 15 minutes), then batch 1 takes a few minutes and batch 16 about 25.
"""

import argparse
from pathlib import Path

from . import report, sim

__all__ = ["add_arguments", "run"]


def add_arguments(parser):
    parser.add_argument("--preset", default="ultra96",
                        help="configuration simulated (default ultra96)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16], metavar="B",
                        help="batch sizes simulated (default: 1 16)")
    parser.add_argument("--records", default="docs/perf", metavar="DIR",
                        help="folder of the simulation records (default docs/perf)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep a record that exists instead of simulating again")
    parser.add_argument("--pysim-cycles", type=int, default=2000, metavar="N",
                        help="cycles of the Amaranth simulator timed at batch 1 for the "
                             "speed ratio (default 2000; 0: none)")
    parser.add_argument("--out", default="docs/performance.md", metavar="PATH",
                        help="markdown page to write (default docs/performance.md)")
    parser.add_argument("--json", default="docs/perf/performance.json", metavar="PATH",
                        help="every figure of the report as JSON (default "
                             "docs/perf/performance.json)")


def _sub_args(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def run(args):
    for b in args.batches:
        if b < 1:
            raise SystemExit(f"--batches: a batch size is at least 1, not {b}")
    records = Path(args.records)
    records.mkdir(parents=True, exist_ok=True)
    paths = []
    for batch in args.batches:
        path = records / f"sim_{args.preset}_b{batch}.json"
        paths.append(str(path))
        if args.reuse and path.exists():
            print(f"== bench sim, batch {batch}: keeping {path}", flush=True)
            continue
        print(f"== bench sim, batch {batch} -> {path}", flush=True)
        argv = ["--preset", args.preset, "--batch", str(batch), "--json", str(path)]
        if batch == 1:
            argv += ["--pysim-cycles", str(args.pysim_cycles)]
        else:
            argv += ["--steps", "0"]       # whole steps at batch 1 only (the same programs)
        status = sim.run(_sub_args(sim, argv))
        if status:
            return status
    print("== bench report", flush=True)
    return report.run(_sub_args(report, ["--sim-json", *paths, "--out", args.out,
                                         "--json", args.json]))
