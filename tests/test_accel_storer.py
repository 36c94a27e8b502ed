"""The storer (ef_train_hdl/accel/storer.py) with the read router and both DMA engines against
the AXI RAM model: the STOREs of a training step's tile program (plain, ReLU, pool with its
index, ReLU + pool, FC stores of many runs, weight gradients, SGD plain and with momentum,
bias gradients through ``bias_select``) and a stand-alone SGD leave DRAM as the tile machine
does, bit for bit, under random AXI stalls and latencies and random gaps in the drain."""

import random

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring

from ef_train_hdl import isa
from ef_train_hdl.accel.readmux import ReadRouter
from ef_train_hdl.accel.storer import STORER_FIFOS, Storer
from ef_train_hdl.axi.dma import Dma
from ef_train_hdl.core.drain import drain_lanes
from ef_train_hdl.axi.dram_model import AxiRamModel
from ef_train_hdl.descriptor import f32_bits
from ef_train_hdl.isa import Op, Post, Source
from ef_train_hdl.model.machine import TileMachine

from accel_harness import dispatch, instructions, trained_image
from axi_helpers import run_bounded
from stream_helpers import stream_put


class StorerRig(Elaboratable):
    def __init__(self, cfg):
        self.dma = Dma(cfg)
        self.router = ReadRouter(cfg, STORER_FIFOS)
        self.storer = Storer(cfg)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma, m.submodules.router = self.dma, self.router
        m.submodules.storer = st = self.storer
        wiring.connect(m, self.router.dma_cmd, self.dma.rd_cmd)
        wiring.connect(m, self.dma.rd_data, self.router.dma_data)
        for s in "wvg":
            wiring.connect(m, getattr(st, f"req_{s}"), getattr(self.router, f"req_{s}"))
            wiring.connect(m, getattr(self.router, f"data_{s}"), getattr(st, f"data_{s}"))
        wiring.connect(m, st.wr_cmd, self.dma.wr_cmd)
        wiring.connect(m, st.wr_data, self.dma.wr_data)
        m.d.comb += st.wr_done.eq(self.dma.wr_done)
        return m


def pick(compiled, cfg):
    seen, out = {}, []
    for instr in instructions(compiled, Op.STORE):
        key = (instr.source, instr.post, instr.bias_select, instr.runs > 1)
        if seen.get(key, 0) < 2:
            seen[key] = seen.get(key, 0) + 1
            out.append(instr)
    # A stand-alone SGD (DRAM source) with momentum over 3 pieces' worth of words.
    words = 3 * 64 * cfg.floats_per_beat + 2 * cfg.floats_per_beat
    out.append(isa.Instr(Op.STORE, source=Source.DRAM, post=Post.SGD_MOMENTUM,
                         addr_out=1 << 16, addr_aux=(1 << 16) + 4096, addr_grad=(1 << 16) + 8192,
                         runs=1, run_words=words, lr=f32_bits(0.125), mu=f32_bits(0.5)))
    return out


@pytest.mark.parametrize("preset_name,seed,stall", [("tiny", 0, 0.0), ("tiny", 1, 0.4),
                                                    ("ultra96", 2, 0.3)])
def test_stores_match_machine(tmp_path, preset_name, seed, stall):
    compiled, mem0 = trained_image(preset_name)
    cfg = compiled.cfg
    stores = pick(compiled, cfg)
    posts = {(i.source, i.post, i.bias_select) for i in stores}
    assert {Post.POOL, Post.RELU_POOL, Post.RELU, Post.SGD_MOMENTUM} <= {p for _, p, _ in posts}
    assert any(b for *_, b in posts) and any(i.runs > 1 for i in stores)
    mem = np.concatenate([mem0, np.random.default_rng(seed).integers(
        0, 2**30, (1 << 16) + 12288 - len(mem0), dtype=np.uint32)]) if len(mem0) < (
        1 << 16) + 12288 else mem0.copy()
    mach = TileMachine(cfg, mem.copy())
    # The banks the drains read: random words (no NaNs: numpy's max-pool and ours agree on
    # them, but a random bank could make every lane NaN and test nothing).
    rng = np.random.default_rng(seed)
    for a in (mach.ifm, mach.ofm, mach.w):
        a[...] = rng.standard_normal(a.shape).astype(np.float32)
    drains = []
    for instr in stores:
        if instr.source != Source.DRAM:
            drains.append(mach._drain(instr.replace(bias_select=0)).view(np.uint32))
        mach.execute(instr)
    want = mach.mem
    got_mem = mem.copy()
    counts = {"compute": 0, "load": 0}

    def factory():
        rig = StorerRig(cfg)
        st = rig.storer
        rnd = random.Random(seed)
        ram = AxiRamModel(rig.dma.m_axi, got_mem, max_burst_beats=cfg.max_burst_beats,
                          read_latency=(1, 30), write_latency=(1, 20), ar_stall=stall,
                          aw_stall=stall, w_stall=stall, r_gap=stall, b_gap=stall, rng=seed)
        r = drain_lanes(cfg)   # words a drain beat

        async def driver(ctx):
            ctx.set(st.avail_compute, 200)
            ctx.set(st.avail_load, 200)
            for k, instr in enumerate(stores):
                await stream_put(ctx, st.instr, [dispatch(instr.replace(
                    wait_compute=0, wait_load=0, signal_compute=1, signal_load=1), k)],
                    rng=rnd, idle_prob=stall)

        async def drain(ctx):
            for words in drains:
                await ctx.tick().until(st.drain_job.valid)
                ctx.set(st.drain_job.ready, 1)
                await ctx.tick()
                ctx.set(st.drain_job.ready, 0)
                beats = [dict(data=[int(x) for x in words[i:i + r]], last=0)
                         for i in range(0, len(words), r)]
                beats[-1]["last"] = 1
                await stream_put(ctx, st.drain_in, beats, rng=rnd, idle_prob=stall)

        async def monitor(ctx):
            async for _, _, gc, gl in ctx.tick().sample(st.give_compute, st.give_load):
                counts["compute"] += gc
                counts["load"] += gl

        async def wait_done(ctx):
            while counts["load"] < len(stores):
                await ctx.tick()

        return rig, [driver, drain, wait_done], [ram.run, monitor]

    run_bounded(factory, max_cycles=60_000, tmp_path=tmp_path, name=f"storer{seed}")
    assert counts["compute"] == len(stores)
    bad = np.flatnonzero(got_mem != want)
    assert bad.size == 0, (f"{bad.size} words differ, first at word {bad[0]}: hardware "
                           f"0x{got_mem[bad[0]]:08X}, machine 0x{want[bad[0]]:08X}")
