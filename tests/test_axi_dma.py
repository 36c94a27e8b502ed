"""DMA read/write engines against the AXI4 RAM model, with random stalls on every channel.

Data is compared with the numpy memory; burst splitting is compared with an independent
Python computation of the AXI rules (never cross 4 KiB, at most max_burst_beats beats, each
burst as long as those rules allow); the RAM model raises on any protocol violation.
"""

import random

import numpy as np
import pytest
from amaranth.hdl import Elaboratable

from ef_train_hdl.axi.common import DmaError
from ef_train_hdl.axi.dma_read import DmaRead
from ef_train_hdl.axi.dma_write import DmaWrite
from ef_train_hdl.axi.dram_model import AxiProtocolError, AxiRamModel
from ef_train_hdl.axi.signature import Resp
from ef_train_hdl.config import AcceleratorConfig

from axi_helpers import run_bounded
from stream_helpers import stream_get, stream_put

CONFIGS = {
    "128b": AcceleratorConfig(),
    "32b_burst16": AcceleratorConfig(dma_data_width=32, max_burst_beats=16,
                                     max_outstanding_reads=2),
    "64b_burst64": AcceleratorConfig(dma_data_width=64, max_burst_beats=64,
                                     max_outstanding_reads=8),
}
MEM_WORDS = 1 << 14  # 64 KiB


