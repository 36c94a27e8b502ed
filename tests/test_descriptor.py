"""The descriptor format: round trip, field table, every error code, the generated doc."""

import pathlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from amaranth.hdl import Shape

from ef_train_hdl import descriptor as D
from ef_train_hdl.config import preset
from ef_train_hdl.descriptor import Descriptor, ErrorCode, Opcode

CFG = preset("ultra96")


def conv_fp(**kw):
    base = dict(opcode=Opcode.CONV_FP, relu=True, pool=True, bias=True, in_channels=6,
                out_channels=16, in_h=14, in_w=14, batch=8, kernel=5, stride=1, pad=0,
                interleave=1, tile_rows=10, tile_groups=1, addr_ifm=0x100, addr_weight=0x200,
                addr_bias=0x300, addr_ofm=0x400, addr_index=0x500, layer=1)
    base.update(kw)
    return Descriptor(**base)


def test_field_table_is_consistent():
    bits = set()
    for f in D.FIELDS:
        span = set(range(f.offset, f.offset + f.width))
        assert not bits & span, f.name
        bits |= span
    assert D.amaranth_layout().size == 32 * D.DESC_WORDS
    layout = D.amaranth_layout()
    for f in D.FIELDS:
        assert layout[f.name].offset == f.offset and Shape.cast(layout[f.name].shape).width == f.width


field_values = st.fixed_dictionaries({
    f.name: st.integers(0, f.mask) for f in D.FIELDS
    if f.name not in ("checksum", "magic", "opcode", "lr", "mu") + D.FLAG_FIELDS})


@settings(max_examples=200, deadline=None)
@given(field_values, st.sampled_from(list(Opcode)), st.lists(st.booleans(), min_size=5,
       max_size=5), st.floats(width=32, allow_nan=False), st.floats(width=32, allow_nan=False))
def test_round_trip(values, opcode, flags, lr, mu):
    desc = Descriptor(opcode=opcode, lr=lr, mu=mu, **dict(zip(D.FLAG_FIELDS, flags)), **values)
    words = D.pack(desc)
    assert words.dtype == np.uint32 and words.shape == (D.DESC_WORDS,)
    assert D.unpack(words) == desc


def test_pack_bit_positions_independently():
    # Each field lands at its documented bits: recompute from the table by hand.
    desc = conv_fp(lr=0.5)
    words = D.pack(desc)
    assert words[0] & 0xFF == Opcode.CONV_FP
    assert (words[0] >> 24) == 0xEF
    assert (words[0] >> 8) & 1 == 1 and (words[0] >> 9) & 1 == 1
    assert words[1] == 6 | (16 << 16)
    assert words[17] == 0x3F000000
    assert words[31] == np.bitwise_xor.reduce(words[:31]) ^ 0xEF7A1D00


def test_program_round_trip():
    prog = [conv_fp(), Descriptor(opcode=Opcode.HOST_SYNC)]
    words = D.pack_program(prog)
    assert len(words) == 3 * D.DESC_WORDS
    back = D.unpack_program(words)
    assert back[:2] == prog and back[2].opcode == Opcode.END


def test_bad_magic_and_checksum_detected():
    words = D.pack(conv_fp())
    corrupt = words.copy()
    corrupt[5] ^= 4
    with pytest.raises(D.DescriptorError) as e:
        D.unpack(corrupt)
    assert e.value.code == ErrorCode.BAD_CHECKSUM
    corrupt = words.copy()
    corrupt[0] &= 0x00FFFFFF
    with pytest.raises(D.DescriptorError) as e:
        D.unpack(corrupt)
    assert e.value.code == ErrorCode.BAD_MAGIC
    with pytest.raises(D.DescriptorError) as e:
        D.unpack(np.zeros(D.DESC_WORDS, np.uint32))
    assert e.value.code == ErrorCode.BAD_MAGIC


