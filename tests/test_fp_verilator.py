"""The FP units' generated Verilog under cocotb + Verilator, bit for bit against the model.

The same vectors as the simulator tests (``ef_train_hdl.model.fp_vectors``: the cross product
of special values, and 20,000 random pairs per operation) go through the Verilog of FMul
(fp32 and bf16 operands) and FAdd, one pair per clock cycle (``sim/fp_units_tb.py``). The
results are compared here with ``ef_train_hdl.model.fp``, the numpy reference of the numerics
contract, and every result must come out exactly ``latency`` cycles after its operands.
"""

from pathlib import Path

import numpy as np
import pytest

from ef_train_hdl import cosim
from ef_train_hdl import fp as fp_units
from ef_train_hdl.config import FADD_LATENCY, FMUL_LATENCY
from ef_train_hdl.model import fp, fp_vectors

pytestmark = pytest.mark.verilator

TESTBENCH = Path(__file__).resolve().parents[1] / "sim" / "fp_units_tb.py"
RANDOM_PAIRS = 20_000

UNITS = {
    # unit: (FMul/FAdd and its arguments, vector operation, model, documented latency)
    "fmul_fp32": (("FMul", {"mult_format": "fp32"}), "mul", fp.fmul, FMUL_LATENCY),
    "fmul_bf16": (("FMul", {"mult_format": "bf16"}), "mul", fp.fmul_bf16, FMUL_LATENCY),
    "fadd": (("FAdd", {}), "add", fp.fadd, FADD_LATENCY),
}


def _component(spec):
    name, kwargs = spec
    return getattr(fp_units, name)(**kwargs)


def _vectors(op):
    sa, sb = fp_vectors.special_pairs()
    ra, rb = fp_vectors.random_pairs(op, RANDOM_PAIRS, seed=2022)
    return np.concatenate([sa, ra]), np.concatenate([sb, rb])


@pytest.mark.parametrize("unit", list(UNITS))
def test_unit_matches_model(unit, tmp_path, cosim_cache):
    spec, op, model, latency = UNITS[unit]
    component = _component(spec)
    assert component.latency == latency
    a, b = _vectors(op)
    assert len(a) >= RANDOM_PAIRS
    result = cosim.run_cocotb(component, TESTBENCH, top=unit, run_dir=tmp_path,
                              inputs={"a": a, "b": b}, env={"UNIT_LATENCY": latency},
                              cache_dir=cosim_cache, timeout=900)
    got = result.outputs["result"]
    expected = fp.bits(model(fp.from_bits(a), fp.from_bits(b)))

    assert len(got) == len(a), f"{len(got)} results for {len(a)} operand pairs"
    wrong = np.flatnonzero(got != expected)
    if len(wrong):
        lines = [f"{len(wrong)} of {len(a)} results differ from the model "
                 f"(run folder {tmp_path}); first ones:"]
        for i in wrong[:12]:
            lines.append(f"  [{i}] a={a[i]:08x} b={b[i]:08x}: got {got[i]:08x}, "
                         f"expected {expected[i]:08x}")
        pytest.fail("\n".join(lines))
    # II = 1 and the documented latency: result i comes out on cycle i + latency.
    np.testing.assert_array_equal(result.outputs["out_cycle"] - np.arange(len(a)), latency)
