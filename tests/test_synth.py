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


class _LutRam(wiring.Component):
    """A 32 x 4 LUTRAM: the written word is a 7-input AND of registers (two LUT levels, as in
    ``_TwoDepths``), the read word goes straight into a register (the LUTRAM's read: one
    level). The write is clocked, so the deepest path is the write data's two levels, not
    2 + 1 through the memory."""

    a: In(7)
    waddr: In(5)
    raddr: In(5)
    out: Out(1)

    def elaborate(self, platform):
        from amaranth.lib.memory import Memory
        m = Module()
        m.submodules.mem = mem = Memory(shape=4, depth=32, init=[])
        a_q = Signal(7, name="a_q")
        wa_q, ra_q = Signal(5, name="wa_q"), Signal(5, name="ra_q")
        m.d.sync += [a_q.eq(self.a), wa_q.eq(self.waddr), ra_q.eq(self.raddr)]
        wr = mem.write_port()
        rd = mem.read_port(domain="comb")
        m.d.comb += [wr.addr.eq(wa_q), wr.en.eq(1), wr.data.eq(a_q.all().replicate(4)),
                     rd.addr.eq(ra_q)]
        m.d.sync += self.out.eq(rd.data[0])
        return m


def test_lutram_write_ends_a_path(tmp_path):
    import json
    result = synthesize(_LutRam(), family="xcup", top="top", workdir=tmp_path, ltp=False)
    assert result.lutram, "the memory must map to LUTRAM for this test to mean anything"
    net = json.loads((tmp_path / "netlist.json").read_text())
    levels, carries, muxes, dsps, chain, cells = logic_depth(net, "top")
    assert levels == 2, cells
    paths = {p["end"]: p for p in deep_paths(net, "top", count=10)}
    assert paths["out"]["levels"] == 1, paths          # read: the LUTRAM
    written = [p for p in paths.values() if p["levels"] == 2]
    assert written and all(p["start"].startswith("a_q[") for p in written), paths
