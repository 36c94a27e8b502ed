"""The whole accelerator (ef_train_hdl/accel) in the Amaranth simulator, on ``tiny``, driven
through its registers like a host driver does (the ``sim`` backend):

- training steps of networks with every layer type and phase — conv FP/BP/WU with ReLU,
  max-pool, both, neither, stride 1 and 2, kernels 1, 3 and 5, padding; FC after a flatten and
  after an FC; biases or none; SGD plain and with momentum; batch 1 and 2 — under random AXI
  stalls and latencies: DRAM afterwards equal, bit for bit, to the layer-level numpy model's;
- every fault the command processor must catch (bad magic, checksum, opcode, a zero or
  oversized shape, a misaligned address, a tile that does not fit the buffers, a job the tile
  engine refuses, an unmet token wait, SLVERR/DECERR on reads and writes, a misaligned start)
  stops the program with its error code and address, in bounded time, and the next program
  runs correctly; a soft reset in the middle of a run returns to idle.
"""

import numpy as np
import pytest

from ef_train_hdl import isa
from ef_train_hdl.axi.signature import Resp
from ef_train_hdl.config import preset
from ef_train_hdl.descriptor import ErrorCode, Opcode
from ef_train_hdl.isa import Instr, LoadMode, Op, Post, Source, Target
from ef_train_hdl.network import Conv2d, Flatten, Linear, MaxPool2d, Network, ReLU
from ef_train_hdl.runtime import Trainer
from ef_train_hdl.runtime.sim_backend import DramTiming, SimBackend

from accel_harness import unit_net

TINY = preset("tiny")
STALLS = DramTiming(read_latency=(1, 40), write_latency=(1, 30), gap=0.3, stall=0.3, seed=5)


def kernels_net():
    """Kernels 5 (pad 2) and 1, stride 2 with a 5x5 kernel, no bias, FC at batch 1."""
    return Network((1, 9, 9), [
        Conv2d(1, 3, 5, padding=2, bias=False), ReLU(),            # 9x9
        Conv2d(3, 2, 5, stride=2, padding=2), MaxPool2d(2),        # 5x5 -> 2x2 (odd drop)
        Conv2d(2, 3, 1), ReLU(),                                   # 1x1 conv
        Flatten(), Linear(3 * 2 * 2, 4, bias=False), ReLU(), Linear(4, 2),
    ])


def _step(make, batch, backend, momentum, **options):
    t = Trainer(make(), batch, TINY, backend=backend, lr=0.05, momentum=momentum, **options)
    t.init(seed=2)
    rng = np.random.default_rng(batch)
    shape = (batch,) + tuple(t.compiled.network.input_shape)
    x = rng.standard_normal(shape).astype(np.float32)
    loss = t.train_step(x, rng.integers(0, t.compiled.num_classes, batch))
    return t, loss


@pytest.mark.parametrize("make,batch,momentum", [(unit_net, 2, 0.9), (kernels_net, 1, 0.0)],
                         ids=["unit_b2_momentum", "kernels_b1_plain"])
def test_training_step_matches_model(make, batch, momentum):
    ref, loss_ref = _step(make, batch, "model", momentum)
    got, loss = _step(make, batch, "sim", momentum, dram=STALLS)
    assert loss == loss_ref
    for t in ref.compiled.memory.tensors.values():
        if t.kind == "program":
            continue
        a, b = ref.backend.read(t.base, t.words), got.backend.read(t.base, t.words)
        bad = np.flatnonzero(a != b)
        assert bad.size == 0, (f"{t.name}: {bad.size} of {t.words} words differ, first at "
                               f"{bad[0]}: model 0x{a[bad[0]]:08X}, accelerator "
                               f"0x{b[bad[0]]:08X}")
    c = got.backend.read_counters()
    assert c["instructions"] == sum(i.op in (Op.LOAD, Op.COMPUTE, Op.STORE)
                                    for i in got.compiled.train_tiles)
    assert 0 < c["pe_busy"] < c["cycles"]


