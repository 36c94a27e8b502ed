"""cocotb testbench of the tile engine's generated Verilog (``TileEngine``, top ``ef_tile_engine``).

Run through :func:`ef_train_hdl.cosim.run_cocotb` (``tests/test_core_verilator.py``), never by
hand. The host flattens one or more :class:`ef_train_hdl.model.tiles.TileProgram` into

- ``kind``: int8 per step: 0 ``w``, 1 ``ifm``, 2 ``ofm``, 3 ``job``, 4 ``wait``, 5 ``drain``;
- ``payload``: uint32[steps, CHUNKS], the step's stream payload (the packed load word, job or
  drain job: ``Const.cast(layout.const(...)).value``) as little-endian 32-bit chunks;
- ``prog_start``: int64[programs + 1], the first step of each program;
- ``beats``: int64[programs], the output beats each program's drain produces;

and ``env={"TILE_LANES": words per beat, "TILE_SEED": ..., "TILE_STALL": ..., "TILE_MAX_CYCLES":
...}``. The programs run one after the other in one simulation (the engine is not reset
between them): load beats go in one per cycle (``valid`` held high), jobs and drain jobs with
random idle cycles, ``wait`` blocks until every accepted job has pulsed ``done``, and after a
drain job the beats of ``out`` are collected with random back-pressure (``ready`` low with
probability ``TILE_STALL``) before the next program starts.

It hands back (per program unless said otherwise)

- ``words``: uint32, every drained word of every program in order; ``n_words`` per program;
- ``last_count``, ``last_final``: how many beats had ``last`` set, and whether the final did;
- ``done_count``, ``bad_errors``: ``done`` pulses, and how many of them had ``error != 0``;
- ``active0``: ``cycles_active`` when the drain job was issued, ``active``, ``busy``:
  ``cycles_active`` / ``cycles_busy`` after the last beat (the counters are cumulative);
- ``cycles``: clock cycles each program took; ``total_cycles``, ``seconds``: the whole run.

A cycle limit (``TILE_MAX_CYCLES`` per wait / per drain) stops a hung engine with a failure
instead of running into the wall-clock timeout.
"""

import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from ef_train_hdl import cosim

KINDS = ("w", "ifm", "ofm", "job", "wait", "drain")


def _int(chunks):
    value = 0
    for i, c in enumerate(chunks):
        value |= int(c) << (32 * i)
    return value


@cocotb.test()
async def tile_programs(dut):
    data = cosim.tb_inputs()
    kind, payload = data["kind"], data["payload"]
    prog_start, beats_of = data["prog_start"], data["beats"]
    lanes = int(os.environ["TILE_LANES"])
    stall = float(os.environ.get("TILE_STALL", "0.3"))
    max_cycles = int(os.environ.get("TILE_MAX_CYCLES", "200000"))
    rng = random.Random(int(os.environ.get("TILE_SEED", "0")))

    clk = dut.clk
    cocotb.start_soon(Clock(clk, 10, unit="ns").start())
    edge, settled = RisingEdge(clk), ReadOnly()
    loads = {"w": (dut.w_load__valid, dut.w_load__ready, dut.w_load__payload),
             "ifm": (dut.ifm_load__valid, dut.ifm_load__ready, dut.ifm_load__payload),
             "ofm": (dut.ofm_load__valid, dut.ofm_load__ready, dut.ofm_load__payload),
             "job": (dut.job__valid, dut.job__ready, dut.job__payload),
             "drain": (dut.drain_job__valid, dut.drain_job__ready, dut.drain_job__payload)}
    for valid, _, _ in loads.values():
        valid.value = 0
    dut.out__ready.value = 0
    dut.rst.value = 1
    await edge
    await edge
    dut.rst.value = 0
    await edge

    state = {"cycle": 0, "done": 0, "bad": 0}

    async def monitor():
        # Each cycle once: the settled values between two rising edges.
        while True:
            await settled
            if int(dut.done.value):
                state["done"] += 1
                if int(dut.error.value):
                    state["bad"] += 1
            await edge
            state["cycle"] += 1

    cocotb.start_soon(monitor())

    async def put(name, value, idle_prob):
        valid, ready, port = loads[name]
        while idle_prob and rng.random() < idle_prob:
            valid.value = 0
            await edge
        port.value = value
        valid.value = 1
        waited = 0
        while True:
            await settled
            accepted = int(ready.value)
            await edge
            if accepted:
                break
            waited += 1
            assert waited < max_cycles, f"{name} stream never ready"
        # valid stays high: the next put of the same stream writes over it in this cycle;
        # any other step lowers it first.

    def idle_all():
        for valid, _, _ in loads.values():
            valid.value = 0

    async def collect(n_beats):
        got, lasts = [], []
        waited = 0
        while len(got) < n_beats * lanes:
            ready = 0 if rng.random() < stall else 1
            dut.out__ready.value = ready
            await settled
            if ready and int(dut.out__valid.value):
                beat = int(dut.out__payload.value)
                got.extend((beat >> (32 * i)) & 0xFFFF_FFFF for i in range(lanes))
                lasts.append((beat >> (32 * lanes)) & 1)
            await edge
            waited += 1
            assert waited < max_cycles, f"{len(got) // lanes} of {n_beats} beats came out"
        dut.out__ready.value = 0
        return got, lasts

    out = {k: [] for k in ("n_words", "last_count", "last_final", "done_count", "bad_errors",
                           "active0", "active", "busy", "cycles")}
    words = []
    issued = 0
    start = time.perf_counter()
    for p in range(len(beats_of)):
        first_cycle = state["cycle"]
        done0, bad0 = state["done"], state["bad"]
        active0 = 0
        previous = None
        for s in range(int(prog_start[p]), int(prog_start[p + 1])):
            name = KINDS[int(kind[s])]
            if previous is not None and previous != name:
                idle_all()
            previous = name
            if name in ("w", "ifm", "ofm"):
                await put(name, _int(payload[s]), 0.0)
            elif name == "job":
                await put(name, _int(payload[s]), stall)
                issued += 1
            elif name == "wait":
                idle_all()
                waited = 0
                while state["done"] < issued:
                    await edge
                    waited += 1
                    assert waited < max_cycles, "the engine never reported done"
                # let the monitor count this cycle before going on
            elif name == "drain":
                active0 = int(dut.cycles_active.value)
                await put(name, _int(payload[s]), stall)
                idle_all()
                previous = None
                got, lasts = await collect(int(beats_of[p]))
                words.extend(got)
                out["n_words"].append(len(got))
                out["last_count"].append(sum(lasts))
                out["last_final"].append(lasts[-1] if lasts else 0)
        idle_all()
        await settled
        out["active0"].append(active0)
        out["active"].append(int(dut.cycles_active.value))
        out["busy"].append(int(dut.cycles_busy.value))
        await edge
        out["done_count"].append(state["done"] - done0)
        out["bad_errors"].append(state["bad"] - bad0)
        out["cycles"].append(state["cycle"] - first_cycle)
        dut._log.info("program %d: %d cycles, %d words", p, out["cycles"][-1],
                      out["n_words"][-1] if out["n_words"] else 0)
    seconds = time.perf_counter() - start
    cosim.tb_save_outputs(words=np.array(words, dtype=np.uint32),
                          **{k: np.array(v, dtype=np.int64) for k, v in out.items()},
                          total_cycles=np.array(state["cycle"]), seconds=np.array(seconds))
