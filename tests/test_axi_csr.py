"""The AXI4-Lite CSR block: every register of CSR_MAP, W1C, write-1 pulses, error responses,
64-bit snapshots, AW/W in any order with random stalls; and docs/axi.md is current."""

import random
import re
from pathlib import Path

import pytest

from ef_train_hdl.axi.csr import CSR_MAP, CsrBlock, csr_markdown, csr_ports, reg
from ef_train_hdl.axi.signature import Resp
from ef_train_hdl.config import AcceleratorConfig, preset

from axi_helpers import axil_read, axil_write, run_bounded

DOC = Path(__file__).resolve().parents[1] / "docs" / "axi.md"


def expected_const(cfg):
    """What the host must read from the const registers, stated here independently."""
    return {
        "ID": int.from_bytes(b"EFTR", "big"), "VERSION": 0x00020001,
        "TM": cfg.tm, "TN": cfg.tn, "K_MAX": cfg.k_max, "STRIDE_MAX": cfg.stride_max,
        "IFM_DEPTH": cfg.ifm_depth, "WEIGHT_DEPTH": cfg.weight_depth,
        "OFM_DEPTH": cfg.ofm_depth, "DMA_DATA_WIDTH": cfg.dma_data_width,
        "ADDR_WIDTH": cfg.addr_width, "MAX_BURST_BEATS": cfg.max_burst_beats,
        "MAX_OUTSTANDING_READS": cfg.max_outstanding_reads, "MAX_CHANNELS": cfg.max_channels,
        "MAX_SIZE": cfg.max_size, "MAX_BATCH": cfg.max_batch,
        "FEATURES": cfg.bias + 2 * cfg.momentum + 4 * (cfg.mult_format == "bf16"),
    }


def run(tmp_path, body, cfg=None, name="csr", max_cycles=20_000):
    cfg = cfg or preset("ultra96", mult_format="bf16", bias=False)

    def factory():
        dut = CsrBlock(cfg)

        async def tb(ctx):
            await body(ctx, dut, cfg, random.Random(5))
        return dut, [tb], []
    run_bounded(factory, max_cycles=max_cycles, tmp_path=tmp_path, name=name)


def test_every_register(tmp_path):
    async def body(ctx, dut, cfg, rng):
        consts = expected_const(cfg)
        ports = csr_ports()
        values = {}
        for name, (access, width) in ports.items():
            if access == "ro":
                values[name] = rng.getrandbits(width)
                ctx.set(getattr(dut, name), values[name])
        seen_const = set()
        for r in CSR_MAP:
            data, resp = await axil_read(ctx, dut.bus, r.offset, rng=rng)
            assert resp == Resp.OKAY, r.name
            accesses = {f.access for f in r.fields}
            if accesses == {"const"}:
                assert data == consts[r.name], r.name
                seen_const.add(r.name)
                assert await axil_write(ctx, dut.bus, r.offset, ~data & 0xFFFFFFFF,
                                        rng=rng) == Resp.SLVERR
            elif accesses == {"ro"}:
                expect = 0
                for f in r.fields:
                    port = f.port or (r.name.lower() if f.name == "value"
                                      else f"{r.name}_{f.name}".lower())
                    bits = (values[port] >> f.port_lsb) & ((1 << f.width) - 1)
                    expect |= bits << f.lsb
                assert data == expect, r.name
                assert await axil_write(ctx, dut.bus, r.offset, 0xFFFFFFFF,
                                        rng=rng) == Resp.SLVERR
            if accesses == {"rw"}:
                new = rng.getrandbits(32)
                assert await axil_write(ctx, dut.bus, r.offset, new, rng=rng) == Resp.OKAY
                assert await axil_read(ctx, dut.bus, r.offset, rng=rng) == (new, Resp.OKAY)
                port = r.fields[0].port
                assert (ctx.get(getattr(dut, port)) >> r.fields[0].port_lsb) & 0xFFFFFFFF \
                    == new
            data, resp = await axil_read(ctx, dut.bus, r.offset, rng=rng)
            assert resp == Resp.OKAY
        assert seen_const == set(consts)
    run(tmp_path, body)


def test_wide_counter_reads_are_consistent(tmp_path):
    """LO snapshots the upper half: LO then HI is one 64-bit value of a moving counter."""
    async def body(ctx, dut, cfg, rng):
        ctx.set(dut.cycles, 0x0000_0007_FFFF_FFFF)
        lo, _ = await axil_read(ctx, dut.bus, reg("CYCLES_LO").offset, rng=rng)
        ctx.set(dut.cycles, 0x0000_0008_0000_0003)  # the counter carried into the upper half
        hi, _ = await axil_read(ctx, dut.bus, reg("CYCLES_HI").offset, rng=rng)
        assert (hi << 32 | lo) == 0x0000_0007_FFFF_FFFF
    run(tmp_path, body)


def test_ctrl_write_one_pulses(tmp_path):
    async def body(ctx, dut, cfg, rng):
        ctrl = reg("CTRL").offset
        # The pulses are sampled on every edge of a hand-driven write (AW and W together).
        for value, strb, start, soft in [(0b001, 0xF, 1, 0), (0b010, 0xF, 0, 1),
                                         (0b111, 0xF, 1, 1), (0b001, 0x0, 0, 0),
                                         (0b100, 0xF, 0, 0)]:
            count = {"s": 0, "r": 0}
            bus = dut.bus
            ctx.set(bus.awvalid, 1)
            ctx.set(bus.awaddr, ctrl)
            ctx.set(bus.wvalid, 1)
            ctx.set(bus.wdata, value)
            ctx.set(bus.wstrb, strb)
            ctx.set(bus.bready, 1)
            for _ in range(10):
                _, _, s, r, awready, wready, bvalid = await ctx.tick().sample(
                    dut.ctrl_start, dut.ctrl_soft_reset, bus.awready, bus.wready, bus.bvalid)
                count["s"] += s
                count["r"] += r
                if awready:
                    ctx.set(bus.awvalid, 0)
                if wready:
                    ctx.set(bus.wvalid, 0)
            assert (count["s"], count["r"]) == (start, soft), (value, strb)
            # Pulse bits read back as 0; irq_enable (bit 2) as written.
            data, _ = await axil_read(ctx, dut.bus, ctrl, rng=rng)
            assert data & 0b011 == 0
        assert ctx.get(dut.ctrl_irq_enable) == 1
    run(tmp_path, body)


