"""The AXI4 on-chip memory (ef_train_hdl/axi/sram.py) behind the accelerator's DMA engines:
random writes then reads (bursts of every length, 4 KiB splits, partial last beats) read back
what a numpy array says, with the DMA's consumer stalling at random; out-of-range addresses
are DECERR."""

import random

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring

from ef_train_hdl.axi.dma import Dma
from ef_train_hdl.axi.sram import AxiSram
from ef_train_hdl.config import AcceleratorConfig

from axi_helpers import run_bounded
from stream_helpers import stream_get, stream_put

CFG = AcceleratorConfig(max_burst_beats=16)
WORDS = 4096


class Rig(Elaboratable):
    def __init__(self, init):
        self.dma = Dma(CFG)
        self.ram = AxiSram(data_width=CFG.dma_data_width, addr_width=CFG.addr_width,
                           depth=WORDS // CFG.floats_per_beat, init=init)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma, m.submodules.ram = self.dma, self.ram
        wiring.connect(m, self.dma.m_axi, self.ram.bus)
        return m


def beats_of(words, f):
    return [sum(int(w) << (32 * i) for i, w in enumerate(words[k:k + f]))
            for k in range(0, len(words), f)]


@pytest.mark.parametrize("seed", [0, 1])
def test_writes_then_reads(tmp_path, seed):
    rng = np.random.default_rng(seed)
    f = CFG.floats_per_beat
    init_words = rng.integers(0, 2**32, WORDS, dtype=np.uint64).astype(np.uint32)
    mem = init_words.copy()
    cmds = []
    for _ in range(12):
        addr = int(rng.integers(0, WORDS // f - 40)) * f
        length = int(rng.integers(1, 40 * f))
        cmds.append((addr, length, rng.integers(0, 2**32, length, dtype=np.uint64)
                     .astype(np.uint32)))
    for addr, length, data in cmds:
        mem[addr:addr + length] = data
    reads = [(int(rng.integers(0, WORDS // f - 60)) * f, int(rng.integers(1, 60 * f)))
             for _ in range(10)]
    got = []

    def factory():
        rig = Rig(beats_of(init_words, f))
        dma = rig.dma
        r = random.Random(seed)

        async def writer(ctx):
            for addr, length, data in cmds:
                await stream_put(ctx, dma.wr_cmd, [{"addr": addr, "length": length}], rng=r)
                padded = np.concatenate([data, np.zeros(-len(data) % f, np.uint32)])
                await stream_put(ctx, dma.wr_data, beats_of(padded, f), rng=r, idle_prob=0.2)
            while ctx.get(dma.wr_busy):
                await ctx.tick()
            for addr, length in reads:
                await stream_put(ctx, dma.rd_cmd, [{"addr": addr, "length": length}], rng=r)
                beats = await stream_get(ctx, dma.rd_data, -(-length // f), rng=r,
                                         stall_prob=0.3, timeout=500)
                words = []
                for b in beats:
                    words += [(int(b.data) >> (32 * i)) & 0xFFFF_FFFF for i in range(f)]
                got.append(np.array(words[:length], np.uint32))
            assert not ctx.get(dma.rd_error) and not ctx.get(dma.wr_error)
        return rig, [writer], []

    run_bounded(factory, max_cycles=60_000, tmp_path=tmp_path, name="sram")
    for (addr, length), g in zip(reads, got):
        np.testing.assert_array_equal(g, mem[addr:addr + length])


def test_out_of_range_is_decerr(tmp_path):
    f = CFG.floats_per_beat

    def factory():
        rig = Rig([])
        dma = rig.dma

        async def tb(ctx):
            ctx.set(dma.rd_data.ready, 1)
            await stream_put(ctx, dma.rd_cmd, [{"addr": WORDS - f, "length": 2 * f}])
            for _ in range(100):
                await ctx.tick()
            assert ctx.get(dma.rd_error)
            assert ctx.get(dma.rd_error_code) == 2        # DECERR
            assert ctx.get(dma.rd_error_addr) == WORDS * 4
        return rig, [tb], []

    run_bounded(factory, max_cycles=2000, tmp_path=tmp_path, name="sram_decerr")