def expected_bursts(cfg, addr_words, length):
    """(byte address, beats) of each burst, from the AXI rules alone."""
    bpb = cfg.bytes_per_beat
    addr = addr_words * 4
    beats = -(-length // cfg.floats_per_beat)
    bursts = []
    while beats:
        n = min(beats, cfg.max_burst_beats, (4096 - addr % 4096) // bpb)
        bursts.append((addr, n))
        addr += n * bpb
        beats -= n
    return bursts


def random_commands(cfg, rng, count, max_len=1500):
    w = cfg.floats_per_beat
    cmds = []
    for _ in range(count):
        length = rng.choice([1, w - 1 or 1, w + 1, rng.randint(1, max_len),
                             cfg.max_burst_beats * w, rng.randint(1, 40)])
        addr = rng.randrange(0, MEM_WORDS - length) // w * w
        cmds.append((addr, length))
    return cmds


def beats_to_words(cfg, beats):
    """Words of the read beats, with the count/last checks of the stream contract."""
    w = cfg.floats_per_beat
    out = []
    for beat in beats:
        value = int(beat.data)
        words = int(beat.words)
        out.extend((value >> (32 * i)) & 0xFFFFFFFF for i in range(words))
    return out


def read_factory(cfg, commands, *, seed, mem, model_kw=None, results, stall=0.3):
    def factory():
        rng = random.Random(seed)
        dut = DmaRead(cfg)
        ram = AxiRamModel(dut.axi, mem.copy(), max_burst_beats=cfg.max_burst_beats,
                          rng=rng.randrange(1 << 30), **(model_kw or {}))
        n_beats = sum(-(-length // cfg.floats_per_beat) for _, length in commands)
        results.clear()
        results["ram"] = ram
        results["dut"] = dut

        async def producer(ctx):
            await stream_put(ctx, dut.cmd, [{"addr": a, "length": n} for a, n in commands],
                             rng=random.Random(seed + 1), idle_prob=stall, timeout=5000)

        async def consumer(ctx):
            results["beats"] = await stream_get(ctx, dut.data, n_beats,
                                                rng=random.Random(seed + 2), stall_prob=stall,
                                                timeout=2000)
            for _ in range(40):  # the engine must go idle once the last beat is out
                await ctx.tick()
            results["busy"] = ctx.get(dut.busy)
            results["error"] = ctx.get(dut.error)
            results["counters"] = {name: ctx.get(getattr(dut, name))
                                   for name in ("beats", "stall_addr", "stall_data",
                                                "stall_out")}
        return dut, [producer, consumer], [ram.run]
    return factory


def check_read_result(cfg, commands, mem, results):
    ram = results["ram"]
    beats = results["beats"]
    assert results["error"] == 0 and results["busy"] == 0
    # Data, count and last against the numpy memory.
    words = beats_to_words(cfg, beats)
    expected = np.concatenate([mem[a:a + n] for a, n in commands])
    np.testing.assert_array_equal(np.array(words, dtype=np.uint32), expected)
    lasts = [i for i, b in enumerate(beats) if int(b.last)]
    ends = np.cumsum([-(-n // cfg.floats_per_beat) for _, n in commands]) - 1
    assert lasts == list(ends)
    # Bursts exactly as the AXI rules and the configuration dictate.
    assert ram.reads == [b for a, n in commands for b in expected_bursts(cfg, a, n)]
    assert results["counters"]["beats"] == len(beats) == ram.read_beats


@pytest.mark.parametrize("name", list(CONFIGS))
def test_read_random(name, tmp_path):
    cfg = CONFIGS[name]
    rng = random.Random(hash(name) & 0xFFFF)
    mem = np.random.default_rng(1).integers(0, 1 << 32, MEM_WORDS, dtype=np.uint32)
    commands = random_commands(cfg, rng, 12)
    results = {}
    run_bounded(read_factory(cfg, commands, seed=7, mem=mem, results=results),
                max_cycles=60_000, tmp_path=tmp_path, name=f"read_{name}")
    check_read_result(cfg, commands, mem, results)


def test_read_outstanding_bursts_in_flight(tmp_path):
    """With a long read latency the engine keeps max_outstanding_reads bursts in flight."""
    cfg = AcceleratorConfig(max_burst_beats=16, max_outstanding_reads=4)
    mem = np.random.default_rng(2).integers(0, 1 << 32, MEM_WORDS, dtype=np.uint32)
    commands = [(0, 2048), (4096 + 64, 777)]
    results = {}
    run_bounded(read_factory(cfg, commands, seed=3, mem=mem, results=results, stall=0.0,
                             model_kw=dict(read_latency=40, r_gap=0.0, ar_stall=0.0)),
                max_cycles=20_000, tmp_path=tmp_path, name="outstanding")
    check_read_result(cfg, commands, mem, results)
    ram = results["ram"]
    assert ram.max_reads_in_flight == cfg.max_outstanding_reads
    print(f"outstanding: {ram.read_beats} beats, at most {ram.max_reads_in_flight} bursts "
          f"in flight")


def test_read_exact_boundaries(tmp_path):
    """One word, exactly 256 beats on a 4 KiB page, 256 beats straddling a page, partial beats."""
    cfg = CONFIGS["128b"]
    mem = np.random.default_rng(3).integers(0, 1 << 32, MEM_WORDS, dtype=np.uint32)
    commands = [(0, 1), (1024, 1024), (1024 + 512, 1024), (4, 3), (8, 5), (4096 - 4, 6)]
    results = {}
    run_bounded(read_factory(cfg, commands, seed=4, mem=mem, results=results),
                max_cycles=20_000, tmp_path=tmp_path, name="boundaries")
    check_read_result(cfg, commands, mem, results)
    assert (4096, 256) in results["ram"].reads
    assert [(6144, 128), (8192, 128)] == results["ram"].reads[2:4]


def error_factory(engine, cfg, commands, *, seed, mem, errors, results, after=None):
    """Commands, some failing: collect what comes out until the engine is idle again, then
    ``clear`` and run the ``after`` command, which must work."""
    def factory():
        dut = engine(cfg)
        ram = AxiRamModel(dut.axi, mem.copy(), max_burst_beats=cfg.max_burst_beats,
                          rng=seed, errors=errors)
        results.clear()
        results.update(ram=ram, dut=dut, out=[], src=source_words(seed))
        state = {"sent": False}

        async def producer(ctx):
            await stream_put(ctx, dut.cmd, [{"addr": a, "length": n} for a, n in commands],
                             rng=random.Random(seed + 1), timeout=5000)
            state["sent"] = True

        async def data_side(ctx):
            if engine is DmaWrite:
                # Data for every command, the refused ones too: after the error the engine
                # must swallow it rather than hang the producer.
                await stream_put(ctx, dut.data, pack_beats(cfg, commands, results["src"]),
                                 rng=random.Random(seed + 2), timeout=5000)
                state["data_sent"] = True
                return
            rng = random.Random(seed + 2)
            idle = 0
            for _ in range(20_000):
                ready = rng.random() < 0.7
                ctx.set(dut.data.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(dut.data.valid,
                                                               dut.data.payload)
                if valid and ready:
                    results["out"].append(payload)
                idle = idle + 1 if state["sent"] and not ctx.get(dut.busy) else 0
                if idle > 20:
                    return
            raise AssertionError("the read engine never went idle after the error")

        async def checker(ctx):
            for _ in range(30_000):
                await ctx.tick()
                if state["sent"] and not ctx.get(dut.busy) and ctx.get(dut.error) and \
                        state.get("data_sent", engine is DmaRead):
                    break
            else:
                raise AssertionError("no error reported, or the engine stayed busy")
            for _ in range(30):
                await ctx.tick()
                assert not ctx.get(dut.busy)
            results["error_code"] = ctx.get(dut.error_code)
            results["error_addr"] = ctx.get(dut.error_addr)
            results["reads_before_clear"] = len(ram.reads)
            results["writes_before_clear"] = len(ram.writes)
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            assert not ctx.get(dut.error)
            if after is not None and engine is DmaRead:
                a, n = after
                ctx.set(dut.data.ready, 1)
                await stream_put(ctx, dut.cmd, [{"addr": a, "length": n}], timeout=2000)
                got = await stream_get(ctx, dut.data, -(-n // cfg.floats_per_beat),
                                       stall_prob=0.0, timeout=2000)
                results["after"] = beats_to_words(cfg, got)
            if after is not None and engine is DmaWrite:
                a, n = after
                await stream_put(ctx, dut.cmd, [{"addr": a, "length": n}], timeout=2000)
                await stream_put(ctx, dut.data, pack_beats(cfg, [after], results["src"]),
                                 timeout=2000)
                for _ in range(2000):
                    await ctx.tick()
                    if not ctx.get(dut.busy):
                        break
                assert not ctx.get(dut.busy) and not ctx.get(dut.error)
        procs = [producer, checker] + ([data_side] if engine is DmaWrite else [])
        return dut, procs, [ram.run] + ([data_side] if engine is DmaRead else [])
    return factory


@pytest.mark.parametrize("resp", [Resp.SLVERR, Resp.DECERR])
def test_read_bus_error_drains_and_reports(resp, tmp_path):
    cfg = CONFIGS["128b"]
    mem = np.random.default_rng(5).integers(0, 1 << 32, MEM_WORDS, dtype=np.uint32)
    commands = [(0, 300), (2048, 2000), (8000, 64)]
    bad = 2048 * 4 + 3000  # a byte inside the second command's 3rd burst (4 KiB page 2)
    results = {}
    run_bounded(error_factory(DmaRead, cfg, commands, seed=11, mem=mem, results=results,
                              errors=[(bad, bad + 1, resp)], after=(8000, 64)),
                max_cycles=40_000, tmp_path=tmp_path, name="read_error")
    assert results["error_code"] == (DmaError.SLVERR if resp == Resp.SLVERR
                                     else DmaError.DECERR)
    assert results["error_addr"] == bad // 16 * 16
    # What came out before the failing beat is the memory, in order, and nothing after it.
    words = beats_to_words(cfg, results["out"])
    expected = np.concatenate([mem[0:300], mem[2048:2048 + (bad // 16 * 16 - 8192) // 4]])
    np.testing.assert_array_equal(np.array(words, dtype=np.uint32), expected)
    # (The third command may have been issued before the error came back; its data was
    # drained, not forwarded, as the prefix check shows.) After clear the engine works again.
    np.testing.assert_array_equal(np.array(results["after"], dtype=np.uint32),
                                  mem[8000:8064])


@pytest.mark.parametrize("bad_cmd, code", [((2050, 8), DmaError.MISALIGNED),
                                           ((2048, 0), DmaError.ZERO_LENGTH)])
def test_read_bad_command_refused(bad_cmd, code, tmp_path):
    cfg = CONFIGS["128b"]
    mem = np.random.default_rng(6).integers(0, 1 << 32, MEM_WORDS, dtype=np.uint32)
    commands = [(0, 40), bad_cmd, (4000, 16)]
    results = {}
    run_bounded(error_factory(DmaRead, cfg, commands, seed=12, mem=mem, results=results,
                              errors=[], after=(100, 9)),
                max_cycles=20_000, tmp_path=tmp_path, name="read_bad_cmd")
    assert results["error_code"] == code
    assert results["error_addr"] == bad_cmd[0] * 4
    assert results["ram"].reads[:results["reads_before_clear"]] == expected_bursts(cfg, 0, 40)
    np.testing.assert_array_equal(np.array(beats_to_words(cfg, results["out"]),
                                           dtype=np.uint32), mem[0:40])
    np.testing.assert_array_equal(np.array(results["after"], dtype=np.uint32), mem[100:109])


def test_model_rejects_bad_manager(tmp_path):
    """The RAM model fails loudly on a 4 KiB crossing, an over-long burst and a dropped valid."""
    from amaranth.sim import Simulator
    from ef_train_hdl.axi.signature import AXI4Signature

    cases = {"crosses a 4 KiB boundary": (4096 - 32, 3, True),
             "longer than max_burst_beats": (0, 31, True),
             "arvalid dropped": (0, 0, False)}
    for message, (addr, arlen, hold) in cases.items():
        bus = AXI4Signature(data_width=128, addr_width=32).create()
        ram = AxiRamModel(bus, np.zeros(4096, np.uint32), max_burst_beats=16, ar_stall=0.9,
                          rng=1)

        async def manager(ctx):
            ctx.set(bus.arvalid, 1)
            ctx.set(bus.araddr, addr)
            ctx.set(bus.arlen, arlen)
            ctx.set(bus.arsize, 4)
            ctx.set(bus.arburst, 1)
            for _ in range(50):
                await ctx.tick()
                if not hold:
                    ctx.set(bus.arvalid, 0)

        sim = Simulator(_Empty())
        sim.add_clock(1e-8)
        sim.add_testbench(manager)
        sim.add_testbench(ram.run, background=True)
        with pytest.raises(AxiProtocolError, match=message):
            sim.run()


class _Empty(Elaboratable):
    """A design with only a sync domain, so that the testbench can drive a bare bus."""

    def elaborate(self, platform):
        from amaranth.hdl import Module, Signal
        m = Module()
        tick = Signal()
        m.d.sync += tick.eq(~tick)
        return m


# -- write engine ----------------------------------------------------------------------------

def source_words(seed):
    """The words to write: source word ``i`` goes to memory word ``i`` (so a misplaced write
    shows), distinct from the memory's initial contents."""
    return np.random.default_rng(1000 + seed).integers(0, 1 << 32, MEM_WORDS, dtype=np.uint32)


def pack_beats(cfg, commands, src):
    """The beats a producer sends for ``commands``; past-the-end words of a partial last beat
    are junk that must not reach the memory."""
    w = cfg.floats_per_beat
    beats = []
    for a, n in commands:
        words = list(src[a:a + n]) + [0xDEADBEEF] * (-n % w)
        for i in range(0, len(words), w):
            beats.append(sum(int(x) << (32 * j) for j, x in enumerate(words[i:i + w])))
    return beats


def write_commands(cfg, rng, count, max_len=1500):
    """Random commands writing disjoint runs (so the expected memory does not depend on the
    order of overlapping writes)."""
    w = cfg.floats_per_beat
    cmds, used = [], np.zeros(MEM_WORDS, bool)
    while len(cmds) < count:
        length = rng.choice([1, w - 1 or 1, w + 1, rng.randint(1, max_len),
                             cfg.max_burst_beats * w, rng.randint(1, 40)])
        addr = rng.randrange(0, MEM_WORDS - length) // w * w
        span = slice(addr, addr + -(-length // w) * w)
        if not used[span].any():
            used[span] = True
            cmds.append((addr, length))
    return cmds


def write_factory(cfg, commands, *, seed, mem, results, stall=0.3, model_kw=None):
    def factory():
        rng = random.Random(seed)
        dut = DmaWrite(cfg)
        ram = AxiRamModel(dut.axi, mem.copy(), max_burst_beats=cfg.max_burst_beats,
                          rng=rng.randrange(1 << 30), **(model_kw or {}))
        src = source_words(seed)
        results.clear()
        results.update(ram=ram, dut=dut, src=src, done=0)

        async def commander(ctx):
            await stream_put(ctx, dut.cmd, [{"addr": a, "length": n} for a, n in commands],
                             rng=random.Random(seed + 1), idle_prob=stall, timeout=5000)

        async def producer(ctx):
            await stream_put(ctx, dut.data, pack_beats(cfg, commands, src),
                             rng=random.Random(seed + 2), idle_prob=stall, timeout=5000)

        async def watcher(ctx):
            # Every command's ``done`` pulse, then busy low (all responses back).
            while results["done"] < len(commands):
                _, _, done = await ctx.tick().sample(dut.done)
                results["done"] += done
            for _ in range(10):
                await ctx.tick()
            results["busy"] = ctx.get(dut.busy)
            results["error"] = ctx.get(dut.error)
            results["beats"] = ctx.get(dut.beats)
        return dut, [commander, producer, watcher], [ram.run]
    return factory


def check_write_result(cfg, commands, mem, results):
    ram, src = results["ram"], results["src"]
    assert results["error"] == 0 and results["busy"] == 0
    assert results["done"] == len(commands)
    expected = mem.copy()
    for a, n in commands:
        expected[a:a + n] = src[a:a + n]
    np.testing.assert_array_equal(ram.mem, expected)
    assert ram.writes == [b for a, n in commands for b in expected_bursts(cfg, a, n)]
    assert results["beats"] == ram.write_beats == sum(n for _, n in ram.writes)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_write_random(name, tmp_path):
    cfg = CONFIGS[name]
    rng = random.Random(hash(name) & 0xFFFF)
    mem = np.random.default_rng(7).integers(0, 1 << 32, MEM_WORDS, dtype=np.uint32)
    commands = write_commands(cfg, rng, 10)
    results = {}
    run_bounded(write_factory(cfg, commands, seed=21, mem=mem, results=results),
                max_cycles=60_000, tmp_path=tmp_path, name=f"write_{name}")
    check_write_result(cfg, commands, mem, results)


def test_write_exact_boundaries(tmp_path):
    """One word, 256 beats on one page, 256 beats across a page, partial last beats."""
    cfg = CONFIGS["128b"]
    mem = np.random.default_rng(8).integers(0, 1 << 32, MEM_WORDS, dtype=np.uint32)
    commands = [(0, 1), (1024, 1024), (2048 + 512, 1024), (4, 3), (8, 5), (4096 - 4, 6)]
    results = {}
    run_bounded(write_factory(cfg, commands, seed=22, mem=mem, results=results,
                              model_kw=dict(write_latency=(0, 30))),
                max_cycles=20_000, tmp_path=tmp_path, name="write_boundaries")
    check_write_result(cfg, commands, mem, results)


@pytest.mark.parametrize("resp", [Resp.SLVERR, Resp.DECERR])
def test_write_bus_error_reports_without_hang(resp, tmp_path):
    cfg = CONFIGS["128b"]
    mem = np.random.default_rng(9).integers(0, 1 << 32, MEM_WORDS, dtype=np.uint32)
    commands = [(0, 300), (2048, 2000), (8000, 64)]
    bad = 2048 * 4 + 5000  # in the second command's burst starting at byte 12288
    results = {}
    run_bounded(error_factory(DmaWrite, cfg, commands, seed=13, mem=mem, results=results,
                              errors=[(bad, bad + 1, resp)], after=(10000, 37)),
                max_cycles=40_000, tmp_path=tmp_path, name="write_error")
    assert results["error_code"] == (DmaError.SLVERR if resp == Resp.SLVERR
                                     else DmaError.DECERR)
    assert results["error_addr"] == bad // 4096 * 4096
    ram, src = results["ram"], results["src"]
    np.testing.assert_array_equal(ram.mem[0:300], src[0:300])
    # The failing burst was not written; after clear the engine writes again.
    np.testing.assert_array_equal(ram.mem[3072:4096], mem[3072:4096])
    np.testing.assert_array_equal(ram.mem[10000:10037], src[10000:10037])


@pytest.mark.parametrize("bad_cmd, code", [((2050, 8), DmaError.MISALIGNED),
                                           ((2048, 0), DmaError.ZERO_LENGTH)])
def test_write_bad_command_refused(bad_cmd, code, tmp_path):
    cfg = CONFIGS["128b"]
    mem = np.random.default_rng(10).integers(0, 1 << 32, MEM_WORDS, dtype=np.uint32)
    commands = [(0, 40), bad_cmd, (4000, 16)]
    results = {}
    run_bounded(error_factory(DmaWrite, cfg, commands, seed=14, mem=mem, results=results,
                              errors=[], after=(100, 9)),
                max_cycles=20_000, tmp_path=tmp_path, name="write_bad_cmd")
    assert results["error_code"] == code
    assert results["error_addr"] == bad_cmd[0] * 4
    ram, src = results["ram"], results["src"]
    assert ram.writes[:results["writes_before_clear"]] == expected_bursts(cfg, 0, 40)
    np.testing.assert_array_equal(ram.mem[0:40], src[0:40])
    np.testing.assert_array_equal(ram.mem[2048:2100], mem[2048:2100])
    np.testing.assert_array_equal(ram.mem[4000:4016], mem[4000:4016])
    np.testing.assert_array_equal(ram.mem[100:109], src[100:109])
