"""The instruction decoder (ef_train_hdl/accel/decoder.py) against the host-side checks
(isa.unpack + isa.check): the same ErrorCode for every instruction of a training program and
for thousands of mutations of them (every field pushed to edge values, flipped bits)."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from ef_train_hdl import isa
from ef_train_hdl.accel.decoder import Decoder
from ef_train_hdl.descriptor import ErrorCode

from accel_harness import trained_image


def host_code(words, cfg):
    try:
        instr = isa.unpack(words)
    except isa.InstrError as e:
        return e.code
    return isa.check(instr, cfg)[0]


def cases(compiled, rng, n):
    cfg = compiled.cfg
    base = [isa.pack(i) for i in compiled.train_tiles]
    out = list(base)
    for _ in range(n):
        words = base[rng.randrange(len(base))].copy()
        instr = isa.unpack(words)
        fields = [f for f in isa.fields_of(instr.op) if f.name not in ("opcode", "checksum")]
        for _ in range(rng.choice([1, 1, 2])):
            f = rng.choice(fields)
            lo, hi = (-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1) if f.signed else \
                (0, f.mask)
            choices = [lo, hi, 0, 1, 2, 3, cfg.floats_per_beat, cfg.ifm_depth,
                       cfg.ofm_depth - 1, cfg.weight_depth, rng.randint(lo, hi)]
            instr[f.name] = max(lo, min(hi, rng.choice(choices)))
        try:
            words = isa.pack(instr)
        except isa.InstrError:
            continue
        r = rng.random()
        if r < 0.05:
            words[rng.randrange(15)] ^= 1 << rng.randrange(32)      # bad checksum
        elif r < 0.08:
            words[0] = (int(words[0]) & ~0xF) | rng.randrange(5, 16)
            words[15] = isa.checksum(words)                         # unknown opcode
        out.append(words)
    return out


@pytest.mark.parametrize("preset_name", ["tiny", "ultra96"])
def test_decoder_matches_isa_check(preset_name):
    compiled, _ = trained_image(preset_name)
    cfg = compiled.cfg
    rng = random.Random(3)
    inputs = cases(compiled, rng, 1500)
    want = [host_code(w, cfg) for w in inputs]
    assert len({c for c in want}) >= 6, "the mutations must reach many error codes"
    got = []
    dut = Decoder(cfg)

    async def tb(ctx):
        for words in inputs:
            bits = sum(int(w) << (32 * k) for k, w in enumerate(words))
            ctx.set(dut.i.payload, {"bits": bits, "index": 0})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, 1)
            while True:
                _, _, valid, code = await ctx.tick().sample(dut.o.valid, dut.o.payload.code)
                if valid:
                    break
            got.append(ErrorCode(int(code)))
            ctx.set(dut.o.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    bad = [(k, g, w) for k, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not bad, (f"{len(bad)} of {len(inputs)} differ; first: instruction "
                     f"{isa.unpack(inputs[bad[0][0]], verify=False)!r}: decoder "
                     f"{bad[0][1].name}, isa.check {bad[0][2].name}")
