"""The register slice (accel.gearbox.Skid): every word through, in order, under random stalls
on both sides; one word a cycle when nothing stalls; and no combinational path through it."""

import random

import pytest
from amaranth.sim import Simulator

from ef_train_hdl.accel.gearbox import Skid

from stream_helpers import stream_get, stream_put


def _run(idle, stall, n=300, seed=0):
    dut = Skid(32)
    rng = random.Random(seed)
    words = [rng.getrandbits(32) for _ in range(n)]
    got = {}

    async def producer(ctx):
        await stream_put(ctx, dut.i, words, rng=random.Random(seed + 1), idle_prob=idle,
                         timeout=100)

    async def consumer(ctx):
        got["words"] = await stream_get(ctx, dut.o, n, rng=random.Random(seed + 2),
                                        stall_prob=stall, timeout=100)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run_until(1e-8 * (20 * n + 100))
    return words, got


@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.5), (0.4, 0.4),
                                        (0.1, 0.8)])
def test_every_word_in_order(idle, stall):
    words, got = _run(idle, stall)
    assert got["words"] == words


def test_full_rate_without_stalls():
    dut = Skid(8)
    cycles = {}

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        taken = 0
        for cycle in range(40):
            ctx.set(dut.i.payload, cycle)
            _, _, ready, valid = await ctx.tick().sample(dut.i.ready, dut.o.valid)
            taken += ready
            if cycle >= 2:
                assert valid, f"a bubble at cycle {cycle}"
        cycles["taken"] = taken

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert cycles["taken"] == 40


def test_outputs_come_from_flip_flops():
    # i.ready, o.valid and o.payload are registers (or a NOT of one): no path from o.ready or
    # i.valid / i.payload reaches them in the same cycle.
    sim_dut = Skid(8)

    async def bench(ctx):
        before = (ctx.get(sim_dut.i.ready), ctx.get(sim_dut.o.valid), ctx.get(sim_dut.o.payload))
        # Change every input without a clock edge: the outputs must not move.
        ctx.set(sim_dut.i.valid, 1)
        ctx.set(sim_dut.i.payload, 0xA5)
        ctx.set(sim_dut.o.ready, 1)
        await ctx.delay(1e-9)
        after = (ctx.get(sim_dut.i.ready), ctx.get(sim_dut.o.valid), ctx.get(sim_dut.o.payload))
        assert before == after
        await ctx.tick()
        await ctx.tick()        # fill o, then stall it and fill the skid register
        ctx.set(sim_dut.o.ready, 0)
        await ctx.tick()
        before = (ctx.get(sim_dut.i.ready), ctx.get(sim_dut.o.valid))
        ctx.set(sim_dut.o.ready, 1)
        await ctx.delay(1e-9)
        assert (ctx.get(sim_dut.i.ready), ctx.get(sim_dut.o.valid)) == before

    sim = Simulator(sim_dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
