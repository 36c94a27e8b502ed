"""cocotb testbench of the FP units' generated Verilog (FMul fp32/bf16, FAdd).

Run through :func:`ef_train_hdl.cosim.run_cocotb` (``tests/test_fp_verilator.py``,
``python -m ef_train_hdl.bench fp``), never by hand: the host passes the operand words in
``inputs={"a": uint32[], "b": uint32[]}`` and the unit's latency in ``env={"UNIT_LATENCY":
...}``. The testbench drives one operand pair per clock cycle (``i_valid`` high without gaps),
records every ``result`` the unit flags with ``o_valid`` and hands back

- ``result``: uint32 words in the order they came out,
- ``out_cycle``: the cycle each came out (operand pair ``i`` goes in on cycle ``i``),
- ``cycles``: clock cycles simulated, ``seconds``: wall-clock seconds of the driving loop.

The bit-for-bit comparison with ``ef_train_hdl.model.fp`` runs in pytest afterwards, where numpy
reports the mismatching vectors; this file stays free of expectations.
"""

import os
import time

import cocotb
import numpy as np

from ef_train_hdl import cosim


@cocotb.test()
async def fp_unit_stream(dut):
    data = cosim.tb_inputs()
    latency = int(os.environ["UNIT_LATENCY"])
    start = time.perf_counter()
    got, out_cycle, cycles = await cosim.tb_pipeline(
        dut, {"a": data["a"], "b": data["b"]}, ["result"], latency=latency)
    seconds = time.perf_counter() - start
    cosim.tb_save_outputs(result=np.array(got["result"], dtype=np.uint32),
                          out_cycle=np.array(out_cycle, dtype=np.int64),
                          cycles=np.array(cycles), seconds=np.array(seconds))
