"""The tile machine: the accelerator's tile program executed in numpy, instruction by instruction.

This is the functional model of the whole accelerator at the level of its instruction set
(:mod:`ef_train_hdl.isa`): the tile buffers (two halves of Tn IFM and Tm OFM banks, Tm x Tn
weight banks) as numpy arrays, a DRAM image, and each instruction's effect as the loader, the
tile engine or the storer has it, bit for bit, in the arithmetic of :mod:`.fp` and the
element-wise ops of :mod:`.ops`. The order of every addition inside a job is the address
generator's (docs/numerics.md sections 4-7 applied to one job: its ``term_base`` places it in
the reduction), so a tile program run here gives the DRAM image the layer-level model gives
(tests/test_lower.py checks that for every layer type) and the one the hardware gives
(tests/test_accel.py).

:meth:`TileMachine.run` fetches instructions from the DRAM image like the command processor:
magic, checksum, :func:`ef_train_hdl.isa.check`, the engine's job checks; it stops at END,
HOST_SYNC or the first error with the :class:`~ef_train_hdl.descriptor.ErrorCode` the hardware
reports. It runs the instructions one after the other in program order, which is what any
execution that honours the program's tokens computes; :func:`check_tokens` checks that claim
for a program by running its three instruction streams concurrently with random durations.
"""

from __future__ import annotations

import heapq
import random

import numpy as np

from .. import isa
from ..descriptor import ErrorCode
from ..isa import INSTR_WORDS, Instr, LoadMode, Op, Post, Source, Target, Unit, UNIT_OF
from . import ops
from .fp import as_f32, bits, fadd, fmul, fmul_bf16, ftz, tree_sum

__all__ = ["TileMachine", "MachineError", "job_error", "check_tokens", "ENGINE_ERRORS"]

_ONE = np.float32(1.0)


class MachineError(Exception):
    def __init__(self, code, message):
        self.code = ErrorCode(code)
        super().__init__(f"{self.code.name}: {message}")


#: How the command processor reports the tile engine's refusals (core/job.py TileError).
ENGINE_ERRORS = {
    1: ErrorCode.BAD_FLAGS,        # PHASE
    2: ErrorCode.BAD_KERNEL,       # KERNEL
    3: ErrorCode.BAD_STRIDE,       # STRIDE
    4: ErrorCode.BAD_SIZE,         # SHAPE
    5: ErrorCode.BAD_INTERLEAVE,   # INTERLEAVE
    6: ErrorCode.BAD_TILE,         # IFM_RANGE
    7: ErrorCode.BAD_TILE,         # WEIGHT_RANGE
    8: ErrorCode.BAD_TILE,         # OFM_RANGE
    9: ErrorCode.BAD_TILE,         # DRAIN_RANGE
}

_ACC_LOOP = None


def _acc_loop():
    global _ACC_LOOP
    if _ACC_LOOP is None:
        from ..config import ACC_LOOP_LATENCY
        _ACC_LOOP = ACC_LOOP_LATENCY
    return _ACC_LOOP


def job_error(job, cfg):
    """The TileError code (0 = none) the address generator gives a COMPUTE's job: the
    checks of core/addrgen.py in its order."""
    k, s, p = job.kernel, job.stride, 1 << job.log2_p
    area_in = job.in_rows * job.in_cols
    area_out = job.out_rows * job.out_cols
    if job.phase == 3:
        return 1
    if k == 0 or k > cfg.k_max:
        return 2
    if s == 0 or s > cfg.stride_max:
        return 3
    if 0 in (job.in_rows, job.in_cols, job.out_rows, job.out_cols):
        return 4
    if (p > cfg.acc_interleave or (job.phase == 0 and area_out * p < _acc_loop()) or
            (job.phase == 2 and k * k * p < _acc_loop())):
        return 5
    if job.ifm_base + area_in > cfg.ifm_depth:
        return 6
    w_end = job.w_base + (k * k * p if job.phase == 2 else k * k)
    if w_end > cfg.weight_depth:
        return 7
    o_end = job.ofm_base + (area_out if job.phase == 2 else area_out * p)
    if o_end > cfg.ofm_depth:
        return 8
    return 0


