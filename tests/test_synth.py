"""Logic depth on a real mapped netlist: the deepest path and the ranked list of deep paths
(``synth.logic_depth``, ``synth.deep_paths``), against depths worked out by hand."""

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ef_train_hdl.synth import deep_paths, logic_depth, synthesize


class _TwoDepths(wiring.Component):
    """``wide``: a 7-input AND between registers (more inputs than a LUT6 has: two levels);
    ``narrow``: a 4-input XOR between registers (one LUT)."""

    a: In(7)
    b: In(4)
    wide: Out(1)
    narrow: Out(1)

    def elaborate(self, platform):
        m = Module()
        a_q = Signal(7, name="a_q")
        b_q = Signal(4, name="b_q")
        m.d.sync += [a_q.eq(self.a), b_q.eq(self.b),
                     self.wide.eq(a_q.all()), self.narrow.eq(b_q.xor())]
        return m


@pytest.fixture(scope="module")
def netlist(tmp_path_factory):
    import json
    work = tmp_path_factory.mktemp("synth")
    result = synthesize(_TwoDepths(), family="xcup", top="top", workdir=work, ltp=False)
    return result, json.loads((work / "netlist.json").read_text())


def test_deepest_path_is_the_wide_and(netlist):
    result, net = netlist
    levels, carries, muxes, dsps, chain, cells = logic_depth(net, "top")
    assert (levels, carries, dsps) == (2, 0, 0)
    assert result.lut_levels == 2 and all(c.startswith("LUT") for c in cells)


def test_deep_paths_ranks_end_registers_by_name(netlist):
    _, net = netlist
    paths = deep_paths(net, "top", count=5)
    ends = [p["end"] for p in paths]
    assert ends[:2] == ["wide", "narrow"], paths
    assert [p["levels"] for p in paths[:2]] == [2, 1]
    assert paths[0]["start"].startswith("a_q[") and paths[1]["start"].startswith("b_q[")
    # The register-to-register paths of the input copies have no logic at all: not listed.
    assert all(p["levels"] >= 1 for p in paths)
