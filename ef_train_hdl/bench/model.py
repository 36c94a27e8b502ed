"""Analytical model: modelled cycles, PE utilisation, GFLOPS and burst lengths per layer and phase.

For each configuration (default: the paper's ZCU102 setting, Tm = Tn = 16, and the
``ultra96`` preset, 8x8) the schedule picks the modelled-fastest tiling of every layer and
phase (ef_train_hdl.schedule), and the model (ef_train_hdl.perf) gives its cycles as the
accelerator overlaps its loads, jobs and stores (docs/perf_model.md). The DRAM model is the
paper's: 4 floats (16 bytes) per cycle and a 400-cycle start-up per DMA transfer, at 100 MHz;
SGD without momentum as in the paper. BP of the first layer is skipped (nobody needs the
gradient of the network input), as in the paper's model. The overall figure stands next to
the paper's 47.99 GFLOPS (its own model, finetune2.py) and 46.99 GFLOPS (measured on the
board). All figures are modelled cycles, not measurements. Average burst length is in beats
of the DMA bus (AXI INCR bursts of at most max_burst_beats beats, never crossing 4 KiB).
"""

import json

from tqdm import tqdm

from ..config import preset
from ..layout import burst_stats, tile_transfers
from ..perf import (PAPER_BOARD_GFLOPS, PAPER_MODEL_GFLOPS, DramModel, NetworkPerf, PeTiming,
                    roofline)
from ..schedule import schedule_layer
from ..workloads import WORKLOADS, Phase


def add_arguments(parser):
    parser.add_argument("--presets", nargs="+", default=["zcu102", "ultra96"],
                        help="configuration presets to model (default: zcu102 ultra96); the "
                             "DMA is 128 bits (4 floats a cycle) and momentum off in all")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="vgg16",
                        help="layer table (default vgg16: the 13 conv layers of VGG-16)")
    parser.add_argument("--size", type=int, default=None,
                        help="input size (default: 224 for vgg16, 32 vgg_cifar, 28 lenet5)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--bytes-per-cycle", type=float, default=16.0,
                        help="DRAM bandwidth per direction in bytes per cycle (default 16)")
    parser.add_argument("--latency", type=int, default=400,
                        help="start-up cycles per DMA transfer (default 400, the paper's)")
    parser.add_argument("--clock-mhz", type=float, default=100.0,
                        help="clock for GFLOPS (default 100 MHz, the paper's)")
    parser.add_argument("--tile-overhead", type=int, default=PeTiming().tile_overhead_cycles,
                        help="PE array cycles per tile step beyond its MACs, with the "
                             "paper's lockstep ping-pong pipeline (default: the tile "
                             "engine's own timing: AcceleratorConfig.job_setup per job, the "
                             "flush in the background, loads and stores overlapped as the "
                             "accelerator runs them)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")


def model_network(cfg, layers, batch, dram, timing, clock_mhz, progress=True):
    rows = []
    perfs = []
    jobs = [(phase, i, layer) for phase in Phase for i, layer in enumerate(layers)
            if not (phase is Phase.BP and i == 0) and not (layer.kind == "pool"
                                                          and phase is Phase.WU)]
    for phase, i, layer in tqdm(jobs, desc=cfg.name, disable=not progress, leave=False):
        perf = schedule_layer(layer, phase, cfg, batch, dram, timing)
        stats = burst_stats(tile_transfers(layer, phase, perf.tiling, cfg, batch), cfg)
        perfs.append(perf)
        row = perf.as_dict(clock_mhz)
        row["roofline"] = roofline(layer, phase, cfg, batch, dram)
        row["bursts"] = stats
        rows.append(row)
    return NetworkPerf(perfs, clock_mhz, cfg.peak_gflops(clock_mhz)), rows


def _print_table(cfg, net, rows, clock_mhz):
    print(f"\n== {cfg.name}: Tm = {cfg.tm}, Tn = {cfg.tn}, ifm/weight/ofm depth "
          f"{cfg.ifm_depth}/{cfg.weight_depth}/{cfg.ofm_depth} words, "
          f"peak {cfg.peak_gflops(clock_mhz):.2f} GFLOPS at {clock_mhz:g} MHz ==")
    print(f"{'layer':<8}{'ph':<4}{'Tr':>4}{'grp':>4}{'order':>9}{'cycles':>12}{'load':>12}"
          f"{'compute':>12}{'store':>11}{'util':>7}{'roof':>6}{'GFLOPS':>8}"
          f"{'rd burst':>9}{'wr burst':>9}")
    for r in rows:
        t = r["tiling"]
        rd = r["bursts"].get("load", {}).get("avg_burst_beats", 0.0)
        wr = r["bursts"].get("store", {}).get("avg_burst_beats", 0.0)
        print(f"{r['layer']:<8}{r['phase']:<4}{t['tile_rows']:>4}{t['groups']:>4}"
              f"{t['order']:>9}{r['cycles']:>12}{r['load_cycles']:>12}{r['compute_cycles']:>12}"
              f"{r['store_cycles']:>11}{r['utilisation']:>7.3f}{r['roofline']:>6.2f}"
              f"{r['gflops']:>8.2f}{rd:>9.1f}{wr:>9.1f}")
    for phase in Phase:
        print(f"  {phase.name} overall: {net.phase_gflops(phase):.2f} GFLOPS")
    print(f"  all phases: {net.cycles} cycles, {net.gflops:.2f} GFLOPS, "
          f"{100 * net.utilisation:.1f} % of peak")


def run(args):
    size = args.size or {"vgg16": 224, "vgg_cifar": 32, "lenet5": 28}[args.workload]
    layers = WORKLOADS[args.workload](size)
    dram = DramModel(args.bytes_per_cycle, args.latency)
    timing = PeTiming(args.tile_overhead)
    timing_text = ("the engine's own timing" if args.tile_overhead is None else
                   f"lockstep pipeline, tile overhead {args.tile_overhead} cycles")
    print(f"workload {args.workload} at {size}x{size}, batch {args.batch}; DRAM "
          f"{args.bytes_per_cycle:g} bytes/cycle, {args.latency} cycles per transfer; "
          f"{timing_text}; modelled cycles")
    report = {"workload": args.workload, "size": size, "batch": args.batch,
              "dram": {"bytes_per_cycle": args.bytes_per_cycle, "latency_cycles": args.latency},
              "clock_mhz": args.clock_mhz, "tile_overhead_cycles": args.tile_overhead,
              "paper": {"model_gflops": PAPER_MODEL_GFLOPS, "board_gflops": PAPER_BOARD_GFLOPS},
              "configs": []}
    for name in args.presets:
        cfg = preset(name, dma_data_width=128, momentum=False,
                     max_batch=max(args.batch, preset(name).max_batch))
        try:
            net, rows = model_network(cfg, layers, args.batch, dram, timing, args.clock_mhz)
        except ValueError as error:
            print(f"\n== {cfg.name}: cannot run this workload: {error}")
            continue
        _print_table(cfg, net, rows, args.clock_mhz)
        report["configs"].append({
            "config": cfg.as_dict(), "cycles": net.cycles, "gflops": net.gflops,
            "utilisation": net.utilisation,
            "phase_gflops": {p.name: net.phase_gflops(p) for p in Phase}, "layers": rows})
    if args.workload == "vgg16" and size == 224:
        print(f"\npaper (Tm = Tn = 16, 100 MHz, batch 16): {PAPER_MODEL_GFLOPS} GFLOPS modelled "
              f"(finetune2.py), {PAPER_BOARD_GFLOPS} GFLOPS measured on the ZCU102")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
