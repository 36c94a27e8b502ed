"""The analytical model of a tile program: cycles per instruction, overlapped as the tokens allow.

:mod:`ef_train_hdl.perf` models a layer from its loop nest with the paper's ping-pong formula
(it picks the tiling). This module times the **tile program the accelerator actually runs**
(:mod:`ef_train_hdl.lower`): every instruction gets a duration from a formula — a COMPUTE the
tile engine's exact job cycles (:func:`ef_train_hdl.model.tiles.job_cycles`), a LOAD its DRAM
latency and beats, a STORE its drain (one beat per P cycles, held up while a job of the
engine owns the half or weight region it reads, later jobs in the program included), post-op
latency and write beats — and the three units, the instruction fetch and the two DMA
channels are then overlapped exactly as far as the program's tokens, the queues and the
shared read channel let them (a schedule computed instruction by instruction, again until it
is stable, its loader reads and instruction fetches then served in the order the DMA takes
them; not a cycle simulation). The constants below are the gateware's pipeline
latencies; ``bench sim`` prints the model's error against the Verilator simulation of every
layer.

DRAM model (:class:`TileDram`): what ``ef_train_hdl.vsim`` and the ``sim`` backend simulate —
``read_latency`` cycles from a read burst's address to its first beat, then one beat a cycle;
``write_latency`` from a write burst's last beat to its response.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .accel.readmux import piece_words
from .config import LOADER_FIFO_BEATS, STORER_FIFO_BEATS
from .core.drain import drain_lanes, reduce_lanes
from .core.job import Phase, addr_bits
from .isa import INSTR_WORDS, LoadMode, Op, Post, Source, Target
from .model.tiles import job_end

__all__ = ["TileDram", "ProgramPerf", "program_perf"]

# -- gateware constants (cycles) -------------------------------------------------------------
DECODE_PERIOD = 5        # decoder: one instruction every DECODE_LATENCY + 1 cycles
DISPATCH_DELAY = 6       # instruction words in -> in its unit's queue
TOKEN_DELAY = 2          # a give -> the consumer can start
ENGINE_GAP = 1           # the engine's IDLE cycle between two jobs
LOAD_SETUP = 3           # loader stage 1: take, SIZE, first request
LOAD_TAIL = 4            # last beat -> bank written -> GIVE
LOAD_SLICE = 1           # the loader's register slice: router FIFO -> stage 2
#: Loader stage 2 from one instruction's end to the next one's first beat: GIVE, IDLE (takes
#: the next from the handoff), SETUP, SETUP2, SETUP3, then WRITE; counted from the modelled
#: end (LOAD_TAIL after the last beat), one cycle more after a pixel load, whose last beat
#: leaves through the widener.
LOAD_RESTART = {"weights": 1, "pixels": 2}
#: Loads in the loader at once: one in stage 2 and two in the handoff FIFO between the
#: stages; stage 1 takes the next when the one LOAD_AHEAD back has ended.
LOAD_AHEAD = 3
#: A DMA read slot is free again this many cycles after its burst's last beat (measured: the
#: next address two cycles after the last beat, which the model counts as ``end - 1``).
DMA_SLOT_FREE = 1
ROUTER_DELAY = 3         # request -> AR on the bus
#: The router's register slice on the storer's requests (not the loader's or the fetcher's).
REQUEST_SLICE = 1
STORE_SETUP = 4          # storer: take, SIZE, SIZE2, START
DRAIN_SETUP = 2          # drain job -> first read (START, CHECK, CHECK_RANGE)
DRAIN_LATENCY = 6        # last read -> its beat at the writer (drain, 3 storer slices),
#                          plus 7 a pairing stage
WRITE_CMD = 4            # NEXT, CMD, DmaWrite: command -> first W beat
#: Between the runs of a multi-run store: the storer's NEXT and CMD (measured: a run of one
#: beat every 3 cycles on the tiny array, Amaranth simulator, with the write bursts in flight
#: not the limit).
RUN_GAP = 2
#: A write burst's slot in the DMA (``max_outstanding`` = ``max_outstanding_reads`` bursts
#: from AW to B) is free again this many cycles after its response is due
#: (``write_latency`` after its last beat): measured, the burst ``max_outstanding`` later
#: starts its beats ``write_latency + 3`` after that one's last beat.
WRITE_SLOT_FREE = 3
SGD_LATENCY = {Post.SGD: 27, Post.SGD_MOMENTUM: 27}      # one momentum-capable unit:
#                                   drain beat -> its w' written (FMUL, FADD twice, gearboxes)
POOL_LATENCY = 3
QUEUE_DEPTH = 4
FETCH_INSTRS = 8
#: The loader's read-router FIFOs (beats), streams A, B, C.
STREAM_FIFO_BEATS = tuple(LOADER_FIFO_BEATS.values())


@dataclass(frozen=True)
class TileDram:
    read_latency: int = 30
    write_latency: int = 20
    #: read beats per cycle (1 = the full bus)
    read_rate: float = 1.0


@dataclass
class ProgramPerf:
    """The modelled schedule of one program."""
    cycles: int
    engine_busy: int                 # cycles the tile engine runs jobs
    ops: int                         # MAC steps (one per cycle of Tm x Tn MACs)
    read_beats: int
    write_beats: int
    fetch_beats: int
    per_unit: dict = field(default_factory=dict)


class _Channel:
    """The read channel, shared by every client.

    The schedule books requests in program order, but the DMA serves them in the order they
    were made: an instruction fetch asked for during a long load gets its beats between the
    load's bursts, after the few already issued, not after the whole load. So a channel
    records every keyed request of a pass, and :meth:`replay` serves them as the DMA does
    (request order, ``max_outstanding_reads`` bursts in flight); the next pass takes each
    request's beats from there (``served``). Without a replay (the first passes), a request
    of ``beats`` issued at ``t`` delivers them from ``latency`` cycles later, one beat a cycle
    (``rate``), in the first stretch of that length the channel has free."""

    def __init__(self, latency, rate=1.0, served=None):
        self.latency, self.rate = latency, rate
        self.busy = []           # sorted, disjoint [start, end) stretches of data beats
        self.beats = 0
        self.served = served     # key -> (start, end) of the previous pass's replay, or None
        self.requests = []       # (time, order, key, beats) of this pass
        self.first = float("inf")  # the first beat

    def transfer(self, t, beats, key=None):
        if key is not None:
            self.requests.append((t, len(self.requests), key, beats))
            if self.served is not None and key in self.served:
                # Where the replay of the previous pass's requests put it.
                start = self.served[key][0]
                self.beats += beats
                self.first = min(self.first, start)
                return start, start + beats / self.rate
        return self._fill(t, beats)

    def replay(self, outstanding):
        """The requests of this pass as the DMA serves them: in the order they came (the
        router takes one a cycle), an address issued while fewer than ``outstanding`` bursts
        wait for data, the beats one burst after the other. ``{key: (start, end)}``."""
        served, ar, ends = {}, -1.0, []
        data = 0.0
        for t, _, key, beats in sorted(self.requests):
            a = max(t + ROUTER_DELAY, ar + 1)
            if len(ends) >= outstanding:
                a = max(a, ends[-outstanding] + DMA_SLOT_FREE)
            ar = a
            start = max(a + self.latency - ROUTER_DELAY, data)
            data = start + beats / self.rate
            ends.append(data)
            served[key] = (start, data)
        return served

    def _fill(self, t, beats):
        import bisect
        length = beats / self.rate
        start = t + self.latency
        i = bisect.bisect_right(self.busy, (start, float("inf"))) - 1
        if i >= 0 and self.busy[i][1] > start:
            start = self.busy[i][1]
        i = max(i, 0)
        while i < len(self.busy):
            s, e = self.busy[i]
            if e <= start:
                i += 1
                continue
            if s >= start + length:
                break
            start = max(start, e)
            i += 1
        end = start + length
        self.first = min(self.first, start)
        bisect.insort(self.busy, (start, end))
        self.beats += beats
        return start, end


def _beats(words, f):
    return -(-int(words) // f)


#: Schedules computed at most for one program: the engine's jobs that come after a store in
#: the program but run while it drains (they wait for nothing it gives) hold up its reads too,
#: and a schedule in program order sees them only from the previous pass.
PASSES = 64


def program_perf(program, cfg, dram=TileDram(), trace=None):
    """:class:`ProgramPerf` of ``program`` (a list of :class:`~ef_train_hdl.isa.Instr` with
    tokens, ending with END) on ``cfg`` with ``dram``. ``trace``, a list, receives
    ``(index, unit, start, end)`` of every instruction (to see where the time goes).

    The schedule is computed again with the engine's jobs of the previous pass, until its
    cycles no longer change; then again with the read channel's beats where the DMA served
    the previous pass's requests (:meth:`_Channel.replay`), until the replay of a pass is
    the one it was given: every read is where the DMA serves it, at the time it is asked
    for (at most :data:`PASSES` passes in all; the last is taken if none settles). Equal
    cycles of two passes are not enough there: an instruction fetch that a pass books
    behind a long load moves forward by one fetch block a pass (vgg 6:fc BP at batch 16
    takes 35 passes and comes out 4 % faster than where equal cycles stopped)."""
    barrier = _store_barriers(program)
    prior = served = previous = None
    replaying = False
    for _ in range(PASSES):
        steps = []
        perf, prior, replay = _schedule(program, cfg, dram, steps, prior, barrier,
                                        served if replaying else None)
        if replaying and replay == served:
            break                # every read where the replay it was given put it
        if not replaying and previous is not None and perf.cycles == previous:
            replaying = True
        previous = perf.cycles
        served = replay
    if trace is not None:
        trace.extend(steps)
    return perf


def _schedule(program, cfg, dram, trace, prior, barrier, served=None):
    """One pass of :func:`program_perf`: ``(ProgramPerf, owned, served)``, where ``owned``
    maps a buffer half or weight region to the ``(start, end, index)`` of the jobs owning it
    and ``served`` is the replay of this pass's reads (:meth:`_Channel.replay`); ``prior``
    and ``served`` (the argument) are the previous pass's, or None; ``barrier``:
    :func:`_store_barriers`."""
    f, t = cfg.floats_per_beat, cfg.tm
    piece = 64 * f
    # The storer's SGD pieces, as accel/storer.py sizes them.
    sgd_piece = min(piece_words(cfg, d) for d in STORER_FIFO_BEATS.values())
    rd = _Channel(dram.read_latency + ROUTER_DELAY, dram.read_rate, served)
    # The storer's reads (SGD operands) share the bus with the loader's, but the router takes
    # requests in turn and the storer only ever runs ahead of nothing: its pieces fill the
    # bus around the loads, which set the pace of the jobs. They are scheduled on a channel of
    # their own, and the two together bound the program by the bus's bandwidth at the end.
    rd_store = _Channel(dram.read_latency + ROUTER_DELAY + REQUEST_SLICE, dram.read_rate)
    wr_free = 0.0
    wr_done = []                 # last beat of every write burst so far
    fetch_beats = 0

    # Fetch and dispatch: instructions arrive in blocks of 4 over the read channel.
    ibeats = INSTR_WORDS // f
    free = {"load": 0.0, "compute": 0.0, "store": 0.0}       # unit available from
    stage2_free = 0.0                                        # loader's writer
    load_ends = []                                           # end of every load so far
    in_fifo = ([], [], [])       # per loader stream: (written out, beats) of its pieces
    started = {"load": [], "compute": [], "store": []}       # start times, per unit
    end = {}                                                 # instruction -> end (give) time
    give_load = {}                                           # store -> writes acknowledged
    signals = {}                                             # (from, to) -> [times]
    consumed = {}                                            # (from, to) -> count taken
    engine_busy = []                                         # (start, end) of jobs
    engine_free = 0.0
    bg_done = bg_phase = None                                # the job flushing
    ops = 0
    read_beats = write_beats = 0
    decode_t = 0.0
    fetched = 0
    fetch_ready = []                                         # arrival time per instruction
    decoded = []                                             # decoder done, per instruction
    unit_of = {Op.LOAD: "load", Op.COMPUTE: "compute", Op.STORE: "store"}
    t_end = 0.0

    def fetch_until(k, now):
        nonlocal fetched, fetch_beats
        while fetched <= k:
            # A block of 4 instructions, requested when the fetch FIFO (FETCH_INSTRS
            # instructions) has room for it: when the block FETCH_INSTRS back has left it,
            # as the gateware does, the assembler taking an instruction's beats once the
            # decoder has taken the one before (so the block's last instruction's beats
            # leave once the decoder has its second-to-last). (Until stop 18 this point was
            # fitted one instruction later, which made up for a replay that stopped before
            # its requests had settled.)
            oldest_last = fetched - FETCH_INSTRS + 3      # last instruction of that block
            ahead = decoded[oldest_last - 1] + ibeats if fetched >= FETCH_INSTRS else 0
            s, e = rd.transfer(max(now if fetched == 0 else 0, ahead), 4 * ibeats,
                               ("fetch", fetched))
            fetch_beats += 4 * ibeats
            for j in range(4):
                fetch_ready.append(s + (j + 1) * ibeats)
            fetched += 4

    def wait_tokens(instr, unit):
        """Earliest time the tokens ``instr`` waits for are there."""
        ready = 0.0
        for src in ("load", "compute", "store"):
            n = instr[f"wait_{src}"]
            if not n:
                continue
            key = (src, unit)
            k = consumed.get(key, 0) + n
            times = signals.get(key, [])
            if k > len(times):
                raise ValueError(f"instruction waits for token {k} from {src}, which never "
                                 f"comes")
            consumed[key] = k
            ready = max(ready, times[k - 1] + TOKEN_DELAY)
        return ready

    def signal(instr, unit, when, to_load=None):
        for dst in ("load", "compute", "store"):
            if dst != unit and instr[f"signal_{dst}"]:
                at = to_load if (dst == "load" and to_load is not None) else when
                signals.setdefault((unit, dst), []).append(at)

    # The engine's jobs own their OFM half and the weight regions they read or accumulate
    # into from the cycle the engine takes them to the end of their flush; a drain reads a
    # half or region only while no job owns it (core.drain, ``engine_*_owned``).
    owned = {}                                               # ("ofm", h) / ("w", r) -> jobs
    wtop = addr_bits(cfg.weight_depth) - 1

    def w_region(addr):
        return (int(addr) >> wtop) & 1

    def owning_jobs(keys, k):
        """``(start, end)`` of the jobs owning one of ``keys`` that the drain of store ``k``
        can meet: those before it scheduled so far, and the later ones as the previous pass
        scheduled them."""
        jobs = [iv[:2] for key in keys for iv in owned.get(key, ())]
        if prior is not None:
            # Only the jobs that can run before this store is done: not the one waiting for
            # its token (or for a later store's), nor any after it (the unit is in order).
            stop = barrier.get(k, len(program))
            jobs += [iv[:2] for key in keys for iv in prior.get(key, ()) if k < iv[2] < stop]
        return sorted(jobs)

    def unowned_time(jobs, t0, need):
        """When ``need`` cycles of reads that start at ``t0`` and stall while one of
        ``jobs`` (sorted ``(start, end)``) runs are done."""
        tcur, left = t0, need
        for s, e in jobs:
            if e <= tcur:
                continue
            if s > tcur:
                gap = s - tcur
                if gap >= left:
                    return tcur + left
                left -= gap
            tcur = max(tcur, e)
        return tcur + left

    for k, instr in enumerate(program):
        op = instr.op
        fetch_until(k, 0)
        decode_t = max(decode_t + DECODE_PERIOD, fetch_ready[k])
        if op in (Op.END, Op.HOST_SYNC):
            decoded.append(decode_t)
            t_end = max([decode_t, t_end, wr_free] + list(end.values()) +
                        list(give_load.values()))
            continue
        unit = unit_of[op]
        # Queue of QUEUE_DEPTH: dispatch when the instruction QUEUE_DEPTH back has started.
        q = started[unit]
        dispatch = decode_t + DISPATCH_DELAY
        if len(q) >= QUEUE_DEPTH:
            dispatch = max(dispatch, q[-QUEUE_DEPTH])
        decode_t = max(decode_t, dispatch - DISPATCH_DELAY)
        decoded.append(decode_t)
        tok = wait_tokens(instr, unit)
        start = max(free[unit], dispatch, tok)
        if op == Op.LOAD and len(load_ends) >= LOAD_AHEAD:
            start = max(start, load_ends[-LOAD_AHEAD])

        if op == Op.COMPUTE:
            # The engine takes a job when idle, or in the last operation's cycle of the one
            # before; that one's flush runs in the background if the phase is the same
            # (model.tiles.jobs_schedule).
            job = _job(instr)
            take = max(start + 1, engine_free)
            if bg_done is not None and bg_phase != job["phase"]:
                take = max(take, bg_done)
            s = take + 1
            e, engine_free = job_end(s, job, cfg, bg_done)
            engine_busy.append((s, e))
            kk = job["kernel"] ** 2
            taps = kk << job["log2_p"] if job["phase"] == Phase.WU.value else kk
            w_last = instr.w_base + taps - 1
            keys = {("ofm", instr.ofm_half), ("w", w_region(instr.w_base)),
                    ("w", w_region(w_last))}
            if job["bias"] and job["phase"] == Phase.FP.value:
                keys.add(("w", w_region(instr.bias_addr)))
            for key in keys:
                owned.setdefault(key, []).append((take, e, k))
            bg_done, bg_phase = e, job["phase"]
            free[unit] = take            # the next job waits at the engine's port
            ops += _ops(job)
            end[k] = e
            signal(instr, unit, e)
        elif op == Op.LOAD:
            words = _load_words(instr, t)
            streams = 1 + (instr.mode in (LoadMode.RELU_BP, LoadMode.RELU_POOL_BP)) + \
                (instr.mode in (LoadMode.POOL_BP, LoadMode.RELU_POOL_BP))
            s1 = start + LOAD_SETUP
            data_end = s1
            first = None
            runs = 1 if instr.target == Target.BIAS else max(1, instr.runs)
            run_words = words // runs
            writes = _load_writes(instr, t, f)        # cycles the banks need
            per_beat = writes / max(1, _beats(words, f))
            taken = 0                                 # beats of stream A written so far
            for run in range(runs):                      # pieces of each DRAM run
                left = run_words
                while left > 0:
                    w = min(piece, left)
                    b = _beats(w, f)
                    for stream in range(streams):
                        # The router grants a piece when the stream's FIFO has room for
                        # it: the pieces before it, of this load and the ones before,
                        # leave as stage 2 writes them.
                        fifo = in_fifo[stream]
                        while sum(n for _, n in fifo) + b > STREAM_FIFO_BEATS[stream]:
                            s1 = max(s1, fifo.pop(0)[0])
                        ds, de = rd.transfer(s1, b, ("load", k, run, left, stream))
                        first = ds if first is None else first
                        data_end = max(data_end, de)
                        fifo.append((max(de, stage2_free + (taken + b) * per_beat), b))
                        s1 += 1
                    taken += b
                    left -= w
            read_beats += streams * _beats(words, f)
            e = max(data_end + LOAD_SLICE, (first or s1) + LOAD_SLICE + writes,
                    stage2_free + writes) + LOAD_TAIL
            load_ends.append(e)
            stage2_free = e + LOAD_RESTART[
                "pixels" if instr.target in (Target.IFM, Target.OFM) else "weights"]
            free[unit] = s1                  # stage 1 is free once it has issued
            end[k] = e
            signal(instr, unit, e)
        else:  # STORE
            s0 = start + STORE_SETUP
            words = instr.runs * instr.run_words
            p = 1 << instr.log2_p
            if instr.source == Source.DRAM:
                src_beats, rate = _beats(words, f), 1.0
                ds, de = rd_store.transfer(s0, src_beats)
                read_beats += src_beats
                src_end = de
                src_first = ds
            else:
                # Convolution results (OFM, P = 1) a beat a cycle; partial sums and weight
                # gradients half a beat a cycle (core.drain).
                lanes = drain_lanes(cfg) if (instr.source != Source.WEIGHT and
                                             instr.log2_p == 0) else reduce_lanes(cfg)
                per = (t * t if instr.source == Source.WEIGHT else t) // lanes
                src_beats = instr.drain_count * per
                reads = src_beats * p
                d0 = s0 + DRAIN_SETUP
                # Its reads wait while a job owns the half (or weight region) it drains.
                if instr.source == Source.WEIGHT:
                    base = instr.drain_base
                    last = base + (instr.drain_count << instr.log2_p) - 1
                    keys = {("w", w_region(base)), ("w", w_region(last))}
                else:
                    keys = {("ofm", instr.half)}
                lat_d = DRAIN_LATENCY + 7 * instr.log2_p
                jobs = owning_jobs(keys, k)
                src_end = unowned_time(jobs, d0, reads) + lat_d
                src_first = unowned_time(jobs, d0, 1) + lat_d
            out_beats = _beats(words, f)
            lat = 0
            w_first = src_first
            if instr.post in (Post.SGD, Post.SGD_MOMENTUM):
                streams = 2 if instr.post == Post.SGD_MOMENTUM else 1
                # The SGD consumes its operands at the write channel's pace (w' and v': two
                # write beats an input beat with momentum), and its reader keeps two pieces
                # a stream in flight, so its pieces spread over the store.
                pace = _beats(sgd_piece, f) * streams
                left, r_end, k_piece = words, s0, 0
                while left > 0:
                    w = min(sgd_piece, left)
                    issue = s0 + max(0, k_piece - 1) * pace
                    for _ in range(streams):
                        ds, de = rd_store.transfer(issue, _beats(w, f))
                        r_end = max(r_end, de)
                        w_first = max(w_first, ds) if left == words else w_first
                    left -= w
                    k_piece += 1
                read_beats += streams * out_beats
                lat = SGD_LATENCY[instr.post]
                src_end = max(src_end, r_end)
                out_beats *= streams
            elif instr.post in (Post.POOL, Post.RELU_POOL):
                lat = POOL_LATENCY
                out_beats *= 2                        # values, then the index run
            # The write commands, in beats: the SGD's pieces (w' and v' of each with
            # momentum), values then indices after a pool, else one per DRAM run.
            if instr.post in (Post.SGD, Post.SGD_MOMENTUM):
                per_cmd = [_beats(min(sgd_piece, words - o), f)
                           for o in range(0, words, sgd_piece) for _ in range(streams)]
            elif instr.post in (Post.POOL, Post.RELU_POOL):
                per_cmd = [out_beats // 2] * 2
            else:
                per_cmd = [out_beats // max(1, instr.runs)] * max(1, instr.runs)
            per_cmd = per_cmd or [0]
            per_cmd[-1] += out_beats - sum(per_cmd)
            w_start = max(w_first + lat, wr_free, s0 + WRITE_CMD)
            # A source slower than the writes is the pace. With momentum the staged v' of
            # each piece goes out between the pieces' w'. A source at the SGD's own pace
            # (P = 1: a beat every two cycles) waits for all of it (measured: the Verilator
            # runs of the convolution WU layers); a slower one (partial sums, P > 1: a beat
            # every 2 P cycles) goes on into the drain's FIFO meanwhile, so that only the
            # last piece's v' (with its NEXT and CMD cycles) follows the source's end.
            held = 0
            if instr.post == Post.SGD_MOMENTUM:
                n_pieces = max(1, -(-words // sgd_piece))
                last_piece = words - (n_pieces - 1) * sgd_piece
                stall = _beats(sgd_piece, f) if instr.log2_p == 0 else 0
                held = (n_pieces - 1) * stall + _beats(last_piece, f) + 2
            # Written as fast as the writer goes (a command a piece), or, when the source is
            # the slower, its last beat in the cycle it comes out of the post-ops; the unit
            # takes its next instruction three cycles after that (RUN, FINISH, IDLE). The
            # first piece's command goes out while the source's first beat is on its way
            # (AW 6 cycles before the first W beat in the simulator's trace of LeNet's last
            # FC layer, BP, batch 16), so only the later pieces' commands add to the beats.
            gap = RUN_GAP if instr.post in (Post.NONE, Post.RELU) else WRITE_CMD
            w_bound = _write_bursts(wr_done, w_start, per_cmd, gap, cfg.max_burst_beats,
                                    cfg.max_outstanding_reads,
                                    dram.write_latency + WRITE_SLOT_FREE)
            s_bound = src_end + lat + held
            w_end = max(w_bound, s_bound)
            wr_free = w_end
            write_beats += out_beats
            e = max(w_bound + 2, s_bound + 3)
            free[unit] = e
            end[k] = e
            ack = w_end + dram.write_latency + 3
            give_load[k] = ack
            signal(instr, unit, e, to_load=ack)
        started[unit].append(start)
        t_end = max(t_end, end[k])
        if trace is not None:
            trace.append((k, unit, start, end[k]))

    # Every read beat crosses the one bus: the program takes at least that long.
    first_read = min(rd.first, rd_store.first)
    first_read = 0 if first_read == float("inf") else first_read
    t_end = max(t_end, first_read + (rd.beats + rd_store.beats) / dram.read_rate)
    busy = sum(e - s for s, e in engine_busy)
    return ProgramPerf(cycles=int(round(t_end)), engine_busy=int(busy), ops=ops,
                       read_beats=read_beats + fetch_beats, write_beats=write_beats,
                       fetch_beats=fetch_beats), owned, rd.replay(cfg.max_outstanding_reads)


def _write_bursts(done, t, pieces, gap, max_burst, outstanding, free_after):
    """The end of a store's writes that start at ``t``: ``pieces`` (beats each, one
    command each, ``gap`` cycles between commands) split into bursts of ``max_burst``
    beats, a beat a cycle, each burst waiting for a slot of the DMA's ``outstanding``
    (free ``free_after`` cycles after the last beat of the burst that held it). ``done``,
    the last beat of every burst so far, is extended."""
    for i, beats in enumerate(pieces):
        if i:
            t += gap
        while beats > 0:
            n = min(beats, max_burst)
            if len(done) >= outstanding:
                t = max(t, done[-outstanding] + free_after)
            t += n
            done.append(t)
            beats -= n
    return t


def _store_barriers(program):
    """For each STORE, the index of the first COMPUTE that cannot start before it is done:
    the one that takes the token of this store, or of the first later store that gives the
    compute unit one (the store unit runs its instructions in order, and so does the
    compute unit)."""
    consumer, pending = {}, []
    for k, instr in enumerate(program):
        if instr.op == Op.STORE and instr["signal_compute"]:
            pending.append(k)
        elif instr.op == Op.COMPUTE and instr["wait_store"]:
            for _ in range(instr["wait_store"]):
                if pending:
                    consumer[pending.pop(0)] = k
    barrier, nxt = {}, None
    for k in range(len(program) - 1, -1, -1):
        if program[k].op == Op.STORE:
            if program[k]["signal_compute"]:
                nxt = consumer.get(k)
            if nxt is not None:
                barrier[k] = nxt
    return barrier


def _job(instr):
    keys = ("phase", "kernel", "stride", "in_rows", "in_cols", "out_rows", "out_cols",
            "row_off", "col_off", "term_base", "log2_p", "bias")
    return {k: instr[k] for k in keys}


def _ops(job):
    from .model.tiles import job_ops
    return job_ops(job)


def _load_words(instr, t):
    if instr.target == Target.WEIGHT:
        return instr.count * instr.taps * t * t * instr.runs
    if instr.target == Target.BIAS:
        return t
    return instr.count * t * instr.runs


def _load_writes(instr, t, f):
    """Cycles the loader's writer needs: one a beat for weights, one a pixel for planes (a
    pooled map writes its full-resolution pixels)."""
    if instr.target in (Target.WEIGHT, Target.BIAS):
        return _beats(_load_words(instr, t), f)
    if instr.mode in (LoadMode.POOL_BP, LoadMode.RELU_POOL_BP):
        return instr.pool_width * instr.pool_height
    return instr.count * instr.runs * max(1, t // f)
