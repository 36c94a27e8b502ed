"""The tile instruction format: round trip, field ranges, the decoder's checks, the doc."""

from pathlib import Path

import numpy as np
import pytest

from ef_train_hdl import isa
from ef_train_hdl.config import preset
from ef_train_hdl.descriptor import ErrorCode
from ef_train_hdl.isa import Instr, LoadMode, Op, Post, Source, Target

TINY = preset("tiny")


def test_round_trip_every_field():
    rng = np.random.default_rng(1)
    for op in isa.Op:
        for _ in range(20):
            values = {}
            for f in isa.fields_of(op):
                if f.name in ("opcode", "checksum", "magic"):
                    continue
                lo, hi = (-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1) if f.signed else \
                    (0, f.mask)
                values[f.name] = int(rng.integers(lo, hi, endpoint=True))
            instr = Instr(op, **values)
            back = isa.unpack(isa.pack(instr))
            assert back == instr


def test_values_that_do_not_fit():
    with pytest.raises(isa.InstrError, match="count"):
        isa.pack(Instr(Op.LOAD, count=1 << 32))
    with pytest.raises(isa.InstrError, match="row_off"):
        isa.pack(Instr(Op.COMPUTE, row_off=200))
    with pytest.raises(TypeError, match="no field 'kernel'"):
        Instr(Op.LOAD, kernel=3)


def test_amaranth_layout_matches_pack():
    from amaranth.hdl import Const
    from amaranth.lib import data
    instr = Instr(Op.COMPUTE, phase=2, kernel=3, row_off=-2, col_off=5, in_rows=7,
                  term_base=123456, w_base=17)
    words = isa.pack(instr)
    value = sum(int(w) << (32 * i) for i, w in enumerate(words))
    view = data.Const(isa.amaranth_layout(Op.COMPUTE), value)
    assert view.kernel == 3 and view.row_off == -2 and view.col_off == 5
    assert view.term_base == 123456 and view.w_base == 17 and view.in_rows == 7


def _ok(instr):
    return isa.check(instr, TINY)[0]


def test_checks():
    load = Instr(Op.LOAD, target=Target.IFM, count=4, runs=1, bank_step=1)
    assert _ok(load) == ErrorCode.OK
    assert _ok(load.replace(addr_a=3)) == ErrorCode.MISALIGNED_ADDRESS
    assert _ok(load.replace(count=0)) == ErrorCode.BAD_SIZE
    assert _ok(load.replace(count=TINY.ifm_depth + 1)) == ErrorCode.BAD_TILE
    assert _ok(load.replace(wait_load=1)) == ErrorCode.BAD_FLAGS
    assert _ok(load.replace(signal_load=1)) == ErrorCode.BAD_FLAGS
    assert _ok(load.replace(target=Target.WEIGHT, mode=LoadMode.RELU_BP)) == ErrorCode.BAD_FLAGS
    assert _ok(load.replace(transpose=1)) == ErrorCode.BAD_FLAGS
    pool = load.replace(mode=LoadMode.POOL_BP, pool_width=4, pool_height=4, count=4)
    assert _ok(pool) == ErrorCode.OK
    assert _ok(pool.replace(count=5)) == ErrorCode.BAD_SIZE
    assert _ok(pool.replace(addr_c=1)) == ErrorCode.MISALIGNED_ADDRESS
    w = Instr(Op.LOAD, target=Target.WEIGHT, count=2, runs=1, taps=9, bank_step=9)
    assert _ok(w) == ErrorCode.OK
    assert _ok(w.replace(bank_base=TINY.weight_depth - 17)) == ErrorCode.BAD_TILE
    assert _ok(w.replace(taps=0)) == ErrorCode.BAD_SIZE
    store = Instr(Op.STORE, source=Source.OFM, drain_count=8, runs=1, run_words=16)
    assert _ok(store) == ErrorCode.OK
    assert _ok(store.replace(run_words=15)) == ErrorCode.BAD_SIZE
    assert _ok(store.replace(post=Post.SGD)) == ErrorCode.BAD_FLAGS
    assert _ok(store.replace(post=Post.POOL, pool_width=4, pool_height=2, run_words=4)) == \
        ErrorCode.OK
    assert _ok(store.replace(post=Post.POOL, pool_width=4, pool_height=2, run_words=4,
                             addr_aux=1)) == ErrorCode.MISALIGNED_ADDRESS
    sgd = Instr(Op.STORE, source=Source.WEIGHT, post=Post.SGD_MOMENTUM, drain_count=1,
                runs=1, run_words=4)
    assert _ok(sgd) == ErrorCode.OK
    assert isa.check(sgd, TINY.replace(momentum=False))[0] == ErrorCode.BAD_FLAGS
    assert _ok(Instr(Op.END, wait_load=1)) == ErrorCode.BAD_FLAGS
    assert _ok(Instr(Op.COMPUTE, w_base=TINY.weight_depth)) == ErrorCode.BAD_TILE


def test_unpack_refuses():
    words = isa.pack(Instr(Op.END))
    bad = words.copy()
    bad[2] ^= 1
    with pytest.raises(isa.InstrError) as e:
        isa.unpack(bad)
    assert e.value.code == ErrorCode.BAD_CHECKSUM
    bad = words.copy()
    bad[0] = (int(bad[0]) & ~0xF) | 12
    bad[15] = isa.checksum(bad)
    with pytest.raises(isa.InstrError) as e:
        isa.unpack(bad)
    assert e.value.code == ErrorCode.BAD_OPCODE


def test_doc_is_current():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "isa.md").read_text()
    generated = doc.split("<!-- generated: begin -->\n")[1].split("<!-- generated: end -->")[0]
    assert generated == isa.markdown_table(), \
        "docs/isa.md is stale: regenerate with python -m ef_train_hdl.isa --markdown"
