"""The tile instruction set: what the command processor fetches and runs, defined once, as data.

A layer descriptor (:mod:`ef_train_hdl.descriptor`) says *what* one layer and phase computes;
the compiler lowers it (:mod:`ef_train_hdl.lower`) into a *tile program*: a linear array of
fixed-size instructions in DRAM, each one step of one of the accelerator's three units, which
run concurrently and in order each:

- ``LOAD`` (the loader): DRAM runs -> tile buffers (IFM, OFM, weight banks, a bias), with the
  load-path post-ops of BP and WU (ReLU backward, max-pool backward) on the way;
- ``COMPUTE`` (the tile engine): one tile job (:func:`ef_train_hdl.core.job.job_layout`);
- ``STORE`` (the storer): a drain of results (OFM half or weight-bank accumulators) or a DRAM
  run -> store-path post-ops (ReLU, max-pool with index, SGD) -> DRAM runs;
- ``END`` and ``HOST_SYNC``: wait until every unit is idle and every write has landed, then
  stop (done, or hand over to the host, which restarts at the next instruction).

The units synchronise with **tokens** (as in VTA's decoupled access-execute): six counters,
one per ordered pair of units. An instruction first *waits* for ``wait_<unit>`` tokens from
each other unit (consuming them), runs, and at its end *signals* one token to each unit named by
``signal_<unit>``. A LOAD signals when its words are in the banks; a COMPUTE when its job is
done; a STORE signals the compute unit when its drain has read the buffers and the loader when
its DRAM writes are acknowledged. The compiler derives the tokens from the read and write sets
of the instructions (:mod:`ef_train_hdl.lower`), so double buffering, weight reuse and the
order through DRAM between layers are all the program's, not fixed in the gateware.

Everything about the format lives in :data:`FIELDS`: an instruction is :data:`INSTR_WORDS`
little-endian 32-bit words; word 0 is the header (opcode, tokens) common to all opcodes, words
1..14 are the opcode's own fields, word 15 a checksum (XOR of words 0..14 with
:data:`CHECKSUM_SEED`) and the header carries a magic byte, so a fetch from a wrong address or
a corrupted program is refused rather than run. :func:`check` applies the command processor's
checks in Python and names the first problem by an :class:`~ef_train_hdl.descriptor.ErrorCode`,
the code the hardware reports. :func:`amaranth_layout` builds the gateware's view of an
opcode's fields from the same table.

DRAM addresses are **word addresses** (4 bytes) and start on a DMA beat; bank addresses are
words of a bank (every bank of the kind at once). ``python -m ef_train_hdl.isa --markdown``
prints the tables of docs/isa.md.
"""

from __future__ import annotations

import argparse
import enum
from dataclasses import dataclass

import numpy as np

from .descriptor import ErrorCode

__all__ = [
    "INSTR_WORDS", "INSTR_BYTES", "MAGIC", "CHECKSUM_SEED", "Op", "Unit", "UNIT_OF",
    "Target", "LoadMode", "Source", "Post", "Field", "FIELDS", "fields_of", "Instr",
    "pack", "unpack", "checksum", "check", "InstrError", "pack_program", "unpack_program",
    "amaranth_layout", "markdown_table", "TOKEN_FIELDS", "MAX_WAIT",
]

#: 32-bit words per instruction (64 bytes: a whole number of beats for every DMA width).
INSTR_WORDS = 16
INSTR_BYTES = 4 * INSTR_WORDS
#: The header's magic byte.
MAGIC = 0xE7
CHECKSUM_SEED = 0x7E1E_5EED
#: Largest token count one instruction can wait for from one unit.
MAX_WAIT = 15


