"""The ``board`` backend (ef_train_hdl/runtime/board_backend.py) without a board.

- Everything above the seam — the run protocol, DRAM_BASE, the cache maintenance — runs
  against fakes backed by the Amaranth simulation of the accelerator: :class:`FakeWindow`
  forwards each register access to the simulated AXI4-Lite port, and :class:`FakeBuffer` is
  the simulated memory at a nonzero bus address behind a *non-coherent* CPU cache (the CPU's
  array is a separate copy that only ``flush`` writes to memory and only ``invalidate``
  refreshes), so a forgotten flush or invalidate changes the result. A training step through
  the host API leaves DRAM equal, bit for bit, to the numpy model's.
- The error paths: a buffer too small, misaligned or of the wrong dtype; a bitstream of
  another configuration; a run that never finishes (bounded by ``max_seconds``); what
  ``close()`` closes.
- The Linux implementations against fake files: ``/dev/mem`` (:class:`DevMemWindow`), a
  u-dma-buf sysfs tree (:class:`UdmaBuffer`), a UIO device (:class:`UioIrq`, on a pty), and
  the PYNQ ones without pynq.
"""

import os
import select
import struct
import time

import numpy as np
import pytest

from ef_train_hdl import isa
from ef_train_hdl.axi.csr import CSR_MAP, config_value, field, reg
from ef_train_hdl.config import preset
from ef_train_hdl.descriptor import ErrorCode, Opcode
from ef_train_hdl.isa import Instr, Op, Source, Target
from ef_train_hdl.network import Conv2d, Flatten, Linear, MaxPool2d, Network, ReLU
from ef_train_hdl.runtime import BACKENDS, BoardBackend, Trainer, board_backend
from ef_train_hdl.runtime.board_backend import (DevMemWindow, DmaBuffer, IrqLine, PynqBuffer,
                                                PynqWindow, RegisterWindow, UdmaBuffer,
                                                UioIrq, pynq_available)
from ef_train_hdl.runtime.driver import DriverError
from ef_train_hdl.runtime.sim_backend import DramTiming, SimBackend

TINY = preset("tiny")
PHYS = 0x0010_0000     # the DMA buffer's bus address: DRAM_BASE is really exercised
DRAM_WORDS = 1 << 16   # the simulated buffer; enough for every image here
PROG = 4096            # word address of the hand-written program

_CTRL = reg("CTRL").offset
_STATUS = reg("STATUS").offset
_START = 1 << field("CTRL", "start").lsb
_SOFT_RESET = 1 << field("CTRL", "soft_reset").lsb


# -- fakes behind the seam ------------------------------------------------------------------

class FakeBuffer(DmaBuffer):
    """The simulated accelerator's memory at ``phys_addr`` behind a non-coherent CPU cache.

    ``array`` (the CPU's view) is a copy: :meth:`flush` writes all of it to the simulated
    memory, :meth:`invalidate` reads all of it back. Whoever owns the buffer is tracked as
    u-dma-buf does (``sync_for_device`` / ``sync_for_cpu``): the CPU may touch ``array`` only
    while it owns it, and :class:`FakeWindow` refuses a start while it does.
    """

    def __init__(self, sim):
        self.sim = sim
        self.phys_addr = sim.dram_base
        self.nbytes = len(sim.mem) * 4
        self._cpu = np.zeros(len(sim.mem), np.uint32)
        self.owner = "cpu"
        self.flushes = self.invalidates = 0
        self.closed = False

    @property
    def array(self):
        assert self.owner == "cpu", "the CPU touched the buffer while the accelerator owns it"
        return self._cpu

    def flush(self):
        self.sim.mem[:] = self._cpu
        self.owner = "device"
        self.flushes += 1

    def invalidate(self):
        self._cpu[:] = self.sim.mem
        self.owner = "cpu"
        self.invalidates += 1

    def close(self):
        self.closed = True


class FakeWindow(RegisterWindow):
    """The simulated accelerator's AXI4-Lite registers, one transaction per access."""

    def __init__(self, sim, buffer=None):
        self.sim, self.buffer = sim, buffer
        self.closed = False

    def read32(self, offset):
        return self.sim.read_reg(offset)

    def write32(self, offset, value):
        if offset == _CTRL and value & _START and self.buffer is not None:
            assert self.buffer.owner == "device", "started before the buffer was flushed"
        self.sim.write_reg(offset, value)

    def close(self):
        self.closed = True


