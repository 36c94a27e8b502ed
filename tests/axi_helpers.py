"""Testbench plumbing of the AXI tests: bounded simulation runs that leave a VCD on failure.

:func:`run_bounded` builds a simulation with a factory, runs it for at most ``max_cycles``
clock cycles and fails if a testbench raised or the main testbenches did not finish in time
(a hang becomes a failure, not a hung test). On failure the (seeded, hence identical)
simulation is built and run again with a VCD under ``tmp_path``, and the error names it.
"""

from amaranth.sim import Simulator

__all__ = ["run_bounded", "SimTimeout", "PERIOD", "axil_write", "axil_read"]

PERIOD = 1e-8


class SimTimeout(AssertionError):
    """The main testbenches did not finish within the cycle bound."""


def _simulate(factory, max_cycles, vcd_path=None):
    dut, testbenches, background = factory()
    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    finished = []

    def wrap(tb):
        async def wrapped(ctx):
            await tb(ctx)
            finished.append(tb)
        return wrapped

    for tb in testbenches:
        sim.add_testbench(wrap(tb))
    for tb in background:
        sim.add_testbench(tb, background=True)

    def run():
        # In chunks, so that a finished run stops early and a hung one stops at the bound.
        cycles = 0
        while len(finished) < len(testbenches) and cycles < max_cycles:
            cycles = min(cycles + 256, max_cycles)
            sim.run_until(cycles * PERIOD)

    if vcd_path is None:
        run()
    else:
        with sim.write_vcd(str(vcd_path)):
            run()
    if len(finished) != len(testbenches):
        raise SimTimeout(f"the testbenches did not finish within {max_cycles} cycles "
                         f"({len(finished)} of {len(testbenches)} done)")


def run_bounded(factory, *, max_cycles, tmp_path, name="sim"):
    """Run ``factory() -> (dut, [testbench, ...], [background testbench, ...])``.

    Every testbench is an ``async def tb(ctx)``; the run ends when the main ones have all
    returned (background ones, like the memory model, run until then).
    """
    try:
        _simulate(factory, max_cycles)
    except AssertionError as error:
        vcd = tmp_path / f"{name}.vcd"
        try:
            _simulate(factory, max_cycles, vcd)
        except AssertionError:
            pass
        raise AssertionError(f"{error}\n(waveform: {vcd})") from error


# -- AXI4-Lite manager for the CSR tests -----------------------------------------------------

async def axil_write(ctx, bus, addr, data, *, strb=0xF, rng, max_delay=3, timeout=200):
    """One AXI4-Lite write: AW and W raised after independent random delays (so either may
    come first), ``bready`` stalled at random. Returns ``bresp``. Checks that the subordinate
    keeps ``bvalid`` until the handshake."""
    aw_delay, w_delay = rng.randint(0, max_delay), rng.randint(0, max_delay)
    aw_done = w_done = False
    for cycle in range(timeout):
        ctx.set(bus.awvalid, not aw_done and cycle >= aw_delay)
        ctx.set(bus.awaddr, addr)
        ctx.set(bus.wvalid, not w_done and cycle >= w_delay)
        ctx.set(bus.wdata, data)
        ctx.set(bus.wstrb, strb)
        _, _, awvalid, awready, wvalid, wready = await ctx.tick().sample(
            bus.awvalid, bus.awready, bus.wvalid, bus.wready)
        aw_done |= bool(awvalid and awready)
        w_done |= bool(wvalid and wready)
        if aw_done and w_done:
            break
    else:
        raise AssertionError(f"AXI4-Lite write to 0x{addr:x}: address/data not accepted")
    ctx.set(bus.awvalid, 0)
    ctx.set(bus.wvalid, 0)
    seen = False
    for _ in range(timeout):
        ready = rng.random() < 0.6
        ctx.set(bus.bready, ready)
        _, _, bvalid, bresp = await ctx.tick().sample(bus.bvalid, bus.bresp)
        assert bvalid or not seen, "bvalid dropped before the handshake"
        seen |= bool(bvalid)
        if bvalid and ready:
            ctx.set(bus.bready, 0)
            return bresp
    raise AssertionError(f"AXI4-Lite write to 0x{addr:x}: no write response")


async def axil_read(ctx, bus, addr, *, rng, max_delay=3, timeout=200):
    """One AXI4-Lite read with a random address delay and random ``rready`` stalls.
    Returns ``(rdata, rresp)``."""
    for _ in range(rng.randint(0, max_delay)):
        await ctx.tick()
    ctx.set(bus.arvalid, 1)
    ctx.set(bus.araddr, addr)
    for _ in range(timeout):
        _, _, arready = await ctx.tick().sample(bus.arready)
        if arready:
            break
    else:
        raise AssertionError(f"AXI4-Lite read of 0x{addr:x}: address not accepted")
    ctx.set(bus.arvalid, 0)
    seen = False
    for _ in range(timeout):
        ready = rng.random() < 0.6
        ctx.set(bus.rready, ready)
        _, _, rvalid, rdata, rresp = await ctx.tick().sample(bus.rvalid, bus.rdata, bus.rresp)
        assert rvalid or not seen, "rvalid dropped before the handshake"
        seen |= bool(rvalid)
        if rvalid and ready:
            ctx.set(bus.rready, 0)
            return rdata, rresp
    raise AssertionError(f"AXI4-Lite read of 0x{addr:x}: no read response")