class Op(enum.IntEnum):
    """Opcodes."""
    #: Wait until all units are idle and all writes acknowledged; stop and raise *done*.
    END = 0
    #: Like END, but the host resumes at the next instruction (it computes the loss gradient).
    HOST_SYNC = 1
    #: The loader: DRAM runs into tile buffers (with the BP/WU load-path post-ops).
    LOAD = 2
    #: The tile engine: one tile job.
    COMPUTE = 3
    #: The storer: a drain (or a DRAM run) through the store-path post-ops to DRAM.
    STORE = 4


class Unit(enum.IntEnum):
    LOAD = 0
    COMPUTE = 1
    STORE = 2


#: Which unit runs an opcode (END / HOST_SYNC run in the command processor itself).
UNIT_OF = {Op.LOAD: Unit.LOAD, Op.COMPUTE: Unit.COMPUTE, Op.STORE: Unit.STORE}


class Target(enum.IntEnum):
    """Where a LOAD writes."""
    #: IFM banks (Tn): pixels of Tn words, one bank word each per pixel.
    IFM = 0
    #: OFM banks (Tm): pixels of Tm words (WU's output gradients).
    OFM = 1
    #: Weight banks (Tm x Tn): weight words of Tm*Tn words (one per PE), tap by tap.
    WEIGHT = 2
    #: One word of weight bank (m, 0) for every lane m: a bias vector of Tm words.
    BIAS = 3


class LoadMode(enum.IntEnum):
    """How a LOAD forms what it writes (IFM and OFM targets; docs/numerics.md section 8)."""
    #: The words of stream A as they are.
    PLAIN = 0
    #: ReLU backward: A (gradient) where B (the stored ReLU output) is not +0, else +0.
    RELU_BP = 1
    #: Max-pool backward: A (pooled gradient) and C (index) -> the full-resolution map.
    POOL_BP = 2
    #: ReLU backward on the pooled map (B: the pooled output), then max-pool backward.
    RELU_POOL_BP = 3


class Source(enum.IntEnum):
    """What a STORE streams out."""
    #: A drain of an OFM half (FP/BP results, Tm lanes a pixel).
    OFM = 0
    #: A drain of the weight-bank accumulators (WU results, Tm x Tn words a tap).
    WEIGHT = 1
    #: A DRAM run (the gradient of a stand-alone SGD).
    DRAM = 2


class Post(enum.IntEnum):
    """Store-path post-ops."""
    NONE = 0
    RELU = 1
    POOL = 2
    RELU_POOL = 3
    #: ``w' = w - lr * g`` with ``w`` read from and written back to ``addr_out``.
    SGD = 4
    #: ``v' = mu * v + g; w' = w - lr * v'``, ``v`` read from and written back to ``addr_aux``.
    SGD_MOMENTUM = 5


@dataclass(frozen=True)
class Field:
    """Bits ``[lsb, lsb + width)`` of word ``word``; ``signed`` fields are two's complement."""
    name: str
    word: int
    lsb: int
    width: int
    doc: str = ""
    signed: bool = False

    @property
    def mask(self):
        return (1 << self.width) - 1

    @property
    def offset(self):
        return 32 * self.word + self.lsb


#: Word 0, common to every opcode.
HEADER = (
    Field("opcode", 0, 0, 4, "Op"),
    Field("wait_load", 0, 4, 4, "tokens to take from the loader first (not in a LOAD)"),
    Field("wait_compute", 0, 8, 4, "tokens to take from the compute unit first (not in a "
                                   "COMPUTE)"),
    Field("wait_store", 0, 12, 4, "tokens to take from the storer first (not in a STORE)"),
    Field("signal_load", 0, 16, 1, "give the loader a token at the end (not in a LOAD)"),
    Field("signal_compute", 0, 17, 1, "give the compute unit a token at the end (not in a "
                                      "COMPUTE)"),
    Field("signal_store", 0, 18, 1, "give the storer a token at the end (not in a STORE)"),
    Field("magic", 0, 24, 8, f"must be 0x{MAGIC:02X}"),
)
TOKEN_FIELDS = ("wait_load", "wait_compute", "wait_store", "signal_load", "signal_compute",
                "signal_store")
