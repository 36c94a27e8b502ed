"""Shared testbench helpers for ``amaranth.lib.stream`` ports, with random stalls.

:func:`stream_put` drives a stream as a producer and inserts random idle cycles (``valid`` low)
between beats; :func:`stream_get` consumes a stream and drops ``ready`` at random. Crossing the
two on every port of a block (as the verilog-axi testbenches cross idle and back-pressure
inserters) exercises every stall pattern a real neighbour could produce.

Both helpers use only the async simulator API and follow the stream rules: the producer raises
``valid`` without looking at ``ready`` and holds payload and ``valid`` until a handshake; a
beat is transferred at a clock edge where ``valid`` and ``ready`` are both high.

A ``timeout`` (in cycles) turns a hung design into a test failure instead of a hung test.
"""

import random

import numpy as np
from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "StreamTimeout"]


class StreamTimeout(AssertionError):
    """A stream helper waited longer than its ``timeout`` for a handshake."""


def _rng(rng):
    return rng if rng is not None else random.Random(0)


async def stream_put(ctx, stream, payloads, *, rng=None, idle_prob=0.3, timeout=None):
    """Send ``payloads`` (any iterable) into ``stream``, one beat each, in order.

    Before each beat the producer idles (``valid`` low) for a random number of cycles: another
    idle cycle follows with probability ``idle_prob``. ``payloads`` items are whatever
    ``ctx.set`` accepts for the payload's shape (an int, or for a layout a list / dict /
    :class:`amaranth.lib.data.Const`). Returns after the last handshake with ``valid`` low.
    ``timeout`` bounds the cycles spent waiting for ``ready`` on one beat.
    """
    rng = _rng(rng)
    always_valid = getattr(stream.signature, "always_valid", False)
    for payload in payloads:
        if not always_valid:
            while idle_prob and rng.random() < idle_prob:
                ctx.set(stream.valid, 0)
                await ctx.tick()
            ctx.set(stream.valid, 1)
        ctx.set(stream.payload, payload)
        waited = 0
        while True:
            _, _, ready = await ctx.tick().sample(stream.ready)
            if ready:
                break
            waited += 1
            if timeout is not None and waited > timeout:
                raise StreamTimeout(f"stream_put: no ready within {timeout} cycles")
    if not always_valid:
        ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, count, *, rng=None, stall_prob=0.3, timeout=None):
    """Receive ``count`` beats from ``stream`` and return their payloads as a list.

    In each cycle ``ready`` is low with probability ``stall_prob``. Payloads are sampled at the
    handshake edge, as ``ctx.get`` would return them (an int, or a
    :class:`amaranth.lib.data.Const` for a layout). ``timeout`` bounds the cycles between two
    beats. Returns with ``ready`` low.
    """
    rng = _rng(rng)
    always_ready = getattr(stream.signature, "always_ready", False)
    beats = []
    waited = 0
    while len(beats) < count:
        ready = always_ready or not (stall_prob and rng.random() < stall_prob)
        if not always_ready:
            ctx.set(stream.ready, int(ready))
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if valid and ready:
            beats.append(payload)
            waited = 0
        else:
            waited += 1
            if timeout is not None and waited > timeout:
                raise StreamTimeout(f"stream_get: got {len(beats)} of {count} beats, then "
                                    f"nothing for {timeout} cycles")
    if not always_ready:
        ctx.set(stream.ready, 0)
    return beats


def simulate(tmp_path, name, build):
    """Build and run a simulation; on any failure, re-run it with a VCD and say where it is.

    ``build()`` returns ``(dut, testbenches, check)``: ``check()`` runs after the simulation
    and asserts against the reference. A testbench given as ``(testbench, "background")`` runs
    in the background (a monitor that never returns).
    """
    def run(vcd_path=None):
        dut, testbenches, check = build()
        sim = Simulator(dut)
        sim.add_clock(1e-8)
        for testbench in testbenches:
            if isinstance(testbench, tuple):        # (testbench, "background"): a monitor
                sim.add_testbench(testbench[0], background=True)
            else:
                sim.add_testbench(testbench)
        if vcd_path is None:
            sim.run()
        else:
            with sim.write_vcd(str(vcd_path)):
                sim.run()
        check()

    try:
        run()
    except (AssertionError, StreamTimeout) as failure:
        vcd_path = tmp_path / f"{name}.vcd"
        try:
            run(vcd_path)
        except (AssertionError, StreamTimeout):
            pass
        raise AssertionError(f"{failure}\n(waveform: {vcd_path})") from failure


def assert_bits_equal(got, want, what):
    got = np.asarray(got, dtype=np.uint32)
    want = np.asarray(want, dtype=np.uint32)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (
        f"{what}: {bad.size} of {got.size} words differ; first at flat index {bad[0]}: "
        f"got {got.flat[bad[0]]:#010x}, want {want.flat[bad[0]]:#010x}")
