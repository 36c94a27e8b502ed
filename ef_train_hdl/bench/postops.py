"""Latency and throughput of the store-path post-ops, in simulated clock cycles.

Each unit of ``ef_train_hdl.core.postops`` runs in the Amaranth simulator with every input
stream always valid and the output always ready (``--stall P`` drops the output's ready with
probability P per cycle instead). Printed per unit: input beats, output beats, the cycles
from the first input handshake to the first output beat (latency), and output beats per cycle
between the first and the last output beat, and input handshake cycles per cycle between the
first and the last input handshake (joined inputs count once; 1.0 = one beat per cycle). Max-pool forward counts
from the handshake of the first window's last pixel. SGD needs ``ef_train_hdl.fp``.
"""

import random

UNITS = ("relu_fp", "relu_bp", "maxpool_fp", "maxpool_bp", "sgd", "sgd_momentum")


def add_arguments(parser):
    parser.add_argument("--units", nargs="+", choices=UNITS, default=list(UNITS),
                        help="which units to run (default: all)")
    parser.add_argument("--lanes", type=int, default=8, help="words per beat, Tm (default 8)")
    parser.add_argument("--size", type=int, default=16, metavar="N",
                        help="map height and width for the pools (default 16)")
    parser.add_argument("--beats", type=int, default=256,
                        help="input beats for ReLU and SGD (default 256)")
    parser.add_argument("--stall", type=float, default=0.0, metavar="P",
                        help="probability that the output is not ready in a cycle (default 0)")


def _unit(name, args):
    from ..core import postops
    lanes, size = args.lanes, args.size
    if name == "relu_fp":
        dut = postops.ReluForward(lanes)
        return dut, {dut.x: args.beats}, dut.y, args.beats, []
    if name == "relu_bp":
        dut = postops.ReluBackward(lanes)
        return dut, {dut.grad_y: args.beats, dut.y: args.beats}, dut.grad_x, args.beats, []
    if name == "maxpool_fp":
        dut = postops.MaxPoolForward(lanes, size)
        return (dut, {dut.x: size * size}, dut.y, (size // 2) ** 2,
                [(dut.width, size), (dut.height, size)])
    if name == "maxpool_bp":
        dut = postops.MaxPoolBackward(lanes, size)
        pooled = (size // 2) ** 2
        return (dut, {dut.grad_y: pooled, dut.idx: pooled}, dut.grad_x, size * size,
                [(dut.width, size), (dut.height, size)])
    momentum = name == "sgd_momentum"
    dut = postops.SgdUpdate(lanes, momentum)
    inputs = {dut.w: args.beats, dut.dw: args.beats}
    params = [(dut.lr, 0x3C23D70A)]  # 0.01
    if momentum:
        inputs[dut.v] = args.beats
        params.append((dut.mu, 0x3F666666))  # 0.9
    return dut, inputs, dut.o, args.beats, params


def _measure(name, args):
    from amaranth.sim import Simulator

    dut, inputs, output, out_count, params = _unit(name, args)
    rng = random.Random(1)
    cycle = [0]
    in_cycles, out_cycles = [], []

    async def clock(ctx):
        while True:
            await ctx.tick()
            cycle[0] += 1

    def producer(port, count):
        async def put(ctx):
            for signal, value in params:
                ctx.set(signal, value)
            for _ in range(count):
                ctx.set(port.valid, 1)
                payload = port.payload.as_value()
                ctx.set(payload, rng.getrandbits(len(payload)))
                await ctx.tick().until(port.ready)
                in_cycles.append(cycle[0])
            ctx.set(port.valid, 0)
        return put

    async def consumer(ctx):
        while len(out_cycles) < out_count:
            ready = rng.random() >= args.stall
            ctx.set(output.ready, ready)
            _, _, valid = await ctx.tick().sample(output.valid)
            if valid and ready:
                out_cycles.append(cycle[0])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(clock)
    for port, count in inputs.items():
        sim.add_testbench(producer(port, count))
    sim.add_testbench(consumer)
    sim.run()
    latency = out_cycles[0] - min(in_cycles)
    if name == "maxpool_fp":
        latency -= args.size + 1  # the first window completes at input pixel (1, 1)
    out_rate = out_count / (out_cycles[-1] - out_cycles[0] + 1)
    # Joined inputs hand over together: count each cycle with a handshake once.
    in_rate = len(set(in_cycles)) / (max(in_cycles) - min(in_cycles) + 1)
    return sum(inputs.values()), out_count, latency, in_rate, out_rate


def run(args):
    print(f"lanes={args.lanes} size={args.size} beats={args.beats} output stall={args.stall}")
    print(f"{'unit':<14}{'beats in':>10}{'beats out':>11}{'latency':>9}{'in/cycle':>10}"
          f"{'out/cycle':>11}")
    for name in args.units:
        beats_in, beats_out, latency, in_rate, out_rate = _measure(name, args)
        print(f"{name:<14}{beats_in:>10}{beats_out:>11}{latency:>9}{in_rate:>10.3f}"
              f"{out_rate:>11.3f}")
