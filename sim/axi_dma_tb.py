"""cocotb testbench of the DMA engines' generated Verilog (``Dma``: read + write on ``m_axi``)
against cocotbext-axi's AxiRam, with its pause generators stalling every AXI channel.

Run through :func:`ef_train_hdl.cosim.run_cocotb` (``tests/test_axi_dma_verilator.py``). The
Verilog is generated with ``axi_ports`` so the AXI port is ``m_axi_araddr`` etc. and AxiRam
binds to it with ``AxiBus.from_prefix(dut, "m_axi")``. Inputs (``inputs.npz``):

- ``mem``: uint32 initial memory (byte address 0 = ``mem[0]``),
- ``rd_cmds`` / ``wr_cmds``: int64 ``[n, 2]`` (word address, length in words),
- ``wr_src``: uint32 words; command ``(a, n)`` writes ``wr_src[a:a + n]`` to words ``a..``.

Environment: ``WORDS_PER_BEAT``, ``PAUSE`` (probability a channel pauses in a cycle),
``SEED``. Outputs: ``rd_words`` (uint32, what the read stream delivered, in order),
``rd_last`` (beat indices flagged ``last``), ``mem`` (memory after the writes), ``errors``
(``[rd_error, wr_error]``), ``cycles``. The comparisons run in pytest.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiRam

from ef_train_hdl import cosim

ADDR_BITS = 30  # command_layout: addr_width - 2 bits per field (addr_width = 32)


def pauses(rng, p):
    while True:
        yield rng.random() < p


async def put(dut, name, items, rng, idle):
    """Drive stream ``name`` with ``items`` (ints), random idle cycles between beats."""
    clk = dut.clk
    valid, payload, ready = (getattr(dut, f"{name}__{m}") for m in ("valid", "payload", "ready"))
    i = 0
    while i < len(items):
        show = rng.random() >= idle
        valid.value = int(show)
        payload.value = items[i]
        await ReadOnly()
        handshake = show and int(ready.value)
        await RisingEdge(clk)
        i += bool(handshake)
    valid.value = 0


async def get(dut, name, count, rng, stall):
    clk = dut.clk
    valid, payload, ready = (getattr(dut, f"{name}__{m}") for m in ("valid", "payload", "ready"))
    got = []
    while len(got) < count:
        take = rng.random() >= stall
        ready.value = int(take)
        await ReadOnly()
        if take and int(valid.value):
            got.append(int(payload.value))
        await RisingEdge(clk)
    ready.value = 0
    return got


@cocotb.test()
async def dma_read_write(dut):
    data = cosim.tb_inputs()
    w = int(os.environ["WORDS_PER_BEAT"])
    pause = float(os.environ["PAUSE"])
    rng = random.Random(int(os.environ["SEED"]))
    mem = data["mem"].astype(np.uint32)
    rd_cmds = [tuple(int(x) for x in c) for c in data["rd_cmds"]]
    wr_cmds = [tuple(int(x) for x in c) for c in data["wr_cmds"]]
    src = data["wr_src"].astype(np.uint32)

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=mem.size * 4)
    ram.write(0, mem.tobytes())
    for channel in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
                    ram.read_if.ar_channel, ram.read_if.r_channel):
        channel.set_pause_generator(pauses(random.Random(rng.random()), pause))

    for name in ("rd_cmd", "wr_cmd", "wr_data"):
        getattr(dut, f"{name}__valid").value = 0
    dut.rd_data__ready.value = 0
    dut.rd_clear.value = 0
    dut.wr_clear.value = 0
    dut.rst.value = 1
    for _ in range(4):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    beats = []
    for a, n in wr_cmds:
        words = [int(x) for x in src[a:a + n]] + [0xDEADBEEF] * (-n % w)
        for i in range(0, len(words), w):
            beats.append(sum(x << (32 * j) for j, x in enumerate(words[i:i + w])))
    n_read_beats = sum(-(-n // w) for _, n in rd_cmds)
    cycles = 0

    async def count_cycles():
        nonlocal cycles
        while True:
            await RisingEdge(dut.clk)
            cycles += 1
    cocotb.start_soon(count_cycles())

    tasks = [
        cocotb.start_soon(put(dut, "rd_cmd", [a | n << ADDR_BITS for a, n in rd_cmds],
                              random.Random(rng.random()), pause)),
        cocotb.start_soon(put(dut, "wr_cmd", [a | n << ADDR_BITS for a, n in wr_cmds],
                              random.Random(rng.random()), pause)),
        cocotb.start_soon(put(dut, "wr_data", beats, random.Random(rng.random()), pause)),
    ]
    read_beats = await get(dut, "rd_data", n_read_beats, random.Random(rng.random()), pause)
    for task in tasks:
        await task
    for _ in range(100_000):
        await RisingEdge(dut.clk)
        await ReadOnly()
        if not int(dut.wr_busy.value) and not int(dut.rd_busy.value):
            break
    await RisingEdge(dut.clk)

    words, lasts = [], []
    for index, payload in enumerate(read_beats):
        value = payload & ((1 << (32 * w)) - 1)
        count = (payload >> (32 * w)) & 0b111
        if payload >> (32 * w + 3) & 1:
            lasts.append(index)
        words.extend((value >> (32 * j)) & 0xFFFFFFFF for j in range(count))
    cosim.tb_save_outputs(
        rd_words=np.array(words, dtype=np.uint32),
        rd_last=np.array(lasts, dtype=np.int64),
        mem=np.frombuffer(ram.read(0, mem.size * 4), dtype=np.uint32),
        errors=np.array([int(dut.rd_error.value), int(dut.wr_error.value)]),
        busy=np.array([int(dut.rd_busy.value), int(dut.wr_busy.value)]),
        cycles=np.array(cycles))
