"""The tile-program model (ef_train_hdl.perf_tiles) against the simulated accelerator.

Every layer and phase of a training step of the small network, each lowered into its own tile
program and run on the Amaranth-simulated accelerator (``tiny`` preset: 2x2 PEs, the DRAM
model of ``bench sim``); the cycle count the accelerator's CYCLES register reports is the
reference. ``bench sim`` does the same for the ``ultra96`` preset under Verilator
(docs/performance.md); this is the check that runs in CI.
"""

import numpy as np
import pytest

from ef_train_hdl import isa
from ef_train_hdl.config import preset
from ef_train_hdl.descriptor import Opcode
from ef_train_hdl.lower import lower_program
from ef_train_hdl.network import NETWORKS
from ef_train_hdl.perf_tiles import TileDram, program_perf
from ef_train_hdl.runtime import Trainer
from ef_train_hdl.runtime.sim_backend import DramTiming

#: Largest model error allowed per layer (issue 7 asks for 2 % at ultra96; the tiny array's
#: layers are a few hundred to a few thousand cycles, where one stall weighs more).
TOLERANCE = 0.03


@pytest.fixture(scope="module")
def measured():
    cfg = preset("tiny")
    t = Trainer(NETWORKS["small"](), 1, cfg, backend="sim", lr=0.01, momentum=0.9,
                dram=DramTiming(read_latency=30, write_latency=20))
    t.init(seed=0)
    c, b = t.compiled, t.backend
    rng = np.random.default_rng(0)
    t._write_input(rng.standard_normal((1,) + tuple(c.network.input_shape)).astype(np.float32))
    rows = []
    for d in c.train_program:
        if d.opcode in (Opcode.HOST_SYNC, Opcode.END):
            continue
        prog = lower_program([d], cfg)
        b.write(c.train_tiles_addr, isa.pack_program(prog))
        b.reset_counters()
        status = b.run(c.train_tiles_addr)
        assert status.code == 0, status.message
        hw = b.read_counters()["cycles"]
        model = program_perf(prog, cfg, TileDram(read_latency=30, write_latency=20)).cycles
        rows.append((f"layer {d.layer} {d.opcode.name}", hw, model))
    return rows


def _off(rows):
    return [(name, hw, model, (model - hw) / hw) for name, hw, model in rows
            if abs(model - hw) > TOLERANCE * hw]


def _message(bad):
    return "model off by more than 3 %: " + "; ".join(
        f"{n}: simulated {hw}, model {m} ({100 * e:+.1f} %)" for n, hw, m, e in bad)


def test_model_within_tolerance_of_simulation(measured):
    assert len(measured) >= 9          # FP, BP, WU of the conv and FC layers
    rows = [r for r in measured if r[0].split()[-1] != "FC_FP"]
    bad = _off(rows)
    assert not bad, _message(bad)


def test_fc_forward_within_tolerance_of_simulation(measured):
    """FC FP on the tiny array, where the instructions (8 DMA beats each at 2 floats a beat)
    outnumber the MAC cycles: the instruction fetches and the weight loads share the DMA's
    bursts in flight, which the model replays in request order."""
    rows = [r for r in measured if r[0].split()[-1] == "FC_FP"]
    assert rows
    bad = _off(rows)
    assert not bad, _message(bad)
