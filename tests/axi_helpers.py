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


# -- AXI4-Lite manager for the CSR tests: the package's, shared with the sim backend ----------

from ef_train_hdl.axi.lite_master import axil_read, axil_write  # noqa: E402,F401