# -- faults -----------------------------------------------------------------------------------

PROG = 4096          # word address of the hand-written programs
DRAM_WORDS = 1 << 16


@pytest.fixture(scope="module")
def accel():
    return SimBackend(TINY, DRAM_WORDS, dram=DramTiming(read_latency=(1, 10), stall=0.2,
                                                        errors=[(0x30000, 0x30100, Resp.SLVERR),
                                                                (0x31000, 0x31100,
                                                                 Resp.SLVERR)]))


def _load(n=4, **kw):
    fields = dict(target=Target.IFM, count=n, runs=1, bank_step=1, addr_a=0, signal_compute=1)
    fields.update(kw)
    return Instr(Op.LOAD, **fields)


def _compute(**kw):
    fields = dict(phase=0, kernel=1, stride=1, in_rows=1, in_cols=8, out_rows=1, out_cols=8,
                  wait_load=1)
    fields.update(kw)
    return Instr(Op.COMPUTE, **fields)


def _run(backend, instrs, *, raw=None):
    words = raw if raw is not None else isa.pack_program(instrs)
    backend.write(PROG, words)
    backend.write(PROG + len(words), np.zeros(16 * 16, np.uint32))
    return backend.run(PROG)


def _good_program():
    """A load, a 1x1 FP job and a store: DRAM word 2048.. gets the job's result."""
    return [
        _load(8, addr_a=1024),
        Instr(Op.LOAD, target=Target.WEIGHT, count=1, runs=1, taps=1, bank_step=1,
              addr_a=1536, signal_compute=1),
        _compute(wait_load=2, log2_p=0, signal_store=1),
        Instr(Op.STORE, source=Source.OFM, drain_count=8, runs=1, run_words=16,
              addr_out=2048, wait_compute=1, signal_load=1),
        Instr(Op.END),
    ]


def _check_good(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 2)).astype(np.float32)         # 8 pixels x Tn
    w = rng.standard_normal((2, 2)).astype(np.float32)         # [mi][nj]
    backend.write_f32(1024, x.reshape(-1))
    backend.write_f32(1536, w.reshape(-1))
    backend.write(2048, np.zeros(16, np.uint32))
    status = _run(backend, _good_program())
    assert status.code == ErrorCode.OK and status.opcode == Opcode.END, status
    from ef_train_hdl.model.fp import fmul, tree_sum
    want = tree_sum(fmul(w[None, :, :], x[:, None, :]), axis=2)  # + 0 in the accumulator
    want = want + np.float32(0)
    np.testing.assert_array_equal(backend.read_f32(2048, 16).reshape(8, 2), want)


