"""ef_train_hdl.cosim on a small component of this file's own: a two-stage integer adder.

The expected sums are Python integers computed here, independent of the hardware. This file
is also the cocotb test module that runs inside the simulator (the ``cocotb_*`` functions),
so the testbench and the checks sit side by side.
"""

import os
import re
import time

import numpy as np
import pytest

import cocotb
from amaranth.hdl import Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ef_train_hdl import cosim

pytestmark = pytest.mark.verilator


class PipelinedAdder(wiring.Component):
    """``result = a + b`` (17 bits, no overflow) two cycles after the operands; II = 1."""

    a: In(16)
    b: In(16)
    i_valid: In(1)
    result: Out(17)
    o_valid: Out(1)

    latency = 2

    def elaborate(self, platform):
        from amaranth.hdl import Module
        m = Module()
        a = Signal(16)
        b = Signal(16)
        valid = Signal()
        m.d.sync += [a.eq(self.a), b.eq(self.b), valid.eq(self.i_valid)]
        m.d.sync += [self.result.eq(a + b), self.o_valid.eq(valid)]
        return m


# -- the cocotb side (runs inside Verilator) --------------------------------------------------

@cocotb.test()
async def cocotb_adder_stream(dut):
    data = cosim.tb_inputs()
    got, cycles, total = await cosim.tb_pipeline(
        dut, {"a": data["a"], "b": data["b"]}, ["result"], latency=PipelinedAdder.latency)
    cosim.tb_save_outputs(result=np.array(got["result"], dtype=np.uint32),
                          out_cycle=np.array(cycles), cycles=np.array(total))


@cocotb.test()
async def cocotb_adder_checks_itself(dut):
    # An in-simulator check against an expectation passed by the host; the host makes the
    # expectation wrong on purpose to see the failure come back as a failure.
    offset = int(os.environ["EXPECT_OFFSET"])
    data = cosim.tb_inputs()
    got, _, _ = await cosim.tb_pipeline(
        dut, {"a": data["a"][:50], "b": data["b"][:50]}, ["result"],
        latency=PipelinedAdder.latency)
    for i, value in enumerate(got["result"]):
        expected = int(data["a"][i]) + int(data["b"][i]) + offset
        assert value == expected, f"vector {i}: got {value}, expected {expected}"


@cocotb.test()
async def cocotb_hangs_when_asked(dut):
    # Stands for a testbench stuck in Python: only a wall-clock limit can stop it.
    while os.environ.get("HANG") == "1":
        time.sleep(0.1)


# -- the pytest side --------------------------------------------------------------------------

def _operands(n=2000, seed=1):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 16, n, dtype=np.uint32)
    b = rng.integers(0, 1 << 16, n, dtype=np.uint32)
    a[:4] = [0, 0xFFFF, 0xFFFF, 1]
    b[:4] = [0, 0xFFFF, 1, 0xFFFF]
    return a, b


def test_verilog_of_names_ports():
    text = cosim.verilog_of(PipelinedAdder(), name="adder")
    assert "module adder" in text
    for direction, port in [("input", "clk"), ("input", "rst"), ("input", "a"), ("input", "b"),
                            ("input", "i_valid"), ("output", "result"), ("output", "o_valid")]:
        assert re.search(rf"^\s*{direction}\b[^;]*\b{port};", text, re.M), port


def test_verilog_of_rejects_non_component():
    with pytest.raises(TypeError, match="component must be an amaranth wiring.Component"):
        cosim.verilog_of(Signal(4))


def test_stream_through_verilator(tmp_path, cosim_cache):
    a, b = _operands()
    result = cosim.run_cocotb(PipelinedAdder(), __file__, top="adder", run_dir=tmp_path,
                              inputs={"a": a, "b": b}, env={"EXPECT_OFFSET": 0},
                              testcase="cocotb_adder_stream", cache_dir=cosim_cache)
    assert result.tests == {"cocotb_adder_stream": None}
    expected = a.astype(np.uint64) + b.astype(np.uint64)
    np.testing.assert_array_equal(result.outputs["result"], expected)
    # One result per cycle, each exactly `latency` cycles after its operands.
    np.testing.assert_array_equal(result.outputs["out_cycle"] - np.arange(len(a)),
                                  PipelinedAdder.latency)
    assert result.sim_time_ns > 0


def test_build_is_cached(tmp_path, cosim_cache):
    a, b = _operands(10)
    run = lambda sub: cosim.run_cocotb(  # noqa: E731
        PipelinedAdder(), __file__, top="adder", run_dir=tmp_path / sub,
        inputs={"a": a, "b": b}, env={"EXPECT_OFFSET": 0}, testcase="cocotb_adder_stream",
        cache_dir=cosim_cache)
    first = run("first")
    second = run("second")
    assert second.cached and second.build_seconds == 0.0
    assert second.build_dir == first.build_dir


def test_in_simulator_check_passes(tmp_path, cosim_cache):
    a, b = _operands()
    result = cosim.run_cocotb(PipelinedAdder(), __file__, top="adder", run_dir=tmp_path,
                              inputs={"a": a, "b": b}, env={"EXPECT_OFFSET": 0},
                              testcase="cocotb_adder_checks_itself", cache_dir=cosim_cache)
    assert result.tests == {"cocotb_adder_checks_itself": None}


def test_wrong_expectation_is_reported(tmp_path, cosim_cache):
    a, b = _operands()
    with pytest.raises(cosim.CosimFailure) as info:
        cosim.run_cocotb(PipelinedAdder(), __file__, top="adder", run_dir=tmp_path,
                         inputs={"a": a, "b": b}, env={"EXPECT_OFFSET": 1},
                         cache_dir=cosim_cache)
    failure = info.value
    message = str(failure)
    # Only the self-checking test fails, and the message says which, why, and where to look.
    assert list(failure.failures) == ["cocotb_adder_checks_itself"]
    assert "1 of 3 cocotb tests" in message
    assert "cocotb_adder_checks_itself" in message and "vector 0" in message
    assert str(failure.log_path) in message and failure.log_path.exists()
    assert failure.waves_path is not None and failure.waves_path.exists()
    assert str(failure.waves_path) in message


def test_hung_simulation_times_out(tmp_path, cosim_cache):
    with pytest.raises(cosim.CosimError, match="did not finish within 3 s"):
        cosim.run_cocotb(PipelinedAdder(), __file__, top="adder", run_dir=tmp_path,
                         env={"HANG": 1}, testcase="cocotb_hangs_when_asked", timeout=3,
                         cache_dir=cosim_cache)


def test_missing_test_module_is_an_error(tmp_path, cosim_cache):
    with pytest.raises(ValueError, match="is not a file"):
        cosim.run_cocotb(PipelinedAdder(), tmp_path / "nope.py", top="adder",
                         run_dir=tmp_path, cache_dir=cosim_cache)


def test_bad_waves_argument(tmp_path):
    with pytest.raises(ValueError, match="waves must be True, False or 'on_failure'"):
        cosim.run_cocotb("module top(); endmodule", __file__, run_dir=tmp_path, waves="yes")