CHECKSUM = Field("checksum", INSTR_WORDS - 1, 0, 32, "XOR of words 0..14 and 0x7E1E5EED")

#: The opcode-specific fields (words 1..14).
FIELDS = {
    Op.END: (),
    Op.HOST_SYNC: (),
    Op.LOAD: (
        Field("target", 1, 0, 2, "Target: IFM, OFM, WEIGHT or BIAS"),
        Field("mode", 1, 2, 2, "LoadMode (IFM/OFM only; PLAIN otherwise)"),
        Field("half", 1, 4, 1, "IFM/OFM half written"),
        Field("transpose", 1, 5, 1, "WEIGHT: DRAM word (mi, nj) goes to PE (nj, mi) (BP)"),
        Field("addr_a", 2, 0, 32, "stream A: the data (pooled gradient in the BP/WU modes)"),
        Field("addr_b", 3, 0, 32, "stream B (RELU modes): the stored (pooled) ReLU output"),
        Field("addr_c", 4, 0, 32, "stream C (POOL modes): the pool indices, one word each"),
        Field("count", 5, 0, 32, "IFM/OFM: pixels of stream A per run; WEIGHT: blocks per "
                                 "run; BIAS: 1"),
        Field("runs", 6, 0, 16, "runs (PLAIN only; 1 otherwise)"),
        Field("taps", 6, 16, 8, "WEIGHT: weight words (taps) per block"),
        Field("dram_stride", 7, 0, 32, "words from one run's start to the next's"),
        Field("bank_base", 8, 0, 20, "bank word of the first pixel / weight word"),
        Field("bank_run_stride", 9, 0, 20, "bank words from one run's first word to the next"),
        Field("bank_step", 10, 0, 20, "IFM/OFM: bank words between pixels; WEIGHT: between "
                                      "blocks"),
        Field("pool_width", 11, 0, 16, "POOL modes: width of the full-resolution map"),
        Field("pool_height", 11, 16, 16, "POOL modes: rows of the full-resolution map written"),
    ),
    Op.COMPUTE: (
        Field("phase", 1, 0, 2, "Phase: FP 0, BP 1, WU 2"),
        Field("kernel", 1, 2, 4, "kernel size K"),
        Field("stride", 1, 6, 2, "stride s"),
        Field("log2_p", 1, 8, 4, "log2 of the accumulator interleave P"),
        Field("bias", 1, 12, 1, "FP: start the first slot from the lane's bias"),
        Field("ones", 1, 13, 1, "WU: the activation operand is 1.0 (bias gradient)"),
        Field("ifm_half", 1, 14, 1, "IFM half read"),
        Field("ofm_half", 1, 15, 1, "OFM half read (WU) or accumulated into (FP/BP)"),
        Field("row_off", 1, 16, 8, "output tile's first row over the input plane", True),
        Field("col_off", 1, 24, 8, "output tile's first column over the input plane", True),
        Field("in_rows", 2, 0, 16, "rows of the input plane in each IFM bank"),
        Field("in_cols", 2, 16, 16, "columns of the input plane"),
        Field("out_rows", 3, 0, 16, "output rows (WU: output-gradient rows)"),
        Field("out_cols", 3, 16, 16, "output columns"),
        Field("ifm_base", 4, 0, 20, "IFM bank word of the plane's first pixel"),
        Field("w_base", 5, 0, 20, "weight bank word of the first tap (WU: accumulators)"),
        Field("ofm_base", 6, 0, 20, "OFM bank word of the first result (WU: gradients)"),
        Field("term_base", 7, 0, 32, "place of the job in the reduction (numerics.md 4)"),
        Field("bias_addr", 8, 0, 20, "weight bank (m, 0) word of the bias"),
    ),
    Op.STORE: (
        Field("source", 1, 0, 2, "Source: OFM, WEIGHT or DRAM"),
        Field("post", 1, 2, 3, "Post"),
        Field("half", 1, 5, 1, "OFM: the half drained"),
        Field("bias_select", 1, 6, 1, "WEIGHT: keep PE (m, 0)'s word of each row: a bias "
                                      "gradient of Tm words a tap"),
        Field("log2_p", 1, 8, 4, "partial sums per result (drain)"),
        Field("drain_base", 2, 0, 20, "first bank word drained"),
        Field("drain_count", 3, 0, 21, "results drained (OFM: pixels; WEIGHT: taps)"),
        Field("addr_out", 4, 0, 32, "main output (SGD: the weights, read and written)"),
        Field("addr_aux", 5, 0, 32, "POOL: the index output; SGD_MOMENTUM: the momentum "
                                    "buffer (read and written)"),
        Field("addr_grad", 6, 0, 32, "DRAM source: the gradient read"),
        Field("runs", 7, 0, 16, "output runs"),
        Field("run_words", 8, 0, 32, "words per output run (runs * run_words = all words)"),
        Field("dram_stride", 9, 0, 32, "words from one output run's start to the next's"),
        Field("pool_width", 10, 0, 16, "POOL: width of the drained map"),
        Field("pool_height", 10, 16, 16, "POOL: rows of the drained map"),
        Field("lr", 11, 0, 32, "SGD: learning rate, binary32 bits"),
        Field("mu", 12, 0, 32, "SGD_MOMENTUM: momentum, binary32 bits"),
    ),
}


