"""Cycle-accurate simulation of whole layers: cycles, PE utilisation, roofline, model error.

For each network (default: the reduced VGG-style stack ``vgg`` and LeNet-5) a training step
runs on the simulated accelerator (default: its Verilog under Verilator, ``--backend sim`` the
Amaranth simulator), **one layer and phase at a time**: every layer descriptor of the step is
lowered into its own tile program, run to its END, and the accelerator's cycle counter read
(the host's softmax step between FP and BP as in a real step). Printed per layer and phase:

- ``cycles``: simulated cycles (the accelerator's CYCLES register);
- ``util``: useful MACs / (Tm * Tn * cycles) (the paper's MAC count);
- ``roofline``: ``min(1, bandwidth * MACs / bytes / peak)`` with every tensor crossing DRAM
  once at the DRAM model's bandwidth (ef_train_hdl.perf.roofline), and ``util/roof``;
- ``model``: the analytical model of the same tile program (ef_train_hdl.perf_tiles) and its
  error against the simulation.

The DRAM is the simulator's: ``--dram-latency`` cycles from a read burst's address to its first
beat, one 16-byte beat a cycle (128-bit bus), write responses ``--write-latency`` after the
last beat. Then the simulator's speed: simulated cycles per wall-clock second of this run
(and, with ``--pysim-cycles``, of the Amaranth simulator on the same configuration), and the
wall-clock time of whole training steps (labelled as this machine's). Goals (issue 5):
utilisation at least 95 % of the roofline bound on 3x3 layers with 32 or more channels in all
three phases, model error under 3 %.
"""

import json
import sys
import time

import numpy as np


def add_arguments(parser):
    parser.add_argument("--preset", default="ultra96", help="configuration (default ultra96)")
    parser.add_argument("--nets", nargs="+", default=["vgg", "lenet"],
                        help="networks of ef_train_hdl.network.NETWORKS (default: vgg lenet)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--backend", default="verilator", choices=["verilator", "sim"],
                        help="simulator (default verilator)")
    parser.add_argument("--dram-latency", type=int, default=30,
                        help="DRAM read latency per burst, cycles (default 30)")
    parser.add_argument("--write-latency", type=int, default=20,
                        help="DRAM write response latency, cycles (default 20)")
    parser.add_argument("--steps", type=int, default=1,
                        help="whole training steps to time on the simulator (default 1)")
    parser.add_argument("--pysim-cycles", type=int, default=0, metavar="N",
                        help="also measure the Amaranth simulator's speed over N cycles of "
                             "the same configuration (slow on big arrays)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")


def _layer_name(L):
    return f"{L.index}:{L.kind}{'' if L.kind == 'fc' else L.kernel}"