def test_valid_descriptor_passes():
    assert D.check(conv_fp(), CFG) == (ErrorCode.OK, "ok")
    sgd = Descriptor(opcode=Opcode.SGD, momentum=True, addr_weight=0x40, addr_grad_w=0x80,
                     addr_momentum=0xC0, length=100, lr=0.1, mu=0.9)
    assert D.check(sgd, CFG)[0] == ErrorCode.OK


SGD = Descriptor(opcode=Opcode.SGD, addr_weight=0x40, addr_grad_w=0x80, length=10, lr=0.1)

ERROR_CASES = {
    ErrorCode.BAD_MAGIC: (conv_fp(magic=0x12), "magic"),
    ErrorCode.BAD_OPCODE: (conv_fp(opcode=99), "opcode"),
    ErrorCode.BAD_CHANNELS: (conv_fp(in_channels=0), "in_channels"),
    ErrorCode.BAD_SIZE: (conv_fp(in_h=CFG.max_size + 1), "in_h"),
    ErrorCode.BAD_BATCH: (conv_fp(batch=CFG.max_batch + 1), "batch"),
    ErrorCode.BAD_KERNEL: (conv_fp(kernel=CFG.k_max + 1, in_h=20, in_w=20), "kernel"),
    ErrorCode.BAD_STRIDE: (conv_fp(stride=3), "stride"),
    ErrorCode.BAD_PAD: (conv_fp(pad=5), "pad"),
    ErrorCode.BAD_INTERLEAVE: (conv_fp(interleave=3), "interleave"),
    ErrorCode.BAD_TILE: (conv_fp(tile_rows=11), "tile_rows"),
    ErrorCode.MISALIGNED_ADDRESS: (conv_fp(addr_weight=0x201), "addr_weight"),
    ErrorCode.ADDRESS_RANGE: (conv_fp(addr_ofm=1 << 30), "addr_ofm"),
    ErrorCode.BAD_FLAGS: (conv_fp(momentum=True), "momentum"),
    ErrorCode.BAD_LENGTH: (SGD.replace(length=0), "length"),
}


@pytest.mark.parametrize("code", list(ERROR_CASES), ids=lambda c: c.name)
def test_every_error_code(code):
    desc, field = ERROR_CASES[code]
    with pytest.raises(D.DescriptorError) as e:
        D.validate(desc, CFG, index=7)
    assert e.value.code == code
    msg = str(e.value)
    assert field in msg and "allowed" in msg and "descriptor 7" in msg


def test_error_codes_covered():
    # Codes only the hardware raises (checksum at fetch, AXI responses) are tested elsewhere:
    # checksum by test_bad_magic_and_checksum_detected, AXI by the DMA tests, a tile
    # program's unmet wait by the accelerator tests.
    host_side = set(ErrorCode) - {ErrorCode.OK, ErrorCode.BAD_CHECKSUM,
                                  ErrorCode.AXI_READ_ERROR, ErrorCode.AXI_WRITE_ERROR,
                                  ErrorCode.BAD_DEPENDENCY}
    assert host_side == set(ERROR_CASES)


def test_tile_too_big_for_buffer():
    small = preset("tiny")
    desc = conv_fp(in_h=64, in_w=64, tile_rows=60, in_channels=2, out_channels=2)
    code, msg = D.check(desc, small)
    assert code == ErrorCode.BAD_TILE and "ifm_depth" in msg


def test_field_overflow_raises_on_pack():
    with pytest.raises(D.DescriptorError) as e:
        D.pack(conv_fp(kernel=16))
    assert e.value.code == ErrorCode.BAD_KERNEL and "kernel" in str(e.value)


def test_doc_is_current():
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "descriptors.md").read_text()
    generated = doc.split("<!-- generated: begin -->\n")[1].split("<!-- generated: end -->")[0]
    assert generated == D.markdown_table(), \
        "docs/descriptors.md is stale: regenerate with python -m ef_train_hdl.descriptor --markdown"
