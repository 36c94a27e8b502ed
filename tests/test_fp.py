"""The binary32 units in the Amaranth simulator, bit for bit against the numpy reference.

Operands stream in one per cycle with random idle cycles; every result must come out exactly
``latency`` cycles after its operands, with ``o_valid``, and equal the reference of
:mod:`ef_train_hdl.model.fp`. The vectors (:mod:`ef_train_hdl.model.fp_vectors`) are the cross
product of edge values plus 20,000 random pairs per operation aimed where rounding is hard.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from ef_train_hdl.config import FADD_LATENCY, FMUL_LATENCY
from ef_train_hdl.fp import FAdd, FMul
from ef_train_hdl.model import fp as ref
from ef_train_hdl.model.fp_vectors import random_pairs, special_pairs

RANDOM_PAIRS = 20_000

UNITS = {
    # name: (factory, reference, vector op, random pairs)
    "fmul": (lambda: FMul(), ref.fmul, "mul", RANDOM_PAIRS),
    "fmul_bf16": (lambda: FMul("bf16"), ref.fmul_bf16, "mul", RANDOM_PAIRS // 4),
    "fadd": (lambda: FAdd(), ref.fadd, "add", RANDOM_PAIRS),
}


def simulate(dut, a, b, vcd_path, *, idle_prob=0.1, seed=0):
    """Stream ``a``/``b`` into ``dut``; return (results, latency of each result in cycles)."""
    rng = np.random.default_rng(seed)
    results, latencies = [], []

    async def testbench(ctx):
        issued = []          # cycle at which operand i went in
        cycle = 0
        i = 0
        while len(results) < len(a):
            if i < len(a) and rng.random() >= idle_prob:
                ctx.set(dut.a, int(a[i]))
                ctx.set(dut.b, int(b[i]))
                ctx.set(dut.i_valid, 1)
                issued.append(cycle)
                i += 1
            else:
                ctx.set(dut.i_valid, 0)
                # a deterministic but different don't-care operand on idle cycles
                ctx.set(dut.a, 0x7F800001)
            await ctx.tick()
            cycle += 1
            if ctx.get(dut.o_valid):
                results.append(ctx.get(dut.result))
                latencies.append(cycle - issued[len(results) - 1])
            assert cycle < 2 * len(a) + 100, "the unit stopped producing results"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    try:
        sim.run()
    except Exception as error:
        with sim.write_vcd(str(vcd_path)):
            pass
        raise AssertionError(f"{error} (waveform: {vcd_path})") from error
    return np.array(results, dtype=np.uint32), np.array(latencies)


def check(name, a, b, tmp_path):
    factory, reference, _, _ = UNITS[name]
    dut = factory()
    got, latencies = simulate(dut, a, b, tmp_path / f"{name}.vcd")
    # The PE array schedules around the latencies in config.py: the unit must keep them.
    latency = FADD_LATENCY if name == "fadd" else FMUL_LATENCY
    assert (latencies == latency).all(), \
        f"{name}: results arrived after {sorted(set(latencies))} cycles, not {latency}"
    expected = ref.bits(reference(ref.from_bits(a), ref.from_bits(b)))
    bad = np.nonzero(got != expected)[0]
    if len(bad):
        vcd = tmp_path / f"{name}_failure.vcd"
        dut = factory()
        sim = Simulator(dut)
        sim.add_clock(1e-8)

        async def replay(ctx):
            for k in bad[:16]:
                ctx.set(dut.a, int(a[k]))
                ctx.set(dut.b, int(b[k]))
                ctx.set(dut.i_valid, 1)
                await ctx.tick()
            ctx.set(dut.i_valid, 0)
            await ctx.tick().repeat(dut.latency + 1)

        sim.add_testbench(replay)
        with sim.write_vcd(str(vcd)):
            sim.run()
        lines = [f"a={a[k]:#010x} b={b[k]:#010x} got {got[k]:#010x} expected {expected[k]:#010x}"
                 for k in bad[:10]]
        raise AssertionError(f"{name}: {len(bad)} of {len(a)} results differ; first ones:\n"
                             + "\n".join(lines) + f"\nwaveform of the failing vectors: {vcd}")


@pytest.mark.parametrize("name", UNITS)
def test_special_cross_product(name, tmp_path):
    a, b = special_pairs()
    check(name, a, b, tmp_path)


@pytest.mark.parametrize("name", UNITS)
def test_random_pairs(name, tmp_path):
    _, _, op, count = UNITS[name]
    a, b = random_pairs(op, count, seed=2022)
    assert len(a) >= count
    check(name, a, b, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", UNITS)
def test_random_pairs_long(name, tmp_path):
    _, _, op, _ = UNITS[name]
    a, b = random_pairs(op, 200_000, seed=7)
    check(name, a, b, tmp_path)


def test_bad_mult_format_is_named():
    with pytest.raises(ValueError, match="mult_format must be one of fp32, bf16, not 'fp8'"):
        FMul("fp8")