class FakeIrq(IrqLine):
    """The simulated accelerator's ``irq`` output."""

    def __init__(self, sim):
        self.sim = sim
        self.enables = 0

    def enable(self):
        self.enables += 1

    def wait(self, timeout):
        return self.sim.wait_irq(5_000_000)


class RegisterFile(RegisterWindow):
    """Registers without an accelerator: ID, VERSION and the configuration registers of
    ``cfg``, and a STATUS that is ``busy`` from a start (or always, with ``stuck``) until a
    soft reset (never, with ``deaf``)."""

    def __init__(self, cfg, *, stuck=False, deaf=False):
        self.regs = {r.offset: config_value(r.fields[0], cfg)
                     for r in CSR_MAP if r.fields[0].access == "const"}
        self.busy, self.deaf = stuck, deaf
        self.soft_resets = 0
        self.closed = False

    def read32(self, offset):
        if offset == _STATUS:
            return int(self.busy)
        return self.regs.get(offset, 0)

    def write32(self, offset, value):
        if offset == _CTRL and value & _START:
            self.busy = True
        if offset == _CTRL and value & _SOFT_RESET:
            self.soft_resets += 1
            self.busy = self.busy and self.deaf

    def close(self):
        self.closed = True


class ArrayBuffer(DmaBuffer):
    """A buffer of plain memory (for the tests that never run the accelerator)."""

    def __init__(self, nbytes, phys_addr=PHYS, dtype=np.uint32):
        self.phys_addr, self.nbytes = phys_addr, nbytes
        self.array = np.zeros(nbytes // np.dtype(dtype).itemsize, dtype)
        self.closed = False

    def flush(self):
        pass

    def invalidate(self):
        pass

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def sim():
    """One simulated accelerator for the module: every BoardBackend zeroes its image."""
    return SimBackend(TINY, DRAM_WORDS, dram=DramTiming(read_latency=(1, 10), stall=0.2, seed=3),
                      dram_base=PHYS)


# -- a training step through the host API ---------------------------------------------------

def small_net():
    """Conv with ReLU and max-pool, an FC after the flatten, biases: every phase and SGD."""
    return Network((1, 4, 4), [Conv2d(1, 2, 3, padding=1), ReLU(), MaxPool2d(2),
                               Flatten(), Linear(2 * 2 * 2, 3)])


def _step(backend, **options):
    t = Trainer(small_net(), 2, TINY, backend=backend, lr=0.05, momentum=0.9, **options)
    t.init(seed=2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    loss = t.train_step(x, np.array([2, 0]))
    return t, loss


@pytest.mark.parametrize("wait", ["irq", "poll"])
def test_training_step_matches_model(sim, wait):
    ref, loss_ref = _step("model")
    buffer = FakeBuffer(sim)
    window = FakeWindow(sim, buffer)
    irq = FakeIrq(sim) if wait == "irq" else None
    sim.axi_mem[:] = 0xDEAD_BEEF   # below the buffer: must stay untouched
    got, loss = _step("board", window=window, buffer=buffer, irq=irq, max_seconds=600)
    assert isinstance(got.backend, BoardBackend)
    assert got.backend.driver.dram_base == PHYS
    assert loss == loss_ref
    words = ref.compiled.dram_words
    a, b = ref.backend.read(0, words), got.backend.read(0, words)
    bad = np.flatnonzero(a != b)
    names = {t.name: (t.base, t.words) for t in ref.compiled.memory.tensors.values()}
    assert bad.size == 0, (
        f"{bad.size} of {words} words differ, first at {bad[0]} "
        f"({[n for n, (base, w) in names.items() if base <= bad[0] < base + w]}): "
        f"model 0x{a[bad[0]]:08X}, board 0x{b[bad[0]]:08X}")
    assert (sim.axi_mem[:PHYS // 4] == 0xDEAD_BEEF).all(), "an access went below DRAM_BASE"
    # The step is two runs (to the HOST_SYNC and to the END): a flush before and an
    # invalidate after each.
    assert buffer.flushes == buffer.invalidates == 2
    assert buffer.owner == "cpu"
    if irq is not None:
        assert irq.enables >= 2
    c = got.counters()
    assert c["step_cycles"] > 0 and c["instructions"] > 0


def _good_program():
    """A load, a 1x1 FP job and a store (tests/test_accel.py): word 2048.. gets w @ x."""
    return isa.pack_program([
        Instr(Op.LOAD, target=Target.IFM, count=8, runs=1, bank_step=1, addr_a=1024,
              signal_compute=1),
        Instr(Op.LOAD, target=Target.WEIGHT, count=1, runs=1, taps=1, bank_step=1,
              addr_a=1536, signal_compute=1),
        Instr(Op.COMPUTE, phase=0, kernel=1, stride=1, in_rows=1, in_cols=8, out_rows=1,
              out_cols=8, wait_load=2, log2_p=0, signal_store=1),
        Instr(Op.STORE, source=Source.OFM, drain_count=8, runs=1, run_words=16,
              addr_out=2048, wait_compute=1, signal_load=1),
        Instr(Op.END),
    ])


def _run_good(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 2)).astype(np.float32)
    w = rng.standard_normal((2, 2)).astype(np.float32)
    backend.write_f32(1024, x.reshape(-1))
    backend.write_f32(1536, w.reshape(-1))
    backend.write(PROG, _good_program())
    from ef_train_hdl.model.fp import fmul, tree_sum
    want = tree_sum(fmul(w[None, :, :], x[:, None, :]), axis=2) + np.float32(0)
    return backend.run(PROG), backend.read_f32(2048, 16).reshape(8, 2), want


def test_program_runs_and_fake_cache_is_honest(sim):
    """A small program gives the model's result; the same run with the flush or the
    invalidate left out does not (so the fake would catch a backend that forgot one)."""
    buffer = FakeBuffer(sim)
    be = BoardBackend(TINY, 8192, window=FakeWindow(sim, buffer), buffer=buffer,
                      max_seconds=600)
    status, got, want = _run_good(be)
    assert status.code == ErrorCode.OK and status.opcode == Opcode.END, status
    np.testing.assert_array_equal(got, want)

    class NoFlush(FakeBuffer):
        def flush(self):
            self.owner = "device"

    class NoInvalidate(FakeBuffer):
        def invalidate(self):
            self.owner = "cpu"

    for cls in (NoFlush, NoInvalidate):
        sim.mem[:] = 0
        buffer = cls(sim)
        be = BoardBackend(TINY, 8192, window=FakeWindow(sim, buffer), buffer=buffer,
                          max_seconds=600)
        status, got, want = _run_good(be)
        # No flush: the accelerator reads zeros (no program); no invalidate: the CPU reads
        # its stale zeros.
        assert status.code != ErrorCode.OK or not np.array_equal(got, want), cls.__name__


def test_registered_and_pynq_free():
    assert BACKENDS["board"] is BoardBackend
    assert not pynq_available()


# -- error paths ----------------------------------------------------------------------------

@pytest.mark.parametrize("buffer, match", [
    (ArrayBuffer(4096 * 4 - 4), "holds 16380 bytes; the DRAM image needs 16384"),
    (ArrayBuffer(4096 * 4, phys_addr=PHYS + 0x800), "0x100800 must be 4 KiB aligned"),
    (ArrayBuffer(4096 * 4, dtype=np.float32), "1-D uint32 view .* not float32"),
    (ArrayBuffer(4096 * 4, phys_addr=1 << 40), "below 2\\*\\*"),
], ids=["too_small", "misaligned", "dtype", "out_of_reach"])
def test_bad_buffer(buffer, match):
    with pytest.raises(ValueError, match=match):
        BoardBackend(TINY, 4096, window=RegisterFile(TINY), buffer=buffer)


def test_configuration_mismatch(sim):
    other = preset("ultra96")
    assert other != TINY
    with pytest.raises(DriverError, match="another configuration"):
        BoardBackend(other, 4096, window=FakeWindow(sim), buffer=FakeBuffer(sim))
    regs = RegisterFile(TINY)
    regs.regs[reg("ID").offset] = 0
    with pytest.raises(DriverError, match="no accelerator at this address"):
        BoardBackend(TINY, 4096, window=regs, buffer=ArrayBuffer(4096 * 4))


@pytest.mark.parametrize("wait", ["irq", "poll"])
def test_run_that_never_finishes(wait):
    class SilentIrq(IrqLine):
        def enable(self):
            pass

        def wait(self, timeout):
            time.sleep(timeout)
            return False

    regs = RegisterFile(TINY)
    be = BoardBackend(TINY, 4096, window=regs, buffer=ArrayBuffer(4096 * 4), max_seconds=0.3,
                      irq=SilentIrq() if wait == "irq" else None)
    start = time.monotonic()
    with pytest.raises(DriverError, match="interrupt|stayed busy") as e:
        be.run(0)
    assert time.monotonic() - start < 2, "the timeout took far longer than max_seconds"
    assert "soft reset" in str(e.value) and regs.soft_resets == 1 and not regs.busy


def test_stuck_accelerator():
    """Busy when the backend opens it (a program of a host that is gone): a soft reset; one
    that stays busy through it is an error within max_seconds."""
    regs = RegisterFile(TINY, stuck=True)
    BoardBackend(TINY, 4096, window=regs, buffer=ArrayBuffer(4096 * 4))
    assert regs.soft_resets == 1 and not regs.busy
    regs = RegisterFile(TINY, stuck=True, deaf=True)
    start = time.monotonic()
    with pytest.raises(DriverError, match="still busy"):
        BoardBackend(TINY, 4096, window=regs, buffer=ArrayBuffer(4096 * 4), max_seconds=0.2)
    assert time.monotonic() - start < 2


def test_close_closes_only_what_it_opened(monkeypatch, tmp_path):
    given_window, given_buffer = RegisterFile(TINY), ArrayBuffer(4096 * 4)
    be = BoardBackend(TINY, 4096, window=given_window, buffer=given_buffer)
    be.close()
    assert not given_window.closed and not given_buffer.closed

    opened = []

    def open_window(base):
        assert base == 0xA000_0000   # M_AXI_HPM0_FPD
        opened.append(RegisterFile(TINY))
        return opened[-1]

    def open_buffer(name, nbytes=4096 * 4):
        assert name == "udmabuf0"
        opened.append(ArrayBuffer(nbytes))
        return opened[-1]

    monkeypatch.setattr(board_backend, "DevMemWindow", open_window)
    monkeypatch.setattr(board_backend, "UdmaBuffer", open_buffer)
    with BoardBackend(TINY, 4096) as be:
        assert be.buffer is opened[0] and be.window is opened[1]
        assert not any(part.closed for part in opened)
    assert all(part.closed for part in opened)
    # A buffer it opened that turns out too small is closed before the error.
    opened.clear()
    monkeypatch.setattr(board_backend, "UdmaBuffer", lambda name: open_buffer(name, 4096))
    with pytest.raises(ValueError, match="holds 4096 bytes"):
        BoardBackend(TINY, 4096)
    assert opened[0].closed


# -- /dev/mem, u-dma-buf, UIO against fake files --------------------------------------------

def test_devmem_window(tmp_path):
    path = tmp_path / "mem"
    path.write_bytes(bytes(4096))
    w = DevMemWindow(0x100, size=0x100, path=path)   # in-page offset 0x100 of the mapping
    w.write32(0x10, 0x1122_3344)
    w.write32(0xFC, 0xFFFF_FFFF_8000_0001)           # masked to 32 bits
    with pytest.raises(ValueError, match="multiple of 4 below 0x100"):
        w.write32(0x100, 0)
    with pytest.raises(ValueError, match="0x12"):
        w.read32(0x12)
    want = bytearray(4096)
    want[0x110:0x114] = bytes([0x44, 0x33, 0x22, 0x11])   # little-endian
    want[0x1FC:0x200] = bytes([0x01, 0x00, 0x00, 0x80])
    assert path.read_bytes() == want
    with open(path, "r+b") as f:
        f.seek(0x120)
        f.write(struct.pack("<I", 0xCAFE_F00D))
    assert w.read32(0x20) == 0xCAFE_F00D
    w.close()
    w.close()   # twice is fine
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist.*CONFIG_DEVMEM"):
        DevMemWindow(0xA000_0000, path=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="phys_base"):
        DevMemWindow(0xA000_0002, path=path)


def _udmabuf_tree(root, name="udmabuf0", *, phys=0x1E90_0000, size=65536, sync=True,
                  cls="u-dma-buf"):
    sysfs = root / "sys" / "class" / cls / name
    sysfs.mkdir(parents=True)
    (sysfs / "phys_addr").write_text(f"0x{phys:016x}\n")
    (sysfs / "size").write_text(f"{size}\n")
    (sysfs / "dma_coherent").write_text("0\n")
    if sync:
        for f, v in [("sync_mode", "1"), ("sync_offset", "0"), ("sync_size", "0"),
                     ("sync_direction", "0"), ("sync_owner", "0"), ("sync_for_cpu", ""),
                     ("sync_for_device", "")]:
            (sysfs / f).write_text(v)
    (root / "dev").mkdir(exist_ok=True)
    (root / "dev" / name).write_bytes(bytes(size))
    return sysfs


def test_udmabuf_manual_cache_maintenance(tmp_path):
    sysfs = _udmabuf_tree(tmp_path)
    buf = UdmaBuffer(root=tmp_path)
    assert (buf.phys_addr, buf.nbytes, buf.manual_sync) == (0x1E90_0000, 65536, True)
    assert buf.array.dtype == np.uint32 and buf.array.shape == (16384,)

    def sysfs_files():
        return {f: (sysfs / f).read_text() for f in ("sync_offset", "sync_size",
                                                     "sync_direction", "sync_for_device",
                                                     "sync_for_cpu")}
    assert sysfs_files()["sync_for_device"] == sysfs_files()["sync_for_cpu"] == ""
    buf.array[3] = 0x0102_0304
    buf.flush()
    assert sysfs_files() == {"sync_offset": "0\n", "sync_size": "65536\n",
                             "sync_direction": "0\n", "sync_for_device": "1\n",
                             "sync_for_cpu": ""}
    (sysfs / "sync_size").write_text("4096")   # another process's range: written again
    buf.invalidate()
    assert sysfs_files()["sync_size"] == "65536\n" and sysfs_files()["sync_for_cpu"] == "1\n"
    buf.close()
    assert (tmp_path / "dev" / "udmabuf0").read_bytes()[12:16] == bytes([4, 3, 2, 1])


def test_udmabuf_without_manual_sync_and_old_class(tmp_path):
    sysfs = _udmabuf_tree(tmp_path, "dmabuf3", size=8192, sync=False, cls="udmabuf")
    buf = UdmaBuffer("dmabuf3", root=tmp_path)
    assert (buf.nbytes, buf.manual_sync) == (8192, False)
    buf.flush()
    buf.invalidate()
    assert sorted(os.listdir(sysfs)) == ["dma_coherent", "phys_addr", "size"]
    buf.close()


def test_udmabuf_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no u-dma-buf named 'udmabuf0'.*insmod "
                                                "u-dma-buf.ko udmabuf0="):
        UdmaBuffer(root=tmp_path)
    _udmabuf_tree(tmp_path, "udmabuf1")
    with pytest.raises(FileNotFoundError, match="the buffers there are udmabuf1"):
        UdmaBuffer(root=tmp_path)
    os.remove(tmp_path / "dev" / "udmabuf1")
    with pytest.raises(FileNotFoundError, match="dev/udmabuf1 does not exist.*no device file"):
        UdmaBuffer("udmabuf1", root=tmp_path)


@pytest.fixture
def fake_uio():
    """A pty in raw mode as the UIO device: what UioIrq writes (the unmask) comes out of
    ``master``; 4 bytes written to ``master`` are an interrupt (its event count)."""
    import tty
    try:
        master, slave = os.openpty()
    except OSError as e:
        pytest.skip(f"no pty: {e}")
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(slave)
    os.close(master)


def test_uio_irq(fake_uio):
    master, path = fake_uio
    irq = UioIrq(path)
    irq.enable()
    assert os.read(master, 16) == struct.pack("=I", 1)   # unmasked
    assert irq.wait(0.05) is False
    os.write(master, struct.pack("=I", 1))
    assert irq.wait(5) is True
    # An interrupt from before the enable is forgotten.
    os.write(master, struct.pack("=I", 2))
    time.sleep(0.05)
    irq.enable()
    assert os.read(master, 16) == struct.pack("=I", 1)
    assert irq.wait(0.05) is False
    irq.close()
    assert not select.select([master], [], [], 0)[0]


def test_uio_irq_opened_by_the_backend(fake_uio):
    """``irq="/dev/uioN"`` means a UioIrq the backend opens (and closes)."""
    master, path = fake_uio
    be = BoardBackend(TINY, 4096, window=RegisterFile(TINY), buffer=ArrayBuffer(4096 * 4),
                      irq=path)
    assert isinstance(be.irq, UioIrq) and be.irq._fd is not None
    be.close()
    assert be.irq._fd is None


def test_uio_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="uio7 does not exist.*generic-uio"):
        UioIrq(str(tmp_path / "uio7"))


@pytest.mark.skipif(pynq_available(), reason="pynq is installed")
def test_pynq_parts_without_pynq():
    with pytest.raises(ImportError, match="PynqWindow needs the pynq package.*DevMemWindow"):
        PynqWindow(0xA000_0000)
    with pytest.raises(ImportError, match="PynqBuffer needs the pynq package.*UdmaBuffer"):
        PynqBuffer(1 << 20)