def run(args):
    from .. import isa
    from ..compiler import to_workload_layer
    from ..config import preset
    from ..descriptor import Opcode
    from ..lower import lower_program
    from ..network import NETWORKS
    from ..perf import DramModel, roofline
    from ..perf_tiles import TileDram, program_perf
    from ..runtime import Trainer, softmax_xent
    from ..workloads import Phase

    cfg = preset(args.preset)
    dram = TileDram(read_latency=args.dram_latency, write_latency=args.write_latency)
    roof_dram = DramModel(bytes_per_cycle=cfg.bytes_per_beat, latency_cycles=args.dram_latency)
    record = {"preset": cfg.name, "batch": args.batch, "backend": args.backend,
              "dram": {"read_latency": args.dram_latency, "write_latency": args.write_latency,
                       "bytes_per_cycle": cfg.bytes_per_beat}, "networks": {}}
    print(f"preset {cfg.name} (Tm={cfg.tm} Tn={cfg.tn}), batch {args.batch}, backend "
          f"{args.backend}; DRAM: read latency {args.dram_latency} cycles/burst, "
          f"{cfg.bytes_per_beat} bytes/cycle, write response {args.write_latency}")
    options = {"read_latency": args.dram_latency, "write_latency": args.write_latency,
               "log": lambda m: print(m, file=sys.stderr, flush=True)} \
        if args.backend == "verilator" else {}
    if args.backend == "sim":
        from ..runtime.sim_backend import DramTiming
        options = {"dram": DramTiming(read_latency=args.dram_latency,
                                      write_latency=args.write_latency)}
    phase_of = {Opcode.CONV_FP: Phase.FP, Opcode.FC_FP: Phase.FP, Opcode.CONV_BP: Phase.BP,
                Opcode.FC_BP: Phase.BP, Opcode.CONV_WU: Phase.WU, Opcode.FC_WU: Phase.WU}
    total_cycles = total_wall = 0.0
    for name in args.nets:
        net = NETWORKS[name]()
        t = Trainer(net, args.batch, cfg, backend=args.backend, lr=0.01, momentum=0.9,
                    **options)
        t.init(seed=0)
        c, b = t.compiled, t.backend
        rng = np.random.default_rng(0)
        x = rng.standard_normal((args.batch,) + tuple(net.input_shape)).astype(np.float32)
        labels = rng.integers(0, c.num_classes, args.batch)
        t._write_input(x)
        scratch = c.train_tiles_addr
        rows = []
        print(f"\n{name}: " + "; ".join(L.describe() for L in c.layers))
        print(f"{'layer':<8} {'phase':<5} {'MACs':>11} {'cycles':>10} {'util':>7} "
              f"{'roofline':>8} {'util/roof':>9} {'model':>10} {'error':>7}")
        for d in c.train_program:
            if d.opcode == Opcode.HOST_SYNC:
                logits = c.unpack_logits(b.read_f32(c.logits.base, c.logits.words))
                _, grad = softmax_xent(logits, labels)
                b.write_f32(c.logits_grad.base, c.pack_logits_grad(grad))
                continue
            if d.opcode == Opcode.END:
                continue
            prog = lower_program([d], cfg)
            b.write(scratch, isa.pack_program(prog))
            b.reset_counters()
            start = time.perf_counter()
            status = b.run(scratch)
            total_wall += time.perf_counter() - start
            if status.code != 0:
                raise SystemExit(f"layer {d.layer} {d.opcode.name}: {status.message}")
            cnt = b.read_counters()
            cycles = cnt["cycles"]
            total_cycles += cycles
            L = c.layers[d.layer]
            phase = phase_of[d.opcode]
            wl = to_workload_layer(L, cfg)
            macs = wl.macs(args.batch)
            util = macs / (cfg.pes * cycles)
            roof = roofline(wl, phase, cfg, args.batch, roof_dram, momentum=True)
            model = program_perf(prog, cfg, dram).cycles
            err = (model - cycles) / cycles
            row = {"layer": _layer_name(L), "describe": L.describe(), "phase": phase.name,
                   "macs": macs, "cycles": cycles, "utilisation": util, "roofline": roof,
                   "model_cycles": model, "model_error": err, "counters": cnt}
            rows.append(row)
            print(f"{row['layer']:<8} {phase.name:<5} {macs:>11,} {cycles:>10,} "
                  f"{100 * util:6.1f}% {100 * roof:7.1f}% {100 * util / roof:8.1f}% "
                  f"{model:>10,} {100 * err:+6.1f}%")
        cyc = sum(r["cycles"] for r in rows)
        macs = sum(r["macs"] for r in rows)
        print(f"{'step':<8} {'all':<5} {macs:>11,} {cyc:>10,} "
              f"{100 * macs / (cfg.pes * cyc):6.1f}%")
        record["networks"][name] = {"layers": rows, "cycles": cyc, "macs": macs}

        # Whole training steps: the accelerator runs the step's tile program (written again:
        # the layer programs above used its place).
        addr, words = c.program("tile", "train")
        b.write(addr, words)
        walls = []
        for _ in range(args.steps):
            start = time.perf_counter()
            t.train_step(x, labels)
            walls.append(time.perf_counter() - start)
        if walls:
            step_cycles = t.counters()["step_cycles"]
            record["networks"][name]["step"] = {"cycles": step_cycles, "wall_seconds": walls}
            print(f"whole training step ({len(c.train_tiles)} tile instructions): "
                  f"{step_cycles:,} cycles; wall clock on this machine {min(walls):.2f} s "
                  f"({step_cycles / min(walls):,.0f} simulated cycles/s)")
    speed = total_cycles / total_wall if total_wall else 0.0
    record["speed"] = {args.backend: speed}
    print(f"\n{args.backend}: {total_cycles:,.0f} cycles simulated in {total_wall:.1f} s wall "
          f"clock = {speed:,.0f} cycles/s (this machine)")
    if args.pysim_cycles:
        pysim = _pysim_speed(cfg, args.pysim_cycles)
        record["speed"]["amaranth"] = pysim
        print(f"amaranth simulator, {cfg.name}: {pysim:,.1f} cycles/s over "
              f"{args.pysim_cycles} cycles of a running program (this machine); "
              f"{args.backend} / amaranth = {speed / pysim:,.0f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=1, default=float)
        print(f"JSON written to {args.json}")
    return 0


def remodel(record):
    """``record`` (a ``bench sim --json`` record) with every layer's ``model_cycles`` and
    ``model_error`` computed again by the current tile-program model, from the same programs
    (the compiler and lowering are deterministic): a record keeps its simulated cycles, and
    the model can be checked against them after it changes. Convolution layers also get
    ``layer_model_cycles`` and ``layer_model_error``: the loop-nest model (perf.py, which
    picks the tilings and gives the VGG-16 table) at the program's tiling."""
    from ..compiler import compile_network, to_workload_layer
    from ..config import preset
    from ..descriptor import Opcode
    from ..lower import lower_program
    from ..network import NETWORKS
    from ..perf import DramModel, layer_perf
    from ..perf_tiles import TileDram, program_perf
    from ..schedule import Tiling
    from ..workloads import Phase
    cfg = preset(record["preset"])
    dram = TileDram(read_latency=record["dram"]["read_latency"],
                    write_latency=record["dram"]["write_latency"])
    loop_dram = DramModel(bytes_per_cycle=cfg.dma_data_width / 8,
                          latency_cycles=record["dram"]["read_latency"])
    conv_phases = {Opcode.CONV_FP: Phase.FP, Opcode.CONV_BP: Phase.BP, Opcode.CONV_WU: Phase.WU}
    for name, data in record["networks"].items():
        c = compile_network(NETWORKS[name](), record["batch"], cfg, lr=0.01, momentum=0.9)
        descs = [d for d in c.train_program if d.opcode not in (Opcode.HOST_SYNC, Opcode.END)]
        if len(descs) != len(data["layers"]):
            raise ValueError(f"{name}: the record has {len(data['layers'])} layer programs, "
                             f"the compiler now makes {len(descs)}")
        for d, row in zip(descs, data["layers"]):
            program = lower_program([d], cfg)
            ran = row.get("counters", {}).get("instructions")
            if ran is not None and ran != len(program) - 1:       # the counter skips END
                raise ValueError(
                    f"{name} {row['layer']} {row['phase']}: the record ran {ran} instructions, "
                    f"the compiler now makes {len(program) - 1} (another tiling or lowering); "
                    f"simulate it again (python -m ef_train_hdl.bench sim --batch "
                    f"{record['batch']} --json PATH)")
            model = program_perf(program, cfg, dram).cycles
            row["model_cycles"] = model
            if d.opcode in conv_phases:          # the loop-nest model that picked the tiling
                tiling = Tiling(d.tile_rows, d.tile_groups,
                                "streamed" if d.streamed else "resident")
                lp = layer_perf(to_workload_layer(c.layers[d.layer], cfg), conv_phases[d.opcode],
                                tiling, cfg, record["batch"], loop_dram,
                                momentum=bool(d.momentum)).cycles
                row["layer_model_cycles"] = lp
                row["layer_model_error"] = (lp - row["cycles"]) / row["cycles"]
            row["model_error"] = (model - row["cycles"]) / row["cycles"]
    return record


def _pysim_speed(cfg, cycles):
    """Cycles per second of the Amaranth simulator running a layer program of ``cfg``."""
    from ..network import small_cnn
    from ..runtime import Trainer
    from ..runtime.sim_backend import SimBackend
    t = Trainer(small_cnn(), 1, cfg, backend="sim")
    t.init(seed=0)
    b = t.backend
    b.write(b.dram_words - 16, np.zeros(16, np.uint32))

    async def job(ctx, rng):
        await b._write_reg(ctx, rng, "PROGRAM_ADDR_LO", t._addr["train"] * 4)
        await b._write_reg(ctx, rng, "CTRL", 1)
        for _ in range(cycles):
            await ctx.tick()
    start = time.perf_counter()
    b._call(job)
    return cycles / (time.perf_counter() - start)