def fields_of(op):
    """Every field of opcode ``op``: the header, its own fields, the checksum."""
    return HEADER + FIELDS[Op(op)] + (CHECKSUM,)


def _check_tables():
    for op in Op:
        used = {}
        for f in fields_of(op):
            assert 0 <= f.word < INSTR_WORDS and f.lsb + f.width <= 32, f
            for bit in range(f.offset, f.offset + f.width):
                assert bit not in used, f"{op.name}: {f.name} overlaps {used[bit]}"
                used[bit] = f.name


_check_tables()


class Instr(dict):
    """One instruction: a dict of field values with ``op`` (an :class:`Op`) as ``opcode``.

    Missing fields are 0 (``magic`` defaults to :data:`MAGIC`). Attribute access reads fields:
    ``instr.count``. Extra keys starting with ``_`` (``_deps``, ``_reads``...) are the
    compiler's annotations; :func:`pack` ignores them.
    """

    def __init__(self, op, **fields):
        names = {f.name for f in fields_of(op)} - {"opcode", "checksum"}
        unknown = [k for k in fields if k not in names and not k.startswith("_")]
        if unknown:
            raise TypeError(f"{Op(op).name} has no field {unknown[0]!r}; its fields are "
                            f"{', '.join(sorted(names))}")
        super().__init__({f.name: 0 for f in fields_of(op)
                          if f.name not in ("opcode", "checksum")})
        self["magic"] = MAGIC
        self.update(fields)
        self["opcode"] = Op(op)

    @property
    def op(self):
        return self["opcode"]

    def replace(self, **changes):
        """A copy with ``changes`` applied."""
        fields = {k: v for k, v in self.items() if k != "opcode"}
        fields.update(changes)
        return Instr(self.op, **fields)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self):
        body = ", ".join(f"{k}={v}" for k, v in self.items()
                         if k not in ("opcode", "magic") and not k.startswith("_") and v)
        return f"{self.op.name}({body})"


def checksum(words):
    words = np.asarray(words, dtype=np.uint32)
    return int(np.bitwise_xor.reduce(words[:INSTR_WORDS - 1])) ^ CHECKSUM_SEED


class InstrError(ValueError):
    """An instruction the command processor refuses: carries the ErrorCode."""

    def __init__(self, code, message, *, index=None):
        self.code = ErrorCode(code)
        self.index = index
        where = f"instruction {index}: " if index is not None else ""
        super().__init__(f"{where}{self.code.name}: {message}")