def test_irq_status_write_one_to_clear(tmp_path):
    async def body(ctx, dut, cfg, rng):
        irq = reg("IRQ_STATUS").offset
        ctrl = reg("CTRL").offset
        ctx.set(dut.irq_status_done, 1)
        await ctx.tick()
        ctx.set(dut.irq_status_done, 0)
        await ctx.tick()
        assert await axil_read(ctx, dut.bus, irq, rng=rng) == (0b01, Resp.OKAY)
        assert not ctx.get(dut.irq)  # not enabled
        await axil_write(ctx, dut.bus, ctrl, 0b100, rng=rng)
        assert ctx.get(dut.irq)
        ctx.set(dut.irq_status_error, 1)
        await ctx.tick()
        ctx.set(dut.irq_status_error, 0)
        assert await axil_read(ctx, dut.bus, irq, rng=rng) == (0b11, Resp.OKAY)
        assert await axil_write(ctx, dut.bus, irq, 0b00, rng=rng) == Resp.OKAY
        assert (await axil_read(ctx, dut.bus, irq, rng=rng))[0] == 0b11
        await axil_write(ctx, dut.bus, irq, 0b01, rng=rng)       # clear done only
        assert (await axil_read(ctx, dut.bus, irq, rng=rng))[0] == 0b10
        assert ctx.get(dut.irq)
        await axil_write(ctx, dut.bus, irq, 0b10, strb=0, rng=rng)  # no byte written
        assert (await axil_read(ctx, dut.bus, irq, rng=rng))[0] == 0b10
        await axil_write(ctx, dut.bus, irq, 0b10, rng=rng)
        assert (await axil_read(ctx, dut.bus, irq, rng=rng))[0] == 0
        await ctx.tick()
        assert not ctx.get(dut.irq)
    run(tmp_path, body)


def test_error_responses_and_strobes(tmp_path):
    async def body(ctx, dut, cfg, rng):
        mapped = {r.offset for r in CSR_MAP}
        holes = [a for a in range(0, 0x200, 4) if a not in mapped][:5] + [0xFFC]
        for addr in holes:
            assert await axil_read(ctx, dut.bus, addr, rng=rng) == (0, Resp.DECERR)
            assert await axil_write(ctx, dut.bus, addr, 0x1234, rng=rng) == Resp.DECERR
        lo = reg("PROGRAM_ADDR_LO").offset
        assert (await axil_read(ctx, dut.bus, lo + 1, rng=rng))[1] == Resp.SLVERR
        assert await axil_write(ctx, dut.bus, lo + 2, 5, rng=rng) == Resp.SLVERR
        assert await axil_write(ctx, dut.bus, lo, 0x11223344, rng=rng) == Resp.OKAY
        assert await axil_write(ctx, dut.bus, lo, 0xAABBCCDD, strb=0b0101, rng=rng) == Resp.OKAY
        assert await axil_read(ctx, dut.bus, lo, rng=rng) == (0x11BB33DD, Resp.OKAY)
        assert ctx.get(dut.program_addr) & 0xFFFFFFFF == 0x11BB33DD
    run(tmp_path, body)


def test_random_traffic_against_a_register_model(tmp_path):
    """Back-to-back random reads/writes of the rw registers, checked against a dict."""
    async def body(ctx, dut, cfg, rng):
        model = {"PROGRAM_ADDR_LO": 0, "PROGRAM_ADDR_HI": 0}
        for _ in range(150):
            name = rng.choice(list(model))
            if rng.random() < 0.5:
                value, strb = rng.getrandbits(32), rng.getrandbits(4)
                await axil_write(ctx, dut.bus, reg(name).offset, value, strb=strb, rng=rng,
                                 max_delay=rng.choice([0, 3]))
                mask = sum(0xFF << (8 * i) for i in range(4) if strb >> i & 1)
                model[name] = (model[name] & ~mask) | (value & mask)
            else:
                got = await axil_read(ctx, dut.bus, reg(name).offset, rng=rng,
                                      max_delay=rng.choice([0, 3]))
                assert got == (model[name], Resp.OKAY), name
        assert ctx.get(dut.program_addr) == model["PROGRAM_ADDR_HI"] << 32 | \
            model["PROGRAM_ADDR_LO"]
    run(tmp_path, body, max_cycles=40_000)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_bad_parameters():
    with pytest.raises(TypeError, match="config"):
        CsrBlock("ultra96")
    with pytest.raises(ValueError, match="addr_width"):
        CsrBlock(AcceleratorConfig(), addr_width=6)


def test_docs_table_is_current():
    text = DOC.read_text()
    match = re.search(r"<!-- csr-map begin -->\n(.*?)<!-- csr-map end -->", text, re.S)
    assert match, "docs/axi.md lost its <!-- csr-map begin/end --> markers"
    assert match.group(1) == csr_markdown(), (
        "docs/axi.md's register table is stale: regenerate it with "
        "python -c 'from ef_train_hdl.axi.csr import csr_markdown; print(csr_markdown())'")