def _bp_hazard(job, cfg):
    """BP phases whose pixels revisit a slot sooner than the accumulator loop allows."""
    p = 1 << job.log2_p
    for taps, npix in _bp_phases(job):
        if npix and taps and npix * p < _acc_loop():
            return True
    return False


def _bp_phases(job):
    k, s = job.kernel, job.stride
    out = []
    for py, px in ([(0, 0)] if s == 1 else [(0, 0), (0, 1), (1, 0), (1, 1)]):
        ys = [y for y in range(job.out_rows) if s == 1 or (y & 1) == (py ^ (job.row_off & 1))]
        xs = [x for x in range(job.out_cols) if s == 1 or (x & 1) == (px ^ (job.col_off & 1))]
        y0 = ys[0] if ys else 0
        x0 = xs[0] if xs else 0
        ty = [ky for ky in range(k - 1, -1, -1) if (y0 + job.row_off - ky) % s == 0]
        tx = [kx for kx in range(k - 1, -1, -1) if (x0 + job.col_off - kx) % s == 0]
        out.append((len(ty) * len(tx), len(ys) * len(xs)))
    return out


class TileMachine:
    """Banks, DRAM and the instruction semantics (see the module docstring).

    Parameters
    ----------
    cfg : AcceleratorConfig
        Must satisfy :func:`ef_train_hdl.lower.check_config`.
    mem : numpy.ndarray of uint32
        The DRAM image (used in place).
    """

    def __init__(self, cfg, mem):
        from ..lower import check_config
        check_config(cfg)
        self.cfg = cfg
        self.mem = mem
        t = cfg.tm
        rng = np.random.default_rng(0)
        # Banks start with junk: nothing may depend on a fresh buffer (uint32 bit patterns).
        self.ifm = rng.integers(0, 2**32, (2, t, cfg.ifm_depth), dtype=np.uint64).astype(
            np.uint32).view(np.float32)
        self.ofm = rng.integers(0, 2**32, (2, t, cfg.ofm_depth), dtype=np.uint64).astype(
            np.uint32).view(np.float32)
        self.w = rng.integers(0, 2**32, (t, t, cfg.weight_depth), dtype=np.uint64).astype(
            np.uint32).view(np.float32)
        self.mul = fmul_bf16 if cfg.mult_format == "bf16" else fmul
        self.executed = 0

    # -- DRAM -----------------------------------------------------------------------------

    def _read(self, addr, words, what):
        if addr + words > len(self.mem):
            raise MachineError(ErrorCode.AXI_READ_ERROR,
                               f"{what}: read of {words} words at word {addr} beyond DRAM")
        return self.mem[addr:addr + words].view(np.float32)

    def _write(self, addr, values, what):
        flat = np.asarray(values)
        flat = flat.view(np.uint32) if flat.dtype == np.float32 else flat.astype(np.uint32)
        if addr + len(flat) > len(self.mem):
            raise MachineError(ErrorCode.AXI_WRITE_ERROR,
                               f"{what}: write of {len(flat)} words at word {addr} beyond "
                               f"DRAM")
        self.mem[addr:addr + len(flat)] = flat

    # -- running a program ----------------------------------------------------------------

    def run(self, addr, max_instructions=1 << 24):
        """Run the program at word ``addr``; returns ``(op, stop_addr, code, message)``: the
        instruction it stopped at (END, HOST_SYNC or the failing one) and the error."""
        for _ in range(max_instructions):
            if addr + INSTR_WORDS > len(self.mem):
                return Op.END, addr, ErrorCode.AXI_READ_ERROR, "fetch beyond DRAM"
            try:
                instr = isa.unpack(self.mem[addr:addr + INSTR_WORDS])
            except isa.InstrError as e:
                return Op.END, addr, e.code, str(e)
            code, message = isa.check(instr, self.cfg)
            if code != ErrorCode.OK:
                return instr.op, addr, code, message
            if instr.op in (Op.END, Op.HOST_SYNC):
                return instr.op, addr, ErrorCode.OK, ""
            try:
                self.execute(instr)
            except MachineError as e:
                return instr.op, addr, e.code, str(e)
            self.executed += 1
            addr += INSTR_WORDS
        return Op.END, addr, ErrorCode.BAD_OPCODE, "no END"

    def execute(self, instr):
        if instr.op == Op.LOAD:
            self._load(instr)
        elif instr.op == Op.COMPUTE:
            self._compute(instr)
        elif instr.op == Op.STORE:
            self._store(instr)

    def run_program(self, program):
        """Execute a list of :class:`~ef_train_hdl.isa.Instr` (already checked) in order."""
        for instr in program:
            code, message = isa.check(instr, self.cfg)
            if code != ErrorCode.OK:
                raise MachineError(code, message)
            self.execute(instr)

    # -- LOAD -----------------------------------------------------------------------------

    def _load(self, i):
        cfg, t = self.cfg, self.cfg.tm
        if i.target == Target.BIAS:
            vec = self._read(i.addr_a, t, "bias")
            self.w[:, 0, i.bank_base] = vec
            return
        if i.target == Target.WEIGHT:
            kk, blk = i.taps, i.taps * t * t
            for r in range(i.runs):
                data = self._read(i.addr_a + r * i.dram_stride, i.count * blk, "weights")
                data = data.reshape(i.count, kk, t, t)          # block, tap, mi, nj
                if i.transpose:
                    data = data.transpose(0, 1, 3, 2)           # -> bank row nj, column mi
                for l in range(i.count):
                    a = i.bank_base + r * i.bank_run_stride + l * i.bank_step
                    self.w[:, :, a:a + kk] = data[l].transpose(1, 2, 0)
            return
        banks = self.ifm if i.target == Target.IFM else self.ofm
        if i.mode == LoadMode.PLAIN:
            for r in range(i.runs):
                px = self._read(i.addr_a + r * i.dram_stride, i.count * t, "load")
                px = px.reshape(i.count, t)
                addrs = i.bank_base + r * i.bank_run_stride + np.arange(i.count) * i.bank_step
                banks[i.half][:, addrs] = px.T
            return
        a = self._read(i.addr_a, i.count * t, "gradient").reshape(i.count, t)
        if i.mode in (LoadMode.RELU_BP, LoadMode.RELU_POOL_BP):
            b = self._read(i.addr_b, i.count * t, "relu output").reshape(i.count, t)
            a = ops.relu_bp(a, b)
        if i.mode in (LoadMode.POOL_BP, LoadMode.RELU_POOL_BP):
            w, h = i.pool_width, i.pool_height
            if i.addr_c + i.count * t > len(self.mem):
                raise MachineError(ErrorCode.AXI_READ_ERROR, "pool index beyond DRAM")
            idx = self.mem[i.addr_c:i.addr_c + i.count * t].reshape(i.count, t)
            g = a.reshape(h // 2, w // 2, t).transpose(2, 0, 1)[None]
            ix = (idx.reshape(h // 2, w // 2, t).transpose(2, 0, 1)[None] & 3)
            full = ops.maxpool_bp(g, ix, (h, w))[0]             # t, h, w
            a = full.transpose(1, 2, 0).reshape(h * w, t)
        addrs = i.bank_base + np.arange(a.shape[0]) * i.bank_step
        banks[i.half][:, addrs] = a.T

    # -- COMPUTE --------------------------------------------------------------------------

    def _compute(self, job):
        cfg = self.cfg
        err = job_error(job, cfg)
        if err == 0 and job.phase == 1 and _bp_hazard(job, cfg):
            err = 5
        if err:
            raise MachineError(ENGINE_ERRORS[err], f"the tile engine refuses the job "
                               f"(TileError {err}): {job!r}")
        if job.phase == 0:
            self._fp(job)
        elif job.phase == 1:
            self._bp(job)
        else:
            self._wu(job)

    def _plane(self, job):
        """The job's input plane, zero-padded by a margin of K on every side:
        ``[Tn, in_rows + 2K, in_cols + 2K]`` with plane (r, c) at (r + K, c + K)."""
        k = job.kernel
        rows, cols = job.in_rows, job.in_cols
        words = self.ifm[job.ifm_half][:, job.ifm_base:job.ifm_base + rows * cols]
        # A margin wide enough for every row/column offset the job's fields allow.
        m = k + 2 * max(rows, cols) + 256
        plane = np.zeros((self.cfg.tn, rows + 2 * m, cols + 2 * m), np.float32)
        plane[:, m:m + rows, m:m + cols] = words.reshape(-1, rows, cols)
        return plane, m

    def _fp(self, job):
        t, k, s = self.cfg.tm, job.kernel, job.stride
        p = 1 << job.log2_p
        kk = k * k
        rows, cols = job.out_rows, job.out_cols
        plane, m = self._plane(job)
        npx = rows * cols
        oy, ox = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        oy, ox = oy.reshape(-1), ox.reshape(-1)
        acc_addr = job.ofm_base + np.arange(npx) * p
        ofm = self.ofm[job.ofm_half]
        if job.term_base == 0 and kk < p:
            for slot in range(p):
                ofm[:, acc_addr + slot] = 0
        bias = self.w[:, 0, job.bias_addr].copy() if job.bias else None
        for tap in range(kk):
            ky, kx = divmod(tap, k)
            q = job.term_base * kk + tap
            slot, first = q % p, q < p
            r = m + job.row_off + oy * s + ky
            c = m + job.col_off + ox * s + kx
            x = plane[:, r, c]                                   # tn, npx
            wv = self.w[:, :, job.w_base + tap]                  # t, tn
            prod = self.mul(wv[:, :, None], x[None, :, :])       # t, tn, npx
            term = tree_sum(prod, axis=1)                        # t, npx
            if first:
                init = (np.broadcast_to(bias[:, None], term.shape) if bias is not None and
                        slot == 0 else np.zeros_like(term))
                prev = init
            else:
                prev = ofm[:, acc_addr + slot]
            ofm[:, acc_addr + slot] = fadd(term, prev)

    def _bp(self, job):
        t, k, s = self.cfg.tm, job.kernel, job.stride
        p = 1 << job.log2_p
        rows, cols = job.out_rows, job.out_cols
        plane, m = self._plane(job)
        ofm = self.ofm[job.ofm_half]
        for py, px in ([(0, 0)] if s == 1 else [(0, 0), (0, 1), (1, 0), (1, 1)]):
            ys = np.array([y for y in range(rows)
                           if s == 1 or (y & 1) == (py ^ (job.row_off & 1))], np.int64)
            xs = np.array([x for x in range(cols)
                           if s == 1 or (x & 1) == (px ^ (job.col_off & 1))], np.int64)
            if len(ys) == 0 or len(xs) == 0:
                continue
            ty = [ky for ky in range(k - 1, -1, -1) if (ys[0] + job.row_off - ky) % s == 0]
            tx = [kx for kx in range(k - 1, -1, -1) if (xs[0] + job.col_off - kx) % s == 0]
            ntaps = len(ty) * len(tx)
            yy, xx = np.meshgrid(ys, xs, indexing="ij")
            yy, xx = yy.reshape(-1), xx.reshape(-1)
            acc_addr = job.ofm_base + (yy * cols + xx) * p
            if job.term_base == 0 and ntaps < p:
                for slot in range(p):
                    ofm[:, acc_addr + slot] = 0
            for i, (ky, kx) in enumerate((ky, kx) for ky in ty for kx in tx):
                q = job.term_base * ntaps + i
                slot, first = q % p, q < p
                r = m + (yy + job.row_off - ky) // s
                c = m + (xx + job.col_off - kx) // s
                x = plane[:, r, c]
                wv = self.w[:, :, job.w_base + ky * k + kx]
                term = tree_sum(self.mul(wv[:, :, None], x[None, :, :]), axis=1)
                prev = np.zeros_like(term) if first else ofm[:, acc_addr + slot]
                ofm[:, acc_addr + slot] = fadd(term, prev)

    def _wu(self, job):
        t, k, s = self.cfg.tm, job.kernel, job.stride
        p = 1 << job.log2_p
        kk = k * k
        rows, cols = job.out_rows, job.out_cols
        npx = rows * cols
        g = self.ofm[job.ofm_half][:, job.ofm_base:job.ofm_base + npx]      # t, npx
        oy, ox = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        oy, ox = oy.reshape(-1), ox.reshape(-1)
        if job.ones:
            x = np.full((t, npx, kk), _ONE, np.float32)
        else:
            plane, m = self._plane(job)
            x = np.empty((t, npx, kk), np.float32)
            for tap in range(kk):
                ky, kx = divmod(tap, k)
                x[:, :, tap] = plane[:, m + job.row_off + oy * s + ky,
                                     m + job.col_off + ox * s + kx]
        # terms[pixel, mi, nj, tap]
        terms = self.mul(g.T[:, :, None, None], x.transpose(1, 0, 2)[:, None, :, :])
        wb = self.w
        base = job.w_base
        addr = base + np.arange(kk) * p                                       # per tap
        if job.term_base == 0 and npx < p:
            for slot in range(p):
                wb[:, :, addr + slot] = 0
        terms = ftz(as_f32(terms))
        q0 = job.term_base
        for i0 in range(0, npx, p):
            i1 = min(npx, i0 + p)
            for i in range(i0, i1):
                q = q0 + i
                slot = q % p
                prev = np.zeros((t, t, kk), np.float32) if q < p else wb[:, :, addr + slot]
                wb[:, :, addr + slot] = fadd(terms[i], prev)

    # -- STORE ----------------------------------------------------------------------------

    def _drain(self, i):
        cfg, t = self.cfg, self.cfg.tm
        p = 1 << i.log2_p
        depth = cfg.ofm_depth if i.source == Source.OFM else cfg.weight_depth
        if (i.drain_count == 0 or p > cfg.acc_interleave or
                i.drain_base + i.drain_count * p > depth):
            raise MachineError(ErrorCode.BAD_TILE, f"drain of {i.drain_count} results x {p} "
                               f"from word {i.drain_base} exceeds the {depth}-word bank")
        addrs = i.drain_base + np.arange(i.drain_count)[:, None] * p + np.arange(p)[None, :]
        if i.source == Source.OFM:
            parts = self.ofm[i.half][:, addrs]                  # t, count, p
            vals = parts[:, :, 0] if p == 1 else tree_sum(parts, axis=2)
            return vals.T.reshape(-1)                           # pixel-major, lanes
        parts = self.w[:, :, addrs]                             # t, t, count, p
        vals = parts[..., 0] if p == 1 else tree_sum(parts, axis=3)
        if i.bias_select:
            return vals[:, 0, :].T.reshape(-1)                  # tap, mi
        return vals.transpose(2, 0, 1).reshape(-1)              # tap, mi, nj

    def _store(self, i):
        t = self.cfg.tm
        words = i.runs * i.run_words
        if i.source == Source.DRAM:
            data = self._read(i.addr_grad, words, "SGD gradient").copy()
        else:
            data = self._drain(i)
        idx = None
        if i.post in (Post.RELU, Post.RELU_POOL):
            data = ops.relu_fp(data)
        if i.post in (Post.POOL, Post.RELU_POOL):
            w, h = i.pool_width, i.pool_height
            mp = data.reshape(h, w, t).transpose(2, 0, 1)[None]
            v, ix = ops.maxpool_fp(mp)
            data = v[0].transpose(1, 2, 0).reshape(-1)
            idx = ix[0].transpose(1, 2, 0).reshape(-1).astype(np.uint32)
        if i.post in (Post.SGD, Post.SGD_MOMENTUM):
            w_old = self._read(i.addr_out, words, "SGD weights").copy()
            if i.post == Post.SGD_MOMENTUM:
                v_old = self._read(i.addr_aux, words, "SGD momentum").copy()
                w_new, v_new = ops.sgd(w_old, data, _f32(i.lr), self.cfg, mu=_f32(i.mu),
                                       v=v_old)
                self._write(i.addr_out, w_new, "SGD weights")
                self._write(i.addr_aux, v_new, "SGD momentum")
            else:
                w_new, _ = ops.sgd(w_old, data, _f32(i.lr), self.cfg)
                self._write(i.addr_out, w_new, "SGD weights")
            return
        data = as_f32(data)
        for r in range(i.runs):
            self._write(i.addr_out + r * i.dram_stride,
                        data[r * i.run_words:(r + 1) * i.run_words], "store")
        if idx is not None:
            self._write(i.addr_aux, idx, "pool index")


def _f32(word):
    return np.uint32(word).view(np.float32)


# -- tokens: the program run concurrently ------------------------------------------------------

def check_tokens(program, *, seed=0, queue_depth=4, max_tokens=255):
    """Run ``program``'s three instruction streams concurrently as the hardware would, with
    random durations, honouring only the tokens and each unit's order; raise AssertionError
    if two conflicting instructions (their ``_deps``, from :func:`ef_train_hdl.lower.
    dependencies`) overlap in time, a token count goes negative or past ``max_tokens``, the
    program deadlocks, or tokens are left at END / HOST_SYNC. Returns the schedule's length
    in time units (a sanity figure, not a performance model)."""
    rng = random.Random(seed)
    queues = {u: [] for u in Unit}
    barrier_after = []
    order = []
    for idx, instr in enumerate(program):
        if instr.op in (Op.END, Op.HOST_SYNC):
            barrier_after.append(idx)
            continue
        order.append(idx)
    tokens = {(a, b): 0 for a in Unit for b in Unit if a != b}
    start, end = {}, {}
    now = 0
    events = []                      # (time, seq, unit, idx)
    seq = 0
    pos = {u: 0 for u in Unit}
    streams = {u: [i for i in order if UNIT_OF[program[i].op] == u] for u in Unit}
    busy = {u: None for u in Unit}
    segments = []
    last = -1
    for b in barrier_after + [len(program)]:
        segments.append((last, b))
        last = b
    for lo, hi in segments:
        seg_streams = {u: [i for i in streams[u] if lo < i < hi] for u in Unit}
        pos = {u: 0 for u in Unit}
        while True:
            progressed = False
            for u in Unit:
                if busy[u] is not None or pos[u] >= len(seg_streams[u]):
                    continue
                idx = seg_streams[u][pos[u]]
                instr = program[idx]
                need = {v: instr[f"wait_{v.name.lower()}"] for v in Unit if v != u}
                if all(tokens[(v, u)] >= n for v, n in need.items()):
                    for v, n in need.items():
                        tokens[(v, u)] -= n
                    start[idx] = now
                    dur = rng.choice([1, 2, 5, 20, 100])
                    busy[u] = idx
                    heapq.heappush(events, (now + dur, seq, u, idx))
                    seq += 1
                    progressed = True
            if events:
                now, _, u, idx = heapq.heappop(events)
                end[idx] = now
                busy[u] = None
                pos[u] += 1
                instr = program[idx]
                for v in Unit:
                    if v != u and instr[f"signal_{v.name.lower()}"]:
                        tokens[(u, v)] += 1
                        assert tokens[(u, v)] <= max_tokens, "token counter overflow"
                continue
            if progressed:
                continue
            done = all(pos[u] >= len(seg_streams[u]) for u in Unit)
            assert done, ("deadlock: " + ", ".join(
                f"{u.name} waits at instruction {seg_streams[u][pos[u]]}"
                for u in Unit if pos[u] < len(seg_streams[u])))
            break
        assert all(v == 0 for v in tokens.values()), f"tokens left at a barrier: {tokens}"
    for idx in order:
        for j in program[idx].get("_deps", ()):
            assert end[j] <= start[idx] or UNIT_OF[program[j].op] == UNIT_OF[program[idx].op], (
                f"instruction {idx} ({program[idx]!r}) started at {start[idx]} before "
                f"instruction {j} ({program[j]!r}), which it depends on, ended at {end[j]}")
    return now