def pack(instr):
    """``instr`` as :data:`INSTR_WORDS` uint32 words, checksummed."""
    words = [0] * INSTR_WORDS
    for f in fields_of(instr.op):
        if f.name == "checksum":
            continue
        value = int(instr[f.name])
        if f.signed:
            lo, hi = -(1 << (f.width - 1)), (1 << (f.width - 1)) - 1
            if not lo <= value <= hi:
                raise InstrError(ErrorCode.BAD_SIZE, f"{instr.op.name} field {f.name} = "
                                 f"{value} does not fit {f.width} signed bits ({lo}..{hi})")
            value &= f.mask
        elif not 0 <= value <= f.mask:
            raise InstrError(ErrorCode.BAD_SIZE, f"{instr.op.name} field {f.name} = {value} "
                             f"does not fit its {f.width} bits (0..{f.mask})")
        words[f.word] |= value << f.lsb
    words = np.array(words, dtype=np.uint32)
    words[CHECKSUM.word] = checksum(words)
    return words


def _get(words, f):
    value = (int(words[f.word]) >> f.lsb) & f.mask
    if f.signed and value >> (f.width - 1):
        value -= 1 << f.width
    return value


def unpack(words, *, verify=True):
    """The :class:`Instr` in ``words`` (an unknown opcode raises BAD_OPCODE)."""
    words = np.asarray(words, dtype=np.uint32)
    if words.shape != (INSTR_WORDS,):
        raise ValueError(f"an instruction is {INSTR_WORDS} words, not {words.shape}")
    if verify:
        magic = _get(words, HEADER[-1])
        if magic != MAGIC:
            raise InstrError(ErrorCode.BAD_MAGIC, f"magic = 0x{magic:02X}, must be "
                             f"0x{MAGIC:02X}")
        if int(words[CHECKSUM.word]) != checksum(words):
            raise InstrError(ErrorCode.BAD_CHECKSUM, f"checksum = 0x{int(words[15]):08X}, "
                             f"the words give 0x{checksum(words):08X}")
    op = _get(words, HEADER[0])
    if op not in Op._value2member_map_:
        raise InstrError(ErrorCode.BAD_OPCODE, f"opcode = {op}; allowed: "
                         + ", ".join(f"{o.value} ({o.name})" for o in Op))
    values = {f.name: _get(words, f) for f in fields_of(op)
              if f.name not in ("opcode", "checksum")}
    return Instr(Op(op), **values)


def pack_program(instrs):
    """Instructions -> one uint32 array; appends END when missing."""
    instrs = list(instrs)
    if not instrs or instrs[-1].op != Op.END:
        instrs.append(Instr(Op.END))
    return np.concatenate([pack(i) for i in instrs])


def unpack_program(words):
    words = np.asarray(words, dtype=np.uint32)
    out = []
    for i in range(0, len(words) - INSTR_WORDS + 1, INSTR_WORDS):
        instr = unpack(words[i:i + INSTR_WORDS])
        out.append(instr)
        if instr.op == Op.END:
            return out
    raise ValueError("program has no END instruction")


# -- the command processor's checks --------------------------------------------------------

def pool_max_width(cfg):
    """Widest map the pool units take (their line buffers): a row of a bank half, at most
    ``max_size``."""
    return max(2, min(cfg.max_size, max(cfg.ifm_depth, cfg.ofm_depth)))


