"""The ULX3S flow (ef_train_hdl.build.ecp5) and its top level (ef_train_hdl.boards.ulx3s).

The UART bridge is tested end to end in the Amaranth simulator through the serial line itself:
the testbench is the host, with a UART of its own (bytes framed and sampled here, not by the
gateware), and the answers are checked against the CSR map (ef_train_hdl.axi.csr), the
configuration and the words the test wrote — and the memory contents against where AXI puts a
32-bit word in a wide beat. The arbiter is tested with two managers at once. The full build of
the tiny preset runs the real tools and is marked slow.
"""

import json
import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from ef_train_hdl.axi.csr import CSR_ID, CSR_VERSION, reg
from ef_train_hdl.axi.signature import Resp
from ef_train_hdl.axi.sram import AxiSram
from ef_train_hdl.boards.ulx3s import (STATUS_BAD_COMMAND, AxiArbiter, Command, Ulx3sSoC,
                                       Ulx3sTop, pll_params, uart_divisor)
from ef_train_hdl.build.ecp5 import EBR_BYTES, read_nextpnr_report, resources_used, sram_bytes
from ef_train_hdl.config import preset

DIVISOR = 4           # cycles per UART bit in the simulations
TIMEOUT = 300         # the bridge's command timeout in the simulations
MAX_CYCLES = 40_000


# -- the host's UART ---------------------------------------------------------------------------

async def uart_send(ctx, line, data):
    """Frame ``data`` on ``line``: start bit, 8 data bits LSB first, stop bit."""
    for byte in data:
        for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
            ctx.set(line, bit)
            await ctx.tick().repeat(DIVISOR)


