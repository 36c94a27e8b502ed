"""An AXI4-Lite manager for Amaranth-simulator testbenches: the host side of the registers.

:func:`axil_write` and :func:`axil_read` drive an :class:`~ef_train_hdl.axi.signature.
AXI4LiteSignature` port (the accelerator's ``s_axil``) from an async testbench, with random
delays and ``bready``/``rready`` stalls, and check the subordinate's handshake rules. The
CSR tests and the ``sim`` runtime backend use them.
"""

import random

__all__ = ["axil_write", "axil_read"]


async def axil_write(ctx, bus, addr, data, *, strb=0xF, rng=None, max_delay=3, timeout=200):
    """One AXI4-Lite write: AW and W raised after independent random delays (so either may
    come first), ``bready`` stalled at random. Returns ``bresp``. Checks that the subordinate
    keeps ``bvalid`` until the handshake."""
    rng = rng or random.Random(0)
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


async def axil_read(ctx, bus, addr, *, rng=None, max_delay=3, timeout=200):
    """One AXI4-Lite read with a random address delay and random ``rready`` stalls.
    Returns ``(rdata, rresp)``."""
    rng = rng or random.Random(0)
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
