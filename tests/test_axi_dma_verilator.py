"""The DMA engines' generated Verilog (``Dma``, read + write on ``m_axi``) under cocotb +
Verilator against cocotbext-axi's AxiRam with pause generators on every channel: an
independent AXI subordinate, next to the Amaranth-simulator tests' own model. Read data and
the memory after the writes are compared here with numpy."""

import random
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog

from ef_train_hdl import cosim
from ef_train_hdl.axi.dma import Dma
from ef_train_hdl.axi.signature import axi_ports
from ef_train_hdl.config import AcceleratorConfig

pytestmark = pytest.mark.verilator

TESTBENCH = Path(__file__).resolve().parents[1] / "sim" / "axi_dma_tb.py"
MEM_WORDS = 1 << 14


def commands(rng, w, lo, hi, count):
    """Disjoint runs in words [lo, hi): random lengths, 1 word, partial beats, 4 KiB crossings,
    a full 256-beat burst."""
    cmds, used = [], np.zeros(MEM_WORDS, bool)
    lengths = [1, w + 1, 256 * w, 1500, 3] + [rng.randint(1, 900) for _ in range(count)]
    for length in lengths:
        while True:
            addr = rng.randrange(lo, hi - length) // w * w
            span = slice(addr, addr + -(-length // w) * w)
            if not used[span].any():
                used[span] = True
                cmds.append((addr, length))
                break
    return cmds


@pytest.mark.parametrize("pause", [0.0, 0.4])
def test_dma_against_cocotbext_axiram(pause, tmp_path, cosim_cache):
    cfg = AcceleratorConfig(max_outstanding_reads=4)
    w = cfg.floats_per_beat
    rng = random.Random(17)
    mem = np.random.default_rng(1).integers(0, 1 << 32, MEM_WORDS, dtype=np.uint32)
    src = np.random.default_rng(2).integers(0, 1 << 32, MEM_WORDS, dtype=np.uint32)
    rd = commands(rng, w, 0, MEM_WORDS // 2, 6)
    wr = commands(rng, w, MEM_WORDS // 2, MEM_WORDS, 6)
    dut = Dma(cfg)
    text = verilog.convert(dut, name="ef_dma", ports=axi_ports(dut))
    result = cosim.run_cocotb(
        text, TESTBENCH, top="ef_dma", run_dir=tmp_path, cache_dir=cosim_cache,
        inputs={"mem": mem, "rd_cmds": np.array(rd), "wr_cmds": np.array(wr), "wr_src": src},
        env={"WORDS_PER_BEAT": str(w), "PAUSE": str(pause), "SEED": "5"}, timeout=600)
    out = result.outputs
    assert list(out["errors"]) == [0, 0] and list(out["busy"]) == [0, 0]
    np.testing.assert_array_equal(out["rd_words"],
                                  np.concatenate([mem[a:a + n] for a, n in rd]))
    assert list(out["rd_last"]) == list(np.cumsum([-(-n // w) for _, n in rd]) - 1)
    expected = mem.copy()
    for a, n in wr:
        expected[a:a + n] = src[a:a + n]
    np.testing.assert_array_equal(out["mem"], expected)
    beats = sum(-(-n // w) for _, n in rd + wr)
    print(f"pause {pause}: {beats} beats read+written in {int(out['cycles'])} cycles")
