"""The loader (ef_train_hdl/accel/loader.py) with the read router and the DMA read engine against
the AXI RAM model: every LOAD of a training step's tile program (all targets, all modes:
plain, ReLU backward, max-pool backward, both; weights plain and transposed, biases, the
flatten's many runs) writes exactly the bank words the tile machine writes, under random AXI
stalls and latencies and random back-pressure from the banks."""

import random

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring

from ef_train_hdl import isa
from ef_train_hdl.accel.loader import LOADER_FIFOS, Loader
from ef_train_hdl.accel.readmux import ReadRouter
from ef_train_hdl.axi.dma_read import DmaRead
from ef_train_hdl.axi.dram_model import AxiRamModel
from ef_train_hdl.isa import LoadMode, Op, Target
from ef_train_hdl.model.machine import TileMachine

from accel_harness import dispatch, instructions, trained_image
from axi_helpers import run_bounded
from stream_helpers import stream_put

MARK = np.uint32(0xDEADBEEF)


class LoaderRig(Elaboratable):
    def __init__(self, cfg):
        self.cfg = cfg
        self.dma = DmaRead(cfg)
        self.router = ReadRouter(cfg, LOADER_FIFOS)
        self.loader = Loader(cfg)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma, m.submodules.router = self.dma, self.router
        m.submodules.loader = self.loader
        wiring.connect(m, self.router.dma_cmd, self.dma.cmd)
        wiring.connect(m, self.dma.data, self.router.dma_data)
        for s in "abc":
            wiring.connect(m, getattr(self.loader, f"req_{s}"),
                           getattr(self.router, f"req_{s}"))
            wiring.connect(m, getattr(self.router, f"data_{s}"),
                           getattr(self.loader, f"data_{s}"))
        return m


def expected_writes(cfg, mem, instr):
    """{(kind, half or row, bank or col, addr): word} that the tile machine's LOAD writes."""
    mach = TileMachine(cfg, mem.copy())
    for a in (mach.ifm, mach.ofm, mach.w):
        a.view(np.uint32)[...] = MARK
    mach.execute(instr)
    out = {}
    for kind, arr in (("ifm", mach.ifm), ("ofm", mach.ofm)):
        for h, bank, addr in zip(*np.nonzero(arr.view(np.uint32) != MARK)):
            out[(kind, int(h), int(bank), int(addr))] = int(arr.view(np.uint32)[h, bank, addr])
    for r, j, addr in zip(*np.nonzero(mach.w.view(np.uint32) != MARK)):
        out[("w", int(r), int(j), int(addr))] = int(mach.w.view(np.uint32)[r, j, addr])
    return out


def pick(compiled):
    """A spread of the program's LOADs: the first few of every (target, mode, transpose,
    runs > 1) kind."""
    seen, out = {}, []
    for instr in instructions(compiled, Op.LOAD):
        key = (instr.target, instr.mode, instr.transpose, instr.runs > 1)
        if seen.get(key, 0) < 3:
            seen[key] = seen.get(key, 0) + 1
            out.append(instr)
    return out


@pytest.mark.parametrize("preset_name,seed,stall", [("tiny", 0, 0.0), ("tiny", 1, 0.4),
                                                    ("ultra96", 2, 0.3)])
def test_loads_match_machine(tmp_path, preset_name, seed, stall):
    compiled, mem = trained_image(preset_name)
    cfg = compiled.cfg
    loads = pick(compiled)
    modes = {(i.target, i.mode) for i in loads}
    assert {LoadMode.RELU_BP, LoadMode.POOL_BP, LoadMode.RELU_POOL_BP} <= {m for _, m in modes}
    assert any(i.transpose for i in loads) and any(i.target == Target.BIAS for i in loads)
    assert any(i.runs > 1 for i in loads)
    want = [expected_writes(cfg, mem, i) for i in loads]
    got = [dict() for _ in loads]

    def factory():
        rig = LoaderRig(cfg)
        ld = rig.loader
        rng = random.Random(seed)
        ram = AxiRamModel(rig.dma.axi, mem.copy(), max_burst_beats=cfg.max_burst_beats,
                          read_latency=(1, 30), ar_stall=stall, r_gap=stall, rng=seed)
        state = {"k": 0}

        async def driver(ctx):
            ctx.set(ld.avail_compute, 200)
            ctx.set(ld.avail_store, 200)
            for k, instr in enumerate(loads):
                await stream_put(ctx, ld.instr, [dispatch(instr.replace(
                    wait_compute=0, wait_store=0, signal_compute=1, signal_store=0), k)],
                    rng=rng, idle_prob=stall)

        async def banks(ctx):
            # The tile engine's side: load ports ready at random.
            while state["k"] < len(loads):
                for port in (ld.ifm_load, ld.ofm_load, ld.w_load):
                    ctx.set(port.ready, int(rng.random() >= stall))
                await ctx.tick()

        async def monitor(ctx):
            ports = {"ifm": ld.ifm_load, "ofm": ld.ofm_load, "w": ld.w_load}
            lanes = cfg.floats_per_beat
            async for _, _, *vals in ctx.tick().sample(
                    ld.give_compute, *(x for p in ports.values()
                                       for x in (p.valid, p.ready, p.payload))):
                k = state["k"]
                if k >= len(loads):
                    continue
                give, rest = vals[0], vals[1:]
                for n, (kind, port) in enumerate(ports.items()):
                    valid, ready, payload = rest[3 * n:3 * n + 3]
                    if not (valid and ready):
                        continue
                    if kind == "w":
                        for i in range(lanes):
                            if not (payload.en >> i) & 1:
                                continue
                            r, j = ((payload.row + i, payload.col) if payload.transpose
                                    else (payload.row, payload.col + i))
                            got[k][("w", r, j, payload.addr)] = int(payload.data[i])
                    else:
                        for bank in range(len(payload.data)):
                            got[k][(kind, payload.half, bank, payload.addr)] = int(
                                payload.data[bank])
                if give:
                    state["k"] = k + 1

        async def wait_done(ctx):
            while state["k"] < len(loads):
                await ctx.tick()

        return rig, [driver, banks, wait_done], [ram.run, monitor]

    run_bounded(factory, max_cycles=60_000, tmp_path=tmp_path, name=f"loader{seed}")
    for k, instr in enumerate(loads):
        assert got[k] == want[k], (
            f"LOAD {k} {instr!r}: {len(set(got[k].items()) ^ set(want[k].items()))} "
            f"differences, e.g. {sorted(set(got[k].items()) ^ set(want[k].items()))[:4]}")