async def uart_receive(ctx, line, count, timeout=20_000):
    """Sample ``count`` bytes off ``line`` in the middle of each bit."""
    out = []
    for _ in range(count):
        for _ in range(timeout):
            if not ctx.get(line):
                break
            await ctx.tick()
        else:
            raise AssertionError(f"no start bit after {len(out)} of {count} bytes")
        await ctx.tick().repeat(DIVISOR // 2)
        assert ctx.get(line) == 0, "start bit too short"
        byte = 0
        for i in range(8):
            await ctx.tick().repeat(DIVISOR)
            byte |= ctx.get(line) << i
        await ctx.tick().repeat(DIVISOR)
        assert ctx.get(line) == 1, f"byte {len(out)}: no stop bit"
        out.append(byte)
    return bytes(out)


def request(command, addr, data=None):
    out = bytes([command]) + addr.to_bytes(4, "little")
    return out + (data.to_bytes(4, "little") if data is not None else b"")


async def transact(ctx, soc, command, addr, data=None):
    """One command through the serial line; returns ``(status, word)``."""
    await uart_send(ctx, soc.uart_rx, request(command, addr, data))
    answer = await uart_receive(ctx, soc.uart_tx, 5)
    return answer[0], int.from_bytes(answer[1:], "little")


def _soc_sim(cfg, dram_bytes, testbench):
    soc = Ulx3sSoC(cfg, dram_bytes=dram_bytes, divisor=DIVISOR, timeout_cycles=TIMEOUT,
                   led_stretch=8)
    sim = Simulator(soc)
    sim.add_clock(1e-8)
    done = []

    async def tb(ctx):
        await testbench(ctx, soc)
        done.append(True)

    sim.add_testbench(tb)
    return soc, sim, done


def run_soc(cfg, dram_bytes, testbench, tmp_path, name):
    """Simulate the SoC under ``testbench(ctx, soc)``; on a failure, again with a VCD under
    ``tmp_path`` that the error names."""
    soc, sim, done = _soc_sim(cfg, dram_bytes, testbench)

    def run():
        cycles = 0
        while not done and cycles < MAX_CYCLES:     # a hang fails, it does not hang
            cycles += 500
            sim.run_until(1e-8 * cycles)
        if not done:
            raise AssertionError(f"{name}: the testbench did not finish within "
                                 f"{MAX_CYCLES} cycles")

    try:
        run()
    except Exception as error:
        # Again from the start (the run is deterministic), this time with a waveform.
        vcd = tmp_path / f"{name}.vcd"
        soc, sim, done = _soc_sim(cfg, dram_bytes, testbench)
        with sim.write_vcd(str(vcd)):
            try:
                run()
            except Exception:
                pass
        raise AssertionError(f"{error} (waveform: {vcd})") from error
    return soc


# -- the bridge, through the serial line --------------------------------------------------

def test_bridge_reads_the_identity_registers(tmp_path):
    cfg = preset("tiny")
    seen = {}

    async def tb(ctx, soc):
        seen["id"] = await transact(ctx, soc, Command.CSR_READ, reg("ID").offset)
        seen["version"] = await transact(ctx, soc, Command.CSR_READ, reg("VERSION").offset)
        seen["tm"] = await transact(ctx, soc, Command.CSR_READ, reg("TM").offset)
        seen["width"] = await transact(ctx, soc, Command.CSR_READ,
                                       reg("DMA_DATA_WIDTH").offset)

    run_soc(cfg, 4096, tb, tmp_path, "bridge_id")
    assert seen["id"] == (Resp.OKAY, CSR_ID)
    assert CSR_ID.to_bytes(4, "big") == b"EFTR"
    assert seen["version"] == (Resp.OKAY, CSR_VERSION)
    assert seen["tm"] == (Resp.OKAY, cfg.tm)
    assert seen["width"] == (Resp.OKAY, cfg.dma_data_width)


def test_bridge_writes_and_reads_registers(tmp_path):
    seen = {}
    program = reg("PROGRAM_ADDR_LO").offset

    async def tb(ctx, soc):
        seen["write"] = await transact(ctx, soc, Command.CSR_WRITE, program, 0x0001_2340)
        seen["read"] = await transact(ctx, soc, Command.CSR_READ, program)
        # A byte that is no command gets its own answer and costs nothing else.
        await uart_send(ctx, soc.uart_rx, b"\x7e")
        seen["bad"] = await uart_receive(ctx, soc.uart_tx, 5)
        seen["after"] = await transact(ctx, soc, Command.CSR_READ, reg("ID").offset)

    run_soc(preset("tiny"), 4096, tb, tmp_path, "bridge_csr")
    assert seen["write"] == (Resp.OKAY, 0)
    assert seen["read"] == (Resp.OKAY, 0x0001_2340)
    assert seen["bad"] == bytes([STATUS_BAD_COMMAND, 0, 0, 0, 0])
    assert seen["after"] == (Resp.OKAY, CSR_ID)


def test_bridge_writes_and_reads_the_memory(tmp_path):
    cfg = preset("tiny")
    dram_bytes = 4096
    rng = random.Random(7)
    # Words in every lane of a beat, at the bottom and the top of the memory.
    addrs = [0x000, 0x004, 0x008, 0x00C, 0x7F4, dram_bytes - 4]
    words = {a: rng.getrandbits(32) for a in addrs}
    seen = {}

    async def tb(ctx, soc):
        seen["writes"] = [await transact(ctx, soc, Command.MEM_WRITE, a, w)
                          for a, w in words.items()]
        seen["reads"] = {a: await transact(ctx, soc, Command.MEM_READ, a)
                         for a in reversed(addrs)}
        seen["outside"] = await transact(ctx, soc, Command.MEM_READ, dram_bytes)
        per_beat = cfg.bytes_per_beat
        seen["beats"] = {a: ctx.get(soc.ram.memory.data[a // per_beat]) for a in addrs}

    run_soc(cfg, dram_bytes, tb, tmp_path, "bridge_mem")
    assert seen["writes"] == [(Resp.OKAY, 0)] * len(addrs)
    assert seen["reads"] == {a: (Resp.OKAY, words[a]) for a in addrs}
    assert seen["outside"] == (Resp.DECERR, 0)
    # AXI's byte lanes: the word at byte address a sits in bits 8 * (a % beat bytes) up.
    for a in addrs:
        shift = 8 * (a % cfg.bytes_per_beat)
        assert (seen["beats"][a] >> shift) & 0xFFFF_FFFF == words[a], hex(a)


def test_bridge_drops_a_command_that_stops_coming(tmp_path):
    seen = {}

    async def tb(ctx, soc):
        await uart_send(ctx, soc.uart_rx, request(Command.CSR_WRITE, 0x018)[:3])
        await ctx.tick().repeat(TIMEOUT + 50)
        seen["id"] = await transact(ctx, soc, Command.CSR_READ, reg("ID").offset)
        seen["program"] = await transact(ctx, soc, Command.CSR_READ,
                                         reg("PROGRAM_ADDR_LO").offset)

    run_soc(preset("tiny"), 4096, tb, tmp_path, "bridge_timeout")
    assert seen["id"] == (Resp.OKAY, CSR_ID)
    assert seen["program"] == (Resp.OKAY, 0)


# -- the arbiter: two managers at once ----------------------------------------------------

async def axi_write(ctx, bus, addr, beats, bytes_per_beat, rng):
    ctx.set(bus.awaddr, addr)
    ctx.set(bus.awlen, len(beats) - 1)
    ctx.set(bus.awsize, bytes_per_beat.bit_length() - 1)
    ctx.set(bus.awburst, 1)
    ctx.set(bus.awvalid, 1)
    await ctx.tick().until(bus.awready)
    ctx.set(bus.awvalid, 0)
    for i, beat in enumerate(beats):
        ctx.set(bus.wdata, beat)
        ctx.set(bus.wstrb, (1 << bytes_per_beat) - 1)
        ctx.set(bus.wlast, i == len(beats) - 1)
        ctx.set(bus.wvalid, 1)
        await ctx.tick().until(bus.wready)
        ctx.set(bus.wvalid, 0)
        if rng.random() < 0.3:                      # a gap between beats
            await ctx.tick().repeat(rng.randint(1, 3))
    ctx.set(bus.bready, 1)
    (bresp,) = await ctx.tick().sample(bus.bresp).until(bus.bvalid)
    ctx.set(bus.bready, 0)
    return bresp


async def axi_read(ctx, bus, addr, n, bytes_per_beat, rng):
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arlen, n - 1)
    ctx.set(bus.arsize, bytes_per_beat.bit_length() - 1)
    ctx.set(bus.arburst, 1)
    ctx.set(bus.arvalid, 1)
    await ctx.tick().until(bus.arready)
    ctx.set(bus.arvalid, 0)
    out = []
    while len(out) < n:
        ready = rng.random() < 0.7
        ctx.set(bus.rready, ready)
        _, _, rvalid, rdata, rlast = await ctx.tick().sample(bus.rvalid, bus.rdata, bus.rlast)
        if rvalid and ready:
            out.append(rdata)
            assert rlast == (len(out) == n)
    ctx.set(bus.rready, 0)
    return out


def test_arbiter_serves_two_managers_at_once():
    width, bpb = 64, 8
    from amaranth.lib import wiring
    m = Module()
    m.submodules.arb = arb = AxiArbiter(data_width=width, addr_width=32)
    m.submodules.ram = ram = AxiSram(data_width=width, addr_width=32, depth=256, id_width=2)
    wiring.connect(m, arb.s, ram.bus)
    rng0, rng1 = random.Random(1), random.Random(2)
    data0 = [rng0.getrandbits(width) for _ in range(64)]
    data1 = [rng1.getrandbits(width) for _ in range(64)]
    got = {}

    def manager(bus, base, data, rng, key):
        async def tb(ctx):
            resps = []
            for k in range(0, len(data), 16):          # 16-beat bursts
                resps.append(await axi_write(ctx, bus, base + k * bpb, data[k:k + 16], bpb,
                                             rng))
            back = []
            for k in range(0, len(data), 8):
                back += await axi_read(ctx, bus, base + k * bpb, 8, bpb, rng)
            got[key] = (resps, back)
        return tb

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(manager(arb.m0, 0x000, data0, rng0, 0))
    sim.add_testbench(manager(arb.m1, 0x400, data1, rng1, 1))
    sim.run_until(1e-8 * 5000)
    assert set(got) == {0, 1}, "a manager did not finish"
    assert got[0] == ([Resp.OKAY] * 4, data0)
    assert got[1] == ([Resp.OKAY] * 4, data1)


# -- parameters -------------------------------------------------------------------------------

@pytest.mark.parametrize("fout", [50.0, 40.0, 62.5, 75.0, 100.0])
def test_pll_params_make_the_clock(fout):
    p = pll_params(25.0, fout)
    fpfd = 25.0 / p["clki_div"]
    assert 3.125 <= fpfd <= 400
    assert 400 <= fpfd * p["clkfb_div"] * p["clkop_div"] <= 800
    assert fpfd * p["clkfb_div"] == pytest.approx(fout, rel=1e-6)
    assert p["fout_mhz"] == pytest.approx(fout, rel=1e-6)


def test_pll_params_match_ecppll_at_50_mhz():
    # Project Trellis's `ecppll -i 25 -o 50` writes CLKI_DIV 1, CLKFB_DIV 2, CLKOP_DIV 12,
    # CLKOP_CPHASE 5.
    p = pll_params(25.0, 50.0)
    assert (p["clki_div"], p["clkfb_div"], p["clkop_div"], p["clkop_cphase"]) == (1, 2, 12, 5)


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="dram_bytes"):
        Ulx3sSoC(preset("tiny"), dram_bytes=100, divisor=4)
    with pytest.raises(ValueError, match="baud"):
        uart_divisor(50e6, 20e6)
    assert uart_divisor(50e6, 115_200) == 434
    with pytest.raises(ValueError, match="PLL"):
        pll_params(25.0, 500.0)


def test_build_refuses_an_unknown_router(tmp_path):
    from ef_train_hdl.boards import board
    from ef_train_hdl.build.ecp5 import build
    with pytest.raises(ValueError, match="router must be 'router1' or 'router2'"):
        build(board("ulx3s"), preset("tiny"), tmp_path, clock_mhz=25.0,
              check_fit=lambda used: None, progress=lambda msg: None, router="router3")


def test_sram_bytes_fills_rows_of_byte_columns():
    cfg = preset("ulx3s")                      # 128-bit DMA: 16 byte columns
    assert sram_bytes(cfg, 104) == 6 * 16 * EBR_BYTES
    assert sram_bytes(preset("tiny"), 8) == 8 * EBR_BYTES
    with pytest.raises(ValueError, match="EBR"):
        sram_bytes(cfg, 15)


def test_resources_used_counts_lut_positions():
    cells = {"LUT4": 100, "CCU2C": 10, "TRELLIS_DPR16X4": 2, "TRELLIS_FF": 50,
             "MULT18X18D": 3, "ALU54B": 1, "DP16KD": 4, "PDPW16KD": 1}
    assert resources_used(cells) == {"lut": 128, "ff": 50, "dsp": 3, "ebr": 5}


def test_read_nextpnr_report(tmp_path):
    # The shape of nextpnr's --report (fmax per clock, utilisation per cell type, critical
    # paths as steps with a type and a delay in ns), numbers made up.
    def step(kind, delay, a, b):
        return {"type": kind, "delay": delay, "from": {"cell": a}, "to": {"cell": b}}

    report = {
        "fmax": {"$glbnet$clk": {"achieved": 31.894, "constraint": 50.0}},
        "utilization": {"TRELLIS_COMB": {"used": 10, "available": 20},
                        "DCUA": {"used": 0, "available": 2}},
        "critical_paths": [{"from": "posedge $glbnet$clk", "to": "posedge $glbnet$clk",
                            "path": [step("clk-to-q", 0.5, "ff_a", "ff_a"),
                                     step("routing", 2.0, "ff_a", "lut_b"),
                                     step("logic", 0.25, "lut_b", "lut_b"),
                                     step("routing", 1.0, "lut_b", "ff_c"),
                                     step("setup", 0.1, "ff_c", "ff_c")]}],
    }
    (tmp_path / "r.json").write_text(json.dumps(report))
    got = read_nextpnr_report(tmp_path / "r.json")
    assert got["fmax_mhz"] == {"$glbnet$clk": 31.89}
    assert got["timing_met"] is False
    assert got["nextpnr_utilisation"] == {"TRELLIS_COMB": {"used": 10, "available": 20}}
    path = got["critical_path"]["posedge $glbnet$clk -> posedge $glbnet$clk"]
    assert path == {"delay_ns": 3.85, "logic_ns": 0.25, "routing_ns": 3.0, "logic_steps": 1,
                    "from": "ff_a", "to": "ff_c"}


# -- the top level ------------------------------------------------------------------------------

def test_top_elaborates_for_the_ulx3s_preset():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    cfg = preset("ulx3s")
    top = Ulx3sTop(cfg, dram_bytes=192 * 1024, clock_mhz=50.0)
    plan = ULX3S_85F_Platform().prepare(top, name="ulx3s")
    rtlil = plan.files["ulx3s.il"]
    assert "EHXPLLL" in rtlil
    lpf = plan.files["ulx3s.lpf"]
    for site in ("G2", "M1", "L4", "B2", "D6"):      # clk25, uart rx/tx, led 0, PWR button
        assert f'SITE "{site}"' in lpf
    assert 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ' in lpf
    assert top.soc.ram.depth == 192 * 1024 // cfg.bytes_per_beat
    assert top.soc.divisor == 434                    # 115200 baud at 50 MHz


@pytest.mark.slow
def test_build_of_the_tiny_preset(tmp_path):
    from ef_train_hdl.boards import board
    from ef_train_hdl.build.ecp5 import build
    seen = []
    result = build(board("ulx3s"), preset("tiny"), tmp_path, clock_mhz=50.0,
                   check_fit=seen.append, progress=lambda msg: None)
    assert (tmp_path / result["bitstream"]).stat().st_size > 100_000
    assert seen == [result["resources_used"]]
    assert set(result["fmax_mhz"]) and all(v > 0 for v in result["fmax_mhz"].values())
    report = json.loads((tmp_path / "report_nextpnr.json").read_text())
    assert report["utilization"]["MULT18X18D"]["used"] == result["resources_used"]["dsp"]
    assert (tmp_path / "build.sh").read_text().count("yowasp-") == 3