BAD = {
    "magic": ([_load()], lambda w: w.__setitem__(0, int(w[0]) ^ (1 << 31)),
              ErrorCode.BAD_MAGIC, 0),
    "checksum": ([_load(), _load()], lambda w: w.__setitem__(16 + 5, int(w[16 + 5]) ^ 4),
                 ErrorCode.BAD_CHECKSUM, 1),
    "opcode": ([_load()], "opcode", ErrorCode.BAD_OPCODE, 0),
    "zero_shape": ([_load(0)], None, ErrorCode.BAD_SIZE, 0),
    "oversized_shape": ([_load(), Instr(Op.LOAD, target=Target.IFM, mode=LoadMode.POOL_BP,
                                        count=4, runs=1, pool_width=4, pool_height=70000 % 65536,
                                        bank_step=1)], None, ErrorCode.BAD_SIZE, 1),
    "misaligned": ([_load(addr_a=3)], None, ErrorCode.MISALIGNED_ADDRESS, 0),
    "tile_too_big": ([_load(TINY.ifm_depth + 1)], None, ErrorCode.BAD_TILE, 0),
    "store_words": ([Instr(Op.STORE, source=Source.OFM, drain_count=4, runs=1,
                           run_words=6)], None, ErrorCode.BAD_SIZE, 0),
    "engine_refuses": ([_load(), _compute(kernel=7)], None, ErrorCode.BAD_KERNEL, 1),
    "self_token": ([_load(signal_load=1)], None, ErrorCode.BAD_FLAGS, 0),
    "unmet_wait": ([_compute(wait_load=1)], None, ErrorCode.BAD_DEPENDENCY, None),
    "read_slverr": ([_load(8, addr_a=0x30000 // 4)], None, ErrorCode.AXI_READ_ERROR, "axi"),
    "write_slverr": ([_load(8, addr_a=1024), Instr(Op.LOAD, target=Target.WEIGHT, count=1,
                                                   runs=1, taps=1, bank_step=1, addr_a=1536,
                                                   signal_compute=1),
                      _compute(wait_load=2, signal_store=1),
                      Instr(Op.STORE, source=Source.OFM, drain_count=8, runs=1, run_words=16,
                            addr_out=0x31000 // 4, wait_compute=1)],
                     None, ErrorCode.AXI_WRITE_ERROR, "axi"),
    "read_decerr": ([_load(8, addr_a=DRAM_WORDS)], None, ErrorCode.AXI_READ_ERROR, "axi"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_fault_stops_with_its_code(accel, name):
    instrs, corrupt, code, index = BAD[name]
    words = isa.pack_program(instrs)
    if corrupt == "opcode":
        words[0] = (int(words[0]) & ~0xF) | 11
        words[15] = isa.checksum(words[:16])
    elif corrupt is not None:
        corrupt(words)
    start = accel.cycles
    status = _run(accel, instrs, raw=words)
    assert status.code == code, status
    assert accel.cycles - start < 20_000, "the fault took too long to stop the program"
    if index == "axi":
        assert "AXI beat" in status.message
    elif index is not None:
        assert status.addr == PROG + 16 * index, status
    # The accelerator is usable again.
    _check_good(accel)


def test_dram_base_moves_every_access():
    """With DRAM_BASE set, the same program runs on the image placed there (a board's DMA
    buffer) and touches nothing below it."""
    base = 0x7000
    backend = SimBackend(TINY, DRAM_WORDS, dram=DramTiming(read_latency=(1, 10), stall=0.2),
                         dram_base=base)
    _check_good(backend)
    assert not backend.axi_mem[:base // 4].any(), "an access went below DRAM_BASE"
    with pytest.raises(ValueError, match="4 KiB"):
        SimBackend(TINY, 4096, dram_base=0x7004)


def test_misaligned_start(accel):
    accel.write(PROG, isa.pack_program([Instr(Op.END)]))
    status = accel.run(PROG + 4)
    assert status.code == ErrorCode.MISALIGNED_ADDRESS
    _check_good(accel)


def test_soft_reset_during_a_run(accel):
    """A long program (a chain of loads) stopped by CTRL.soft_reset: the accelerator goes
    idle and then runs a good program."""
    instrs = [_load(256, addr_a=8192 + 512 * (k % 8), signal_compute=0) for k in range(64)]
    accel.write(PROG, isa.pack_program(instrs))

    async def job(ctx, rng):
        await accel._write_reg(ctx, rng, "PROGRAM_ADDR_LO", PROG * 4)
        await accel._write_reg(ctx, rng, "CTRL", 1)
        for _ in range(300):
            await ctx.tick()
        busy = await accel._read_reg(ctx, rng, "STATUS") & 1
        await accel._write_reg(ctx, rng, "CTRL", 2)          # soft reset mid-run
        for _ in range(2000):
            await ctx.tick()
            if not ctx.get(accel.dut.irq) and not (await accel._read_reg(ctx, rng, "STATUS")
                                                   & 1):
                break
        status = await accel._read_reg(ctx, rng, "STATUS")
        return busy, status
    busy, status = accel._call(job)
    assert busy == 1, "the program should still have been running"
    assert status & 0b111 == 0, f"STATUS 0x{status:X} after the soft reset"
    _check_good(accel)