def _pool_pixels(width, height):
    return (height // 2) * (width // 2)


def check(instr, cfg):
    """The first problem of ``instr`` under ``cfg`` as ``(ErrorCode, message)``; OK if none.

    These are the checks the command processor's decoder makes before it hands an instruction
    to its unit (the tile engine checks a COMPUTE's job once more, with the same rules as
    :func:`ef_train_hdl.core.job` documents, and reports its TileError as BAD_TILE etc.).
    """
    op = instr.op

    def bad(code, name, value, allowed):
        return ErrorCode(code), f"{op.name} field {name} = {value!r}; allowed: {allowed}"

    if instr.magic != MAGIC:
        return bad(ErrorCode.BAD_MAGIC, "magic", instr.magic, f"0x{MAGIC:02X}")
    unit = UNIT_OF.get(op)
    for name in TOKEN_FIELDS:
        if instr[name] and (unit is None or name.endswith(unit.name.lower())):
            return bad(ErrorCode.BAD_FLAGS, name, instr[name],
                       "0 (an instruction neither waits for nor signals its own unit; "
                       "END and HOST_SYNC for none)")
    if op in (Op.END, Op.HOST_SYNC):
        return ErrorCode.OK, "ok"
    fpb = cfg.floats_per_beat
    tm, tn = cfg.tm, cfg.tn

    def aligned(name):
        v = instr[name]
        if v % fpb:
            return bad(ErrorCode.MISALIGNED_ADDRESS, name, v,
                       f"a multiple of {fpb} words ({cfg.bytes_per_beat}-byte DMA beats)")
        if v >> (cfg.addr_width - 2):
            return bad(ErrorCode.ADDRESS_RANGE, name, v,
                       f"a word address below 2**{cfg.addr_width - 2}")
        return None

    if op == Op.LOAD:
        t, mode = instr.target, instr.mode
        if t not in Target._value2member_map_ or (t in (Target.WEIGHT, Target.BIAS) and mode):
            return bad(ErrorCode.BAD_FLAGS, "target/mode", (t, mode),
                       "IFM or OFM with any mode; WEIGHT or BIAS with PLAIN")
        if instr.transpose and t != Target.WEIGHT:
            return bad(ErrorCode.BAD_FLAGS, "transpose", 1, "0 except for WEIGHT")
        if instr.count < 1:
            return bad(ErrorCode.BAD_SIZE, "count", instr.count, ">= 1")
        if instr.runs < 1 or (mode != LoadMode.PLAIN and instr.runs != 1):
            return bad(ErrorCode.BAD_SIZE, "runs", instr.runs,
                       ">= 1 (1 in the RELU and POOL modes)")
        err = aligned("addr_a")
        if err is None and mode in (LoadMode.RELU_BP, LoadMode.RELU_POOL_BP):
            err = aligned("addr_b")
        if err is None and mode in (LoadMode.POOL_BP, LoadMode.RELU_POOL_BP):
            err = aligned("addr_c")
        if err is None and instr.runs > 1:
            err = aligned("dram_stride")
        if err:
            return err
        if t == Target.BIAS:
            if instr.count != 1 or instr.runs != 1:
                return bad(ErrorCode.BAD_SIZE, "count/runs", (instr.count, instr.runs),
                           "1 and 1 for BIAS (one vector of Tm words)")
            last, depth = instr.bank_base, cfg.weight_depth
        elif t == Target.WEIGHT:
            if not 1 <= instr.taps <= cfg.k_max ** 2:
                return bad(ErrorCode.BAD_SIZE, "taps", instr.taps, f"1..{cfg.k_max ** 2}")
            last = (instr.bank_base + (instr.runs - 1) * instr.bank_run_stride
                    + (instr.count - 1) * instr.bank_step + instr.taps - 1)
            depth = cfg.weight_depth
        else:
            depth = cfg.ifm_depth if t == Target.IFM else cfg.ofm_depth
            if mode in (LoadMode.POOL_BP, LoadMode.RELU_POOL_BP):
                w, h = instr.pool_width, instr.pool_height
                wmax = pool_max_width(cfg)
                if w < 2 or h < 1 or w > wmax or h > cfg.max_size:
                    return bad(ErrorCode.BAD_SIZE, "pool_width/pool_height", (w, h),
                               f"2..{wmax} and 1..{cfg.max_size}")
                if instr.count != _pool_pixels(w, h):
                    return bad(ErrorCode.BAD_SIZE, "count", instr.count,
                               f"(pool_height // 2) * (pool_width // 2) = "
                               f"{_pool_pixels(w, h)}")
                last = instr.bank_base + (w * h - 1) * instr.bank_step
            else:
                last = (instr.bank_base + (instr.runs - 1) * instr.bank_run_stride
                        + (instr.count - 1) * instr.bank_step)
        if last >= depth:
            return bad(ErrorCode.BAD_TILE, "bank_base/strides", instr.bank_base,
                       f"a last bank word below {depth} (it is {last})")
        return ErrorCode.OK, "ok"

    if op == Op.COMPUTE:
        from .core.job import addr_bits
        for name, depth in (("ifm_base", cfg.ifm_depth), ("w_base", cfg.weight_depth),
                            ("ofm_base", cfg.ofm_depth), ("bias_addr", cfg.weight_depth)):
            if instr[name] >> addr_bits(depth):
                return bad(ErrorCode.BAD_TILE, name, instr[name], f"below 2**"
                           f"{addr_bits(depth)} (a bank of {depth} words)")
        return ErrorCode.OK, "ok"

    # STORE
    src, post = instr.source, instr.post
    ok = {Source.OFM: (Post.NONE, Post.RELU, Post.POOL, Post.RELU_POOL),
          Source.WEIGHT: (Post.NONE, Post.SGD, Post.SGD_MOMENTUM),
          Source.DRAM: (Post.SGD, Post.SGD_MOMENTUM)}
    if src not in ok or post not in ok[src]:
        return bad(ErrorCode.BAD_FLAGS, "source/post", (src, post),
                   "OFM with NONE, RELU, POOL, RELU_POOL; WEIGHT with NONE, SGD, "
                   "SGD_MOMENTUM; DRAM with SGD, SGD_MOMENTUM")
    if post == Post.SGD_MOMENTUM and not cfg.momentum:
        return bad(ErrorCode.BAD_FLAGS, "post", "SGD_MOMENTUM",
                   "not SGD_MOMENTUM (this configuration has no momentum unit)")
    if instr.bias_select and src != Source.WEIGHT:
        return bad(ErrorCode.BAD_FLAGS, "bias_select", 1, "0 except for a WEIGHT drain")
    if instr.runs < 1 or instr.run_words < 1:
        return bad(ErrorCode.BAD_SIZE, "runs/run_words", (instr.runs, instr.run_words),
                   ">= 1 each")
    if src != Source.DRAM:
        if instr.drain_count < 1:
            return bad(ErrorCode.BAD_SIZE, "drain_count", instr.drain_count, ">= 1")
        if (1 << instr.log2_p) > cfg.acc_interleave:
            return bad(ErrorCode.BAD_INTERLEAVE, "log2_p", instr.log2_p,
                       f"at most {cfg.acc_interleave.bit_length() - 1} (acc_interleave = "
                       f"{cfg.acc_interleave})")
        depth = cfg.ofm_depth if src == Source.OFM else cfg.weight_depth
        end = instr.drain_base + (instr.drain_count << instr.log2_p)
        if end > depth:
            return bad(ErrorCode.BAD_TILE, "drain_base/drain_count", instr.drain_count,
                       f"results whose partial sums end by word {depth} (they end at {end})")
    if instr.run_words % fpb:
        return bad(ErrorCode.BAD_SIZE, "run_words", instr.run_words,
                   f"a multiple of {fpb} words (whole DMA beats)")
    if instr.runs != 1 and post not in (Post.NONE, Post.RELU):
        return bad(ErrorCode.BAD_SIZE, "runs", instr.runs, "1 with POOL and SGD")
    for name in ("addr_out",) + (("addr_aux",) if post in (Post.POOL, Post.RELU_POOL,
                                                           Post.SGD_MOMENTUM) else ()) \
            + (("addr_grad",) if src == Source.DRAM else ()):
        err = aligned(name)
        if err:
            return err
    if instr.runs > 1:
        err = aligned("dram_stride")
        if err:
            return err
    words = instr.runs * instr.run_words
    if src == Source.OFM:
        pixels = instr.drain_count
        if post in (Post.POOL, Post.RELU_POOL):
            w, h = instr.pool_width, instr.pool_height
            if w < 2 or h < 2 or w > pool_max_width(cfg) or w * h != instr.drain_count:
                return bad(ErrorCode.BAD_SIZE, "pool_width/pool_height", (w, h),
                           f"at least 2 x 2 with width * height = drain_count = "
                           f"{instr.drain_count}")
            pixels = _pool_pixels(w, h)
        want = pixels * tm
    elif src == Source.WEIGHT:
        want = instr.drain_count * tm * (1 if instr.bias_select else tn)
    else:
        want = words
    if words != want:
        return bad(ErrorCode.BAD_SIZE, "runs * run_words", words,
                   f"{want} (the words the source delivers)")
    return ErrorCode.OK, "ok"


def validate(instr, cfg, *, index=None):
    code, message = check(instr, cfg)
    if code != ErrorCode.OK:
        raise InstrError(code, message, index=index)
    return instr


# -- gateware view, docs ---------------------------------------------------------------------

def amaranth_layout(op):
    """The instruction of opcode ``op`` as an ``amaranth.lib.data.StructLayout`` of
    ``INSTR_WORDS * 32`` bits (gaps are ``_rsvd_<offset>``; signed fields are signed)."""
    from amaranth.hdl import signed, unsigned
    from amaranth.lib import data
    members, pos = {}, 0
    for f in sorted(fields_of(op), key=lambda f: f.offset):
        if f.offset > pos:
            members[f"_rsvd_{pos}"] = unsigned(f.offset - pos)
        members[f.name] = signed(f.width) if f.signed else unsigned(f.width)
        pos = f.offset + f.width
    if pos < 32 * INSTR_WORDS:
        members[f"_rsvd_{pos}"] = unsigned(32 * INSTR_WORDS - pos)
    return data.StructLayout(members)


def _enum_docs(cls):
    import inspect
    out, doc = {}, []
    for line in inspect.getsource(cls).splitlines():
        s = line.strip()
        if s.startswith("#:"):
            doc.append(s[2:].strip())
        elif "=" in s and not s.startswith("#"):
            out[s.split("=")[0].strip()] = " ".join(doc)
            doc = []
    return out


def markdown_table():
    """The tables of docs/isa.md, generated from :data:`FIELDS` and the enums."""
    lines = [f"An instruction is {INSTR_WORDS} little-endian 32-bit words ({INSTR_BYTES} "
             "bytes); unlisted bits are reserved and written as 0.", ""]
    for op in Op:
        lines += [f"### {op.value} `{op.name}`", "", _enum_docs(Op)[op.name], "",
                  "| word | bits | field | meaning |", "|---|---|---|---|"]
        for f in sorted(fields_of(op), key=lambda f: f.offset):
            hi = f.lsb + f.width - 1
            bits = f"{hi}:{f.lsb}" if f.width > 1 else f"{f.lsb}"
            sign = " (signed)" if f.signed else ""
            lines.append(f"| {f.word} | {bits} | `{f.name}` | {f.doc}{sign} |")
        lines.append("")
    for cls in (Target, LoadMode, Source, Post):
        docs = _enum_docs(cls)
        lines += [f"| {cls.__name__} | name | meaning |", "|---|---|---|"]
        for e in cls:
            lines.append(f"| {e.value} | `{e.name}` | {docs.get(e.name, '')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ef_train_hdl.isa",
                                     description="Print the tile instruction set.")
    parser.add_argument("--markdown", action="store_true",
                        help="print the field and enum tables of docs/isa.md as Markdown")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(), end="")
    else:
        for op in Op:
            print(f"{op.value} {op.name}: " + ", ".join(f.name for f in FIELDS[op]))


if __name__ == "__main__":
    main()
