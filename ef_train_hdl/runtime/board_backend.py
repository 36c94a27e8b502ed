"""The ``board`` backend: the accelerator in the programmable logic of a Zynq running Linux.

The host (the Zynq's ARM cores) reaches the accelerator in two ways, and this module is the
seam between them and the one register-level :class:`~.driver.Driver` that the simulators
also run:

- the **register window**: the accelerator's AXI4-Lite CSR block, mapped at ``csr_base`` on
  a PS master port (``M_AXI_HPM0_FPD`` at 0xA000_0000 on Zynq UltraScale+ is the default);
- the **DMA buffer**: physically contiguous DDR that the accelerator's AXI4 master reaches
  through an HP port. The host's DRAM image (programs, parameters, activations, gradients,
  built from word 0 by the compiler) lives in it, and the driver writes its bus address into
  DRAM_BASE before every run, so the image runs wherever the kernel placed the buffer.

Both are small protocols (:class:`RegisterWindow`, :class:`DmaBuffer`) with two real
implementations each: PYNQ (:class:`PynqWindow`, :class:`PynqBuffer`; ``pynq`` is imported only
when they are used) and plain Linux (:class:`DevMemWindow`: ``/dev/mem``; :class:`UdmaBuffer`:
the u-dma-buf kernel module). The tests put fakes backed by the Amaranth simulation of the
accelerator behind the same protocols (tests/test_board_backend.py), so everything above the
seam — cache maintenance, DRAM_BASE, the run protocol — is the code the board runs.

Caches: the HP ports are not coherent with the ARM caches, so :class:`BoardBackend` flushes
the buffer (CPU caches -> DDR) before every run and invalidates it (DDR -> CPU) when the run
stops, before the host reads what the accelerator wrote. Between runs the accelerator is idle
and the buffer belongs to the CPU.

Interrupts: with an :class:`IrqLine` (:class:`UioIrq`: a ``generic-uio`` device on the
accelerator's ``irq`` output) a run sleeps until the accelerator stops; without one the
driver polls STATUS. Time limits are in seconds (``max_seconds``); the driver's ``max_cycles``
counts microseconds here.
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import time

import numpy as np

from ..axi.csr import field, reg
from .api import Backend, register_backend
from .driver import Driver, DriverCounters, DriverError

__all__ = ["BoardBackend", "RegisterWindow", "DmaBuffer", "IrqLine", "DevMemWindow",
           "PynqWindow", "UdmaBuffer", "PynqBuffer", "UioIrq", "pynq_available"]

#: DRAM_BASE ignores bits 11:0, so the DMA buffer starts on a 4 KiB page.
PAGE = 4096
_STATUS = reg("STATUS").offset
_IRQ_STATUS = reg("IRQ_STATUS").offset
_BUSY = 1 << field("STATUS", "busy").lsb


# -- the seam -------------------------------------------------------------------------------

class RegisterWindow:
    """Protocol: the accelerator's AXI4-Lite registers as the CPU sees them.

    Methods
    -------
    read32(offset) -> int
        The 32-bit register at byte ``offset`` from the CSR base (a multiple of 4).
    write32(offset, value)
        Write the 32-bit ``value`` there.

    Every access must be one 32-bit bus transaction (the ``_LO``/``_HI`` snapshot of the wide
    registers depends on the order of the reads). Optional: ``close()``.
    """

    def read32(self, offset):
        raise NotImplementedError

    def write32(self, offset, value):
        raise NotImplementedError


class DmaBuffer:
    """Protocol: physically contiguous memory that the accelerator's AXI master reads and writes.

    Attributes
    ----------
    phys_addr : int
        Bus address of the first byte, as the accelerator's AXI master sees it (DRAM_BASE).
    nbytes : int
        Size in bytes.
    array : numpy.ndarray
        uint32 view of the whole buffer, as the CPU sees it (``nbytes // 4`` words).

    Methods
    -------
    flush()
        CPU caches -> memory: before the accelerator reads what the CPU wrote.
    invalidate()
        Drop the CPU's cached copy: before the CPU reads what the accelerator wrote.

    Optional: ``close()``.
    """

    phys_addr = 0
    nbytes = 0
    array = None

    def flush(self):
        raise NotImplementedError

    def invalidate(self):
        raise NotImplementedError


class IrqLine:
    """Protocol: the accelerator's ``irq`` output as the host sees it.

    Methods
    -------
    enable()
        Unmask the interrupt and forget one that came before (called before every start).
    wait(timeout) -> bool
        Block until the interrupt arrives (True) or ``timeout`` seconds pass (False).

    Optional: ``close()``.
    """

    def enable(self):
        raise NotImplementedError

    def wait(self, timeout):
        raise NotImplementedError


# -- /dev/mem and u-dma-buf (plain Linux) ---------------------------------------------------

def _open_device(path, flags, what, hint):
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: {hint}") from None
    except PermissionError:
        raise PermissionError(f"{what} needs read/write access to {path}: run as root "
                              f"(sudo), or give your user access to it") from None


def _close_mmap(mm):
    try:
        mm.close()
    except BufferError:
        pass   # someone still holds a view of it: it is unmapped when that goes


class DevMemWindow(RegisterWindow):
    """The register window through ``/dev/mem`` (opened ``O_SYNC``, so the mapping is uncached
    device memory and every access reaches the bus).

    Parameters
    ----------
    phys_base : int
        Physical address of the CSR block (the Vivado address editor's offset).
    size : int
        Bytes mapped (default 4 KiB: the whole 12-bit AXI4-Lite space).
    path : str
        The physical-memory device (a test maps an ordinary file instead).
    """

    def __init__(self, phys_base, size=0x1000, *, path="/dev/mem"):
        if phys_base < 0 or phys_base % 4:
            raise ValueError(f"phys_base must be a non-negative multiple of 4, not "
                             f"0x{phys_base:X}")
        if size <= 0 or size % 4:
            raise ValueError(f"size must be a positive multiple of 4, not {size!r}")
        self.phys_base, self.size, self.path = int(phys_base), int(size), os.fspath(path)
        self._mm = None
        fd = _open_device(self.path, os.O_RDWR | os.O_SYNC, "the register window (DevMemWindow)",
                          "the register window needs physical memory access through /dev/mem "
                          "(a Linux kernel with CONFIG_DEVMEM), or PYNQ (PynqWindow)")
        try:
            page = self.phys_base - self.phys_base % mmap.ALLOCATIONGRANULARITY
            self._delta = self.phys_base - page
            self._mm = mmap.mmap(fd, self._delta + self.size, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE, offset=page)
        finally:
            os.close(fd)
        # A uint32 view: numpy moves an aligned uint32 element with one 32-bit access (PYNQ's
        # MMIO does the same). Little-endian: the AXI4-Lite data bus and the ARM cores are.
        self._words = np.frombuffer(self._mm, "<u4", self.size // 4, self._delta)

    def _index(self, offset):
        if offset % 4 or not 0 <= offset < self.size:
            raise ValueError(f"register offset must be a multiple of 4 below 0x{self.size:X}, "
                             f"not 0x{offset:X}")
        return offset // 4

    def read32(self, offset):
        return int(self._words[self._index(offset)])

    def write32(self, offset, value):
        self._words[self._index(offset)] = np.uint32(value & 0xFFFF_FFFF)

    def close(self):
        if self._mm is not None:
            self._words = None
            _close_mmap(self._mm)
            self._mm = None

    def __repr__(self):
        where = "" if self.path == "/dev/mem" else f", path={self.path!r}"
        return f"DevMemWindow(0x{self.phys_base:X}, size=0x{self.size:X}{where})"


#: Where the u-dma-buf module (and its predecessor udmabuf) publish their buffers.
UDMABUF_CLASSES = ("/sys/class/u-dma-buf", "/sys/class/udmabuf")
#: The sysfs files of u-dma-buf's manual cache maintenance.
_SYNC_FILES = ("sync_offset", "sync_size", "sync_direction", "sync_for_device", "sync_for_cpu")
_DMA_BIDIRECTIONAL = 0   # sync_direction: the accelerator reads and writes the buffer


class UdmaBuffer(DmaBuffer):
    """A DMA buffer of the u-dma-buf kernel module (``/dev/<name>``).

    Its bus address and size come from ``/sys/class/u-dma-buf/<name>/phys_addr`` and
    ``size``. If the module offers manual cache maintenance (the ``sync_*`` files), the buffer
    is mapped cached and :meth:`flush` / :meth:`invalidate` follow the u-dma-buf manual: write
    ``sync_offset`` (0), ``sync_size`` (the whole buffer) and ``sync_direction``
    (0, DMA_BIDIRECTIONAL), then 1 to ``sync_for_device`` (flush: the accelerator owns the
    buffer) or ``sync_for_cpu`` (invalidate: the CPU owns it). The range is written before
    every sync because those files are the device's, shared by every process that opens it.
    Without the ``sync_*`` files the buffer is opened ``O_SYNC``, mapped uncached, and both
    are no-ops.

    Parameters
    ----------
    name : str
        The buffer's device name (``udmabuf0`` for ``insmod u-dma-buf.ko udmabuf0=<bytes>``).
    root : str
        Prefix of ``/sys`` and ``/dev`` (a test builds a fake tree under a temporary folder).
    """

    def __init__(self, name="udmabuf0", *, root="/"):
        self.name = name
        self._mm = None
        self.array = None
        classes = [os.path.join(root, c.lstrip("/")) for c in UDMABUF_CLASSES]
        for cls in classes:
            if os.path.isdir(os.path.join(cls, name)):
                self.sysfs = os.path.join(cls, name)
                break
        else:
            found = sorted(n for cls in classes if os.path.isdir(cls) for n in os.listdir(cls))
            have = (f"the buffers there are {', '.join(found)}" if found else
                    "no u-dma-buf buffer exists: load the module with one large enough for "
                    "the DRAM image (sudo insmod u-dma-buf.ko udmabuf0=<bytes>, or a "
                    "u-dma-buf node in the device tree)")
            raise FileNotFoundError(f"no u-dma-buf named {name!r} "
                                    f"({classes[0]}/{name} does not exist); {have}")
        # phys_addr is printed with %pad ("0x000000001e900000"), size in decimal.
        self.phys_addr = int(self._sysfs_read("phys_addr"), 16)
        size = self._sysfs_read("size")
        self.nbytes = int(size, 16) if size.lower().startswith("0x") else int(size, 10)
        if self.nbytes <= 0 or self.nbytes % 4:
            raise ValueError(f"{self.sysfs}/size must be a positive multiple of 4, not {size!r}")
        self.manual_sync = all(os.path.exists(os.path.join(self.sysfs, f)) for f in _SYNC_FILES)
        self.dev = os.path.join(root, "dev", name)
        flags = os.O_RDWR | (0 if self.manual_sync else os.O_SYNC)
        fd = _open_device(self.dev, flags, f"the DMA buffer (UdmaBuffer {name!r})",
                          f"u-dma-buf lists {name!r} in sysfs but has no device file")
        try:
            self._mm = mmap.mmap(fd, self.nbytes, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.array = np.frombuffer(self._mm, np.uint32, self.nbytes // 4)

    def _sysfs_read(self, name):
        with open(os.path.join(self.sysfs, name)) as f:
            return f.read().strip()

    def _sysfs_write(self, name, value):
        path = os.path.join(self.sysfs, name)
        try:
            with open(path, "w") as f:
                f.write(f"{value}\n")
        except PermissionError:
            raise PermissionError(f"cache maintenance of {self.name!r} writes {path}: run as "
                                  f"root (sudo), or give your user write access to the "
                                  f"u-dma-buf sysfs files (a udev rule)") from None

    def _sync(self, which):
        self._sysfs_write("sync_offset", 0)
        self._sysfs_write("sync_size", self.nbytes)
        self._sysfs_write("sync_direction", _DMA_BIDIRECTIONAL)
        self._sysfs_write(which, 1)

    def flush(self):
        if self.manual_sync:
            self._sync("sync_for_device")

    def invalidate(self):
        if self.manual_sync:
            self._sync("sync_for_cpu")

    def close(self):
        if self._mm is not None:
            self.array = None
            _close_mmap(self._mm)
            self._mm = None

    def __repr__(self):
        return f"UdmaBuffer({self.name!r}: 0x{self.phys_addr:X}, {self.nbytes} bytes)"


class UioIrq(IrqLine):
    """The accelerator's interrupt through a UIO device (``uio_pdrv_genirq``: a device-tree
    node ``compatible = "generic-uio"`` with the PL-to-PS interrupt, and
    ``uio_pdrv_genirq.of_id=generic-uio`` on the kernel command line).

    Writing 1 to the device unmasks the interrupt (the kernel masks it each time it fires); a
    read returns once it has fired, and ``select`` bounds the wait.
    """

    def __init__(self, path="/dev/uio0"):
        self.path = path
        self._fd = _open_device(path, os.O_RDWR, f"the interrupt (UioIrq {path!r})",
                                "no UIO device: is the accelerator's irq a generic-uio node "
                                "in the device tree? (ls /sys/class/uio)")

    def enable(self):
        while select.select([self._fd], [], [], 0)[0]:   # an interrupt from before: forget it
            os.read(self._fd, 4)
        os.write(self._fd, struct.pack("=I", 1))

    def wait(self, timeout):
        if not select.select([self._fd], [], [], max(0.0, timeout))[0]:
            return False
        os.read(self._fd, 4)
        return True

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __repr__(self):
        return f"UioIrq({self.path!r})"


# -- PYNQ -----------------------------------------------------------------------------------

def pynq_available():
    """True if ``pynq`` can be imported (a PYNQ image)."""
    import importlib.util
    return importlib.util.find_spec("pynq") is not None


def _import_pynq(what, instead):
    try:
        import pynq
    except ImportError as e:
        raise ImportError(f"{what} needs the pynq package (a PYNQ image for the board), which "
                          f"is not installed ({e}); without PYNQ use {instead}") from None
    return pynq


class PynqWindow(RegisterWindow):
    """The register window through ``pynq.MMIO`` (the bitstream is loaded beforehand, e.g.
    with ``pynq.Overlay``)."""

    def __init__(self, phys_base, size=0x1000):
        pynq = _import_pynq("PynqWindow", "DevMemWindow (/dev/mem)")
        self.phys_base, self.size = int(phys_base), int(size)
        self._mmio = pynq.MMIO(self.phys_base, self.size)

    def read32(self, offset):
        return int(self._mmio.read(offset))

    def write32(self, offset, value):
        self._mmio.write(offset, int(value) & 0xFFFF_FFFF)

    def __repr__(self):
        return f"PynqWindow(0x{self.phys_base:X}, size=0x{self.size:X})"


class PynqBuffer(DmaBuffer):
    """A DMA buffer from ``pynq.allocate`` (contiguous, cacheable; PYNQ does the cache
    maintenance in ``flush`` / ``invalidate``). ``nbytes`` is rounded up to whole pages."""

    def __init__(self, nbytes):
        pynq = _import_pynq("PynqBuffer", "UdmaBuffer (the u-dma-buf kernel module)")
        self._buf = None
        self.nbytes = -(-int(nbytes) // PAGE) * PAGE
        self._buf = pynq.allocate(shape=(self.nbytes // 4,), dtype=np.uint32)
        self.phys_addr = int(self._buf.physical_address)
        self.array = self._buf.view(np.ndarray)

    def flush(self):
        self._buf.flush()

    def invalidate(self):
        self._buf.invalidate()

    def close(self):
        if self._buf is not None:
            self.array = None
            self._buf.freebuffer()
            self._buf = None

    def __repr__(self):
        return f"PynqBuffer(0x{self.phys_addr:X}, {self.nbytes} bytes)"


# -- the backend ----------------------------------------------------------------------------

class BoardBackend(DriverCounters, Backend):
    """See the module docstring.

    Parameters
    ----------
    cfg : AcceleratorConfig
        The configuration the bitstream was built for (checked against its registers).
    dram_words : int
        Size of the DRAM image in 32-bit words; the buffer must hold at least this many.
    csr_base : int
        Physical address of the register block (used when ``window`` is not given).
    window : RegisterWindow, optional
        Default: :class:`PynqWindow` on PYNQ (unless ``udmabuf`` is given), else
        :class:`DevMemWindow`.
    buffer : DmaBuffer, optional
        Default: a :class:`PynqBuffer` of ``dram_words * 4`` bytes on PYNQ (unless
        ``udmabuf`` is given), else ``UdmaBuffer(udmabuf)``. Must be 4 KiB aligned and at
        least ``dram_words * 4`` bytes, with a 1-D uint32 ``array``.
    udmabuf : str, optional
        Use the u-dma-buf buffer of this name (and ``/dev/mem`` for the registers unless
        ``window`` is given) even where ``pynq`` is installed. Default ``"udmabuf0"`` where it
        is not.
    irq : IrqLine or str, optional
        Wait for the interrupt (a path such as ``"/dev/uio0"`` means :class:`UioIrq`);
        without it the driver polls STATUS.
    max_seconds : float
        A run that takes longer is stopped with a soft reset and raises
        :class:`~.driver.DriverError` (a hang is an error).

    Attributes
    ----------
    window, buffer, irq, driver :
        The seam's three parts and the :class:`~.driver.Driver` running on them.
    """

    name = "board"
    counter_source = "accelerator counters (board)"
    program_kind = "tile"

    def __init__(self, cfg, dram_words, *, csr_base=0xA000_0000, window=None, buffer=None,
                 udmabuf=None, irq=None, max_seconds=60.0):
        super().__init__(cfg, dram_words)
        if not max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, not {max_seconds!r}")
        self.csr_base = int(csr_base)
        self.max_seconds = float(max_seconds)
        self.window = self.buffer = self.irq = None
        self._owned = []   # what this backend opened, and so closes
        # PYNQ's MMIO and allocate where it is installed, unless a u-dma-buf buffer is asked for.
        use_pynq = udmabuf is None and pynq_available()
        try:
            if buffer is None:
                buffer = (PynqBuffer(int(dram_words) * 4) if use_pynq
                          else UdmaBuffer(udmabuf or "udmabuf0"))
                self._owned.append(buffer)
            self._check_buffer(buffer)
            self.buffer = buffer
            if window is None:
                window = PynqWindow(self.csr_base) if use_pynq else DevMemWindow(self.csr_base)
                self._owned.append(window)
            self.window = window
            if isinstance(irq, (str, os.PathLike)):
                irq = UioIrq(os.fspath(irq))
                self._owned.append(irq)
            self.irq = irq
            if irq is not None:
                # The driver waits for the interrupt when its register object has wait_irq.
                self.wait_irq = self._wait_irq
            # The driver's max_cycles bounds its polling at max_cycles * 1 us; _wait_irq reads
            # it the same way.
            self.driver = Driver(self, cfg, max_cycles=int(self.max_seconds * 1e6),
                                 dram_base=buffer.phys_addr)
            try:
                self.driver.identify()
            except DriverError as e:
                raise DriverError(f"{self._where()}: {e}") from None
            if self.read_reg(_STATUS) & _BUSY:
                # Still running a program of a host process that is gone: stop it.
                self.soft_reset()
            # Every backend starts from a zero image (the model's does), whatever the buffer
            # held; the buffer belongs to the CPU between runs.
            self.buffer.array[:int(dram_words)] = 0
        except BaseException:
            self.close()   # what was opened before the failure
            raise

    def _where(self):
        if any(part is self.window for part in self._owned):
            return f"the accelerator at CSR base 0x{self.csr_base:X} ({self.window!r})"
        return f"the accelerator behind {self.window!r}"

    def _check_buffer(self, buffer):
        need = int(self.dram_words) * 4
        nbytes, phys = int(buffer.nbytes), int(buffer.phys_addr)
        if nbytes < need:
            raise ValueError(f"the DMA buffer {buffer!r} holds {nbytes} bytes; the DRAM image "
                             f"needs {need} (dram_words * 4): give a buffer of at least "
                             f"{need} bytes (u-dma-buf: udmabuf0={-(-need // PAGE) * PAGE} "
                             f"at insmod or the size in the device tree)")
        if phys < 0 or phys % PAGE:
            raise ValueError(f"the DMA buffer's phys_addr 0x{phys:X} must be 4 KiB aligned "
                             f"(a multiple of 0x1000): DRAM_BASE ignores bits 11:0")
        if phys + need > 1 << self.cfg.addr_width:
            raise ValueError(f"the DMA buffer at 0x{phys:X} must lie below 2**"
                             f"{self.cfg.addr_width}, the accelerator's AXI address space")
        array = buffer.array
        if (not isinstance(array, np.ndarray) or array.dtype != np.uint32 or array.ndim != 1
                or len(array) * 4 < need):
            what = (f"{array.dtype} of shape {array.shape}" if isinstance(array, np.ndarray)
                    else repr(type(array).__name__))
            raise ValueError(f"the DMA buffer's array must be a 1-D uint32 view of at least "
                             f"{need // 4} words, not {what}")

    # -- register access for the driver -------------------------------------------------------

    def read_reg(self, offset):
        return self.window.read32(offset)

    def write_reg(self, offset, value):
        self.window.write32(offset, value)

    def _wait_irq(self, max_cycles):
        deadline = time.monotonic() + max_cycles * 1e-6
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.irq.wait(left):
                raise DriverError(f"no interrupt from the accelerator within "
                                  f"{self.max_seconds:g} s (max_seconds); STATUS is "
                                  f"0x{self.read_reg(_STATUS):08X}")
            if not self.read_reg(_STATUS) & _BUSY:
                return True
            self.irq.enable()   # not ours (the accelerator is still busy): wait on

    # -- Backend ------------------------------------------------------------------------------

    def write(self, addr, words):
        words = np.asarray(words)
        if words.dtype != np.uint32:
            words = words.astype(np.uint32)
        if addr < 0 or addr + len(words) > self.dram_words:
            raise IndexError(f"write of {len(words)} words at {addr} outside the "
                             f"{self.dram_words}-word DRAM")
        self.buffer.array[addr:addr + len(words)] = words

    def read(self, addr, count):
        if addr < 0 or addr + count > self.dram_words:
            raise IndexError(f"read of {count} words at {addr} outside the "
                             f"{self.dram_words}-word DRAM")
        return np.array(self.buffer.array[addr:addr + count], np.uint32)

    def run(self, addr):
        self.buffer.flush()
        try:
            if self.irq is not None:
                self.write_reg(_IRQ_STATUS, 0x3)   # the line is low before it is unmasked
                self.irq.enable()
            try:
                return self.driver.run(addr)
            except DriverError as e:
                # A run past max_seconds: stop it, so that the accelerator no longer writes
                # the buffer the CPU takes back.
                try:
                    self.soft_reset()
                except DriverError as e2:
                    raise DriverError(f"{e2} (it had not stopped: {e})") from None
                raise DriverError(f"{self._where()}: {e} (stopped with a soft reset after "
                                  f"max_seconds={self.max_seconds:g})") from None
        finally:
            # Whatever the accelerator wrote is what the CPU sees, after an error too.
            self.buffer.invalidate()

    def soft_reset(self):
        """Stop a running program (the AXI transactions in flight finish) and reset the
        datapath; the registers keep their values."""
        self.driver.soft_reset()
        deadline = time.monotonic() + self.max_seconds
        while self.read_reg(_STATUS) & _BUSY:
            if time.monotonic() > deadline:
                raise DriverError(f"{self._where()}: still busy {self.max_seconds} s after a "
                                  f"soft reset")

    def close(self):
        """Unmap and close what this backend opened (not a window/buffer/irq it was given)."""
        for part in reversed(self._owned):
            close = getattr(part, "close", None)
            if close is not None:
                close()
        self._owned = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


register_backend("board", BoardBackend)
