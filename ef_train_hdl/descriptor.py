"""The descriptor format: one training-step command, defined once, as data.

The host (:mod:`ef_train_hdl.compiler`) writes a *program* — a linear array of descriptors
ending with :attr:`Opcode.END` — into DRAM; the accelerator's command processor fetches it one
descriptor at a time and runs each one (a layer in one phase, or an SGD update) without the
host. A :attr:`Opcode.HOST_SYNC` descriptor stops the accelerator and hands control back to the
host (which computes the loss gradient of the logits), which restarts it at the next
descriptor.

Everything about the format lives in :data:`FIELDS`: a descriptor is :data:`DESC_WORDS`
little-endian 32-bit words, and each field is a bit range ``[lsb, lsb + width)`` of one word.
:func:`pack` / :func:`unpack` convert between :class:`Descriptor` and words, :func:`validate`
checks a descriptor against an :class:`~ef_train_hdl.config.AcceleratorConfig` and names the
first problem by an :class:`ErrorCode` — the same codes the hardware reports in its status
register. :func:`amaranth_layout` builds the ``amaranth.lib.data.StructLayout`` of the whole
descriptor from the same table (amaranth is imported only there), so the gateware decodes
exactly what the compiler encodes.

``python -m ef_train_hdl.descriptor --markdown`` prints the field table of docs/descriptors.md.

Addresses are **word addresses** (units of 4 bytes) into DRAM; every operand must start on a
DMA beat (``4 * addr`` a multiple of ``cfg.bytes_per_beat``). ``lr`` and ``mu`` are carried as
binary32 bit patterns.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DESC_WORDS", "DESC_BYTES", "MAGIC", "Field", "FIELDS", "FIELD_BY_NAME", "Opcode",
    "ErrorCode", "DescriptorError", "Descriptor", "pack", "unpack", "checksum",
    "validate", "check", "pack_program", "unpack_program", "amaranth_layout",
    "markdown_table", "f32_bits", "bits_f32",
]

#: 32-bit words in one descriptor (128 bytes: a whole number of beats for every DMA width).
DESC_WORDS = 32
DESC_BYTES = 4 * DESC_WORDS
#: Value of the ``magic`` field: a fetch from a wrong address is caught before it runs.
MAGIC = 0xEF


class Opcode(enum.IntEnum):
    """What one descriptor does."""
    #: End of program: the accelerator stops and raises *done*.
    END = 0
    #: Convolution forward: ``ofm = pool(relu(conv(ifm, w) + bias))`` (post-ops per flags).
    CONV_FP = 1
    #: Convolution backward: gradient of the input from ``grad_out`` (with the layer's pool
    #: and ReLU undone on the load path) and the weights read transposed and flipped.
    CONV_BP = 2
    #: Convolution weight gradient (and bias gradient with ``bias``) from ``grad_out`` and ``ifm``.
    CONV_WU = 3
    #: Fully connected forward (a 1x1 convolution whose pixels are the batch).
    FC_FP = 4
    #: Fully connected backward (gradient of the flattened input).
    FC_BP = 5
    #: Fully connected weight (and bias) gradient.
    FC_WU = 6
    #: SGD over ``length`` words: ``weight -= lr * grad_w`` (with momentum ``v = mu*v + grad_w``).
    SGD = 7
    #: Stop and hand control to the host; the host restarts at the next descriptor.
    HOST_SYNC = 8


#: Opcodes that run on the PE array (they have shapes, a kernel, an interleave).
LAYER_OPCODES = frozenset({Opcode.CONV_FP, Opcode.CONV_BP, Opcode.CONV_WU,
                           Opcode.FC_FP, Opcode.FC_BP, Opcode.FC_WU})
FC_OPCODES = frozenset({Opcode.FC_FP, Opcode.FC_BP, Opcode.FC_WU})


class ErrorCode(enum.IntEnum):
    """Why a descriptor is refused (host-side :func:`validate`) or a run stopped (hardware)."""
    OK = 0
    BAD_MAGIC = 1
    BAD_CHECKSUM = 2
    BAD_OPCODE = 3
    BAD_CHANNELS = 4
    BAD_SIZE = 5
    BAD_BATCH = 6
    BAD_KERNEL = 7
    BAD_STRIDE = 8
    BAD_PAD = 9
    BAD_INTERLEAVE = 10
    BAD_TILE = 11
    MISALIGNED_ADDRESS = 12
    ADDRESS_RANGE = 13
    BAD_FLAGS = 14
    BAD_LENGTH = 15
    AXI_READ_ERROR = 16
    AXI_WRITE_ERROR = 17
    #: The tile program waits for a token no instruction gives (every unit waiting, nothing
    #: moving): a hand-written program's mistake; compiled ones cannot deadlock.
    BAD_DEPENDENCY = 18


class DescriptorError(ValueError):
    """A descriptor that :func:`validate` refuses: carries the :class:`ErrorCode`."""

    def __init__(self, code, message, *, index=None):
        self.code = ErrorCode(code)
        self.index = index
        where = f"descriptor {index}: " if index is not None else ""
        super().__init__(f"{where}{self.code.name}: {message}")


@dataclass(frozen=True)
class Field:
    """One bit field of a descriptor: bits ``[lsb, lsb + width)`` of word ``word``."""
    name: str
    word: int
    lsb: int
    width: int
    doc: str = ""

    @property
    def mask(self):
        return (1 << self.width) - 1

    @property
    def offset(self):
        """Bit offset of the field in the whole descriptor (word-major, little-endian)."""
        return 32 * self.word + self.lsb


#: The descriptor format. Flags are 1-bit fields; everything else is an unsigned integer.
FIELDS = (
    Field("opcode", 0, 0, 8, "Opcode"),
    Field("relu", 0, 8, 1, "the layer's ReLU. FP: applied on the store path. BP, WU: undone "
                           "on the load path of `grad_out` (mask from `addr_ofm`)"),
    Field("pool", 0, 9, 1, "the layer's 2x2/2 max-pool. FP: on the store path (writes "
                           "`addr_index`). BP, WU: undone on the load path (reads it)"),
    Field("bias", 0, 10, 1, "FP: add the bias. WU: also write the bias gradient"),
    Field("momentum", 0, 11, 1, "SGD, WU with `sgd`: use momentum (reads and writes "
                                "`addr_momentum`, `addr_momentum_b`)"),
    Field("first_layer", 0, 12, 1, "the network's first layer: its input gradient is never "
                                   "needed (BP of it is an error)"),
    Field("streamed", 0, 13, 1, "weights streamed per input-channel group with each tile "
                                "instead of resident for the whole batch (schedule order)"),
    Field("flatten", 0, 14, 1, "FC: the input is a conv-layout map (in_channels x in_h x "
                               "in_w) read as one flattened vector per image"),
    Field("sgd", 0, 15, 1, "WU: the gradients go through the SGD unit on the store path and "
                           "update `addr_weight`/`addr_bias` in place (no gradient stored)"),
    Field("magic", 0, 24, 8, f"must be 0x{MAGIC:02X}"),
    Field("in_channels", 1, 0, 16, "input channels N (FC: input features when in_h = in_w = 1)"),
    Field("out_channels", 1, 16, 16, "output channels M (FC: output features)"),
    Field("in_h", 2, 0, 16, "input map height H (FC after Flatten: the map's height)"),
    Field("in_w", 2, 16, 16, "input map width W (FC after Flatten: the map's width)"),
    Field("batch", 3, 0, 16, "images B"),
    Field("kernel", 3, 16, 4, "kernel size K (1 for FC)"),
    Field("stride", 3, 20, 2, "stride s"),
    Field("pad", 3, 22, 4, "zero padding p"),
    Field("interleave", 3, 26, 6, "accumulator interleave P (numerics.md section 4); a power "
                                  "of two <= cfg.acc_interleave"),
    Field("tile_rows", 4, 0, 16, "rows per tile (FP/BP: output/input rows; WU: output rows)"),
    Field("tile_groups", 4, 16, 16, "Tm-groups of output channels (FP) kept per weight load"),
    Field("addr_ifm", 6, 0, 32, "input activations (FP, WU)"),
    Field("addr_weight", 7, 0, 32, "weights (FP, BP; SGD and WU with `sgd`: updated in "
                                   "place)"),
    Field("addr_bias", 8, 0, 32, "bias (FP; WU with `sgd`: updated in place)"),
    Field("addr_ofm", 9, 0, 32, "stored output, after ReLU and pool (FP writes; BP and WU "
                                "with `relu` read it for the ReLU mask)"),
    Field("addr_index", 10, 0, 32, "max-pool indices, one word per pooled output (FP writes; "
                                   "BP and WU with `pool` read)"),
    Field("addr_grad_out", 11, 0, 32, "gradient of the layer's stored output (BP, WU read)"),
    Field("addr_grad_in", 12, 0, 32, "gradient of the layer's input (BP writes)"),
    Field("addr_grad_w", 13, 0, 32, "weight gradient (WU writes, SGD reads)"),
    Field("addr_grad_b", 14, 0, 32, "bias gradient (WU writes)"),
    Field("addr_momentum", 15, 0, 32, "SGD momentum buffer"),
    Field("length", 16, 0, 32, "SGD: words to update"),
    Field("lr", 17, 0, 32, "SGD, WU with `sgd`: learning rate, binary32 bits"),
    Field("mu", 18, 0, 32, "SGD, WU with `sgd`: momentum, binary32 bits"),
    Field("layer", 19, 0, 16, "layer index in the network (for counters and error reports)"),
    Field("addr_momentum_b", 20, 0, 32, "WU with `sgd` and `bias`: momentum of the bias"),
    Field("checksum", 31, 0, 32, "XOR of words 0..30 and 0xEF7A1D00"),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}
ADDRESS_FIELDS = tuple(f.name for f in FIELDS if f.name.startswith("addr_"))
FLAG_FIELDS = ("relu", "pool", "bias", "momentum", "first_layer", "streamed",
               "flatten", "sgd")
CHECKSUM_SEED = 0xEF7A1D00


def _check_table():
    used = {}
    for f in FIELDS:
        assert 0 <= f.word < DESC_WORDS and f.width > 0 and f.lsb + f.width <= 32, f
        for bit in range(f.offset, f.offset + f.width):
            assert bit not in used, f"{f.name} overlaps {used[bit]}"
            used[bit] = f.name


_check_table()


def f32_bits(value):
    """binary32 bit pattern of ``value`` as an int."""
    return int(np.float32(value).view(np.uint32))


def bits_f32(bits):
    """The binary32 value with bit pattern ``bits``."""
    return np.uint32(bits).view(np.float32)


@dataclass(frozen=True)
class Descriptor:
    """One descriptor, field by field (see :data:`FIELDS`). ``lr``/``mu`` are floats here."""
    opcode: Opcode = Opcode.END
    relu: bool = False
    pool: bool = False
    bias: bool = False
    momentum: bool = False
    first_layer: bool = False
    streamed: bool = False
    flatten: bool = False
    sgd: bool = False
    magic: int = MAGIC
    in_channels: int = 0
    out_channels: int = 0
    in_h: int = 0
    in_w: int = 0
    batch: int = 0
    kernel: int = 0
    stride: int = 0
    pad: int = 0
    interleave: int = 0
    tile_rows: int = 0
    tile_groups: int = 0
    addr_ifm: int = 0
    addr_weight: int = 0
    addr_bias: int = 0
    addr_ofm: int = 0
    addr_index: int = 0
    addr_grad_out: int = 0
    addr_grad_in: int = 0
    addr_grad_w: int = 0
    addr_grad_b: int = 0
    addr_momentum: int = 0
    length: int = 0
    lr: float = 0.0
    mu: float = 0.0
    layer: int = 0
    addr_momentum_b: int = 0

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    # -- derived shapes ----------------------------------------------------------------------
    @property
    def is_fc(self):
        return self.opcode in FC_OPCODES

    @property
    def conv_out_hw(self):
        """Output map (Ho, Wo) of the convolution, before any pool."""
        if self.is_fc:
            return 1, 1
        k, s, p = self.kernel, self.stride, self.pad
        return (self.in_h + 2 * p - k) // s + 1, (self.in_w + 2 * p - k) // s + 1

    @property
    def out_hw(self):
        """Output map stored by FP (after the pool when ``pool``)."""
        ho, wo = self.conv_out_hw
        return (ho // 2, wo // 2) if self.pool and self.opcode == Opcode.CONV_FP else (ho, wo)


_DESC_FIELDS = {f.name for f in dataclasses.fields(Descriptor)}
assert _DESC_FIELDS == {f.name for f in FIELDS} - {"checksum"}, "Descriptor and FIELDS differ"


def checksum(words):
    """The checksum of ``words[0:31]`` (what word 31 must hold)."""
    words = np.asarray(words, dtype=np.uint32)
    return int(np.bitwise_xor.reduce(words[:DESC_WORDS - 1])) ^ CHECKSUM_SEED


def pack(desc):
    """``desc`` as :data:`DESC_WORDS` uint32 words (little-endian word order), checksummed.

    Raises :class:`DescriptorError` (BAD_*) when a value does not fit its field.
    """
    words = [0] * DESC_WORDS
    for f in FIELDS:
        if f.name == "checksum":
            continue
        value = getattr(desc, f.name)
        if f.name in ("lr", "mu"):
            value = f32_bits(value)
        value = int(value)
        if not 0 <= value <= f.mask:
            raise DescriptorError(_field_error_code(f.name),
                                  f"field {f.name} = {value} does not fit its {f.width} bits "
                                  f"(allowed 0..{f.mask})")
        words[f.word] |= value << f.lsb
    words = np.array(words, dtype=np.uint32)
    words[FIELD_BY_NAME["checksum"].word] = checksum(words)
    return words


def _get(words, f):
    return (int(words[f.word]) >> f.lsb) & f.mask


def unpack(words, *, verify=True):
    """The :class:`Descriptor` held in ``words``.

    With ``verify`` (default) a bad magic or checksum raises :class:`DescriptorError`. An
    unknown opcode is kept as its integer so that :func:`validate` can report it.
    """
    words = np.asarray(words, dtype=np.uint32)
    if words.shape != (DESC_WORDS,):
        raise ValueError(f"a descriptor is {DESC_WORDS} words, not an array of shape "
                         f"{words.shape}")
    if verify:
        magic = _get(words, FIELD_BY_NAME["magic"])
        if magic != MAGIC:
            raise DescriptorError(ErrorCode.BAD_MAGIC,
                                  f"field magic = 0x{magic:02X}, must be 0x{MAGIC:02X}")
        want = checksum(words)
        if int(words[FIELD_BY_NAME["checksum"].word]) != want:
            raise DescriptorError(ErrorCode.BAD_CHECKSUM,
                                  f"field checksum = 0x{int(words[31]):08X}, the words "
                                  f"give 0x{want:08X}")
    values = {}
    for f in FIELDS:
        if f.name == "checksum":
            continue
        value = _get(words, f)
        if f.name in ("lr", "mu"):
            value = float(bits_f32(value))
        elif f.name in FLAG_FIELDS:
            value = bool(value)
        elif f.name == "opcode":
            value = Opcode(value) if value in Opcode._value2member_map_ else value
        values[f.name] = value
    return Descriptor(**values)


def pack_program(descs):
    """Descriptors -> one uint32 array (a program); appends END when missing."""
    descs = list(descs)
    if not descs or descs[-1].opcode != Opcode.END:
        descs.append(Descriptor(opcode=Opcode.END))
    return np.concatenate([pack(d) for d in descs])


def unpack_program(words):
    """The descriptors of a program up to and including its END."""
    words = np.asarray(words, dtype=np.uint32)
    out = []
    for i in range(0, len(words) - DESC_WORDS + 1, DESC_WORDS):
        d = unpack(words[i:i + DESC_WORDS])
        out.append(d)
        if d.opcode == Opcode.END:
            return out
    raise ValueError("program has no END descriptor")


def _field_error_code(name):
    return {
        "opcode": ErrorCode.BAD_OPCODE, "in_channels": ErrorCode.BAD_CHANNELS,
        "out_channels": ErrorCode.BAD_CHANNELS, "in_h": ErrorCode.BAD_SIZE,
        "in_w": ErrorCode.BAD_SIZE, "batch": ErrorCode.BAD_BATCH,
        "kernel": ErrorCode.BAD_KERNEL, "stride": ErrorCode.BAD_STRIDE,
        "pad": ErrorCode.BAD_PAD, "interleave": ErrorCode.BAD_INTERLEAVE,
        "tile_rows": ErrorCode.BAD_TILE, "tile_groups": ErrorCode.BAD_TILE,
        "length": ErrorCode.BAD_LENGTH, "magic": ErrorCode.BAD_MAGIC,
    }.get(name, ErrorCode.ADDRESS_RANGE if name.startswith("addr_") else ErrorCode.BAD_FLAGS)


def check(desc, cfg, *, dram_words=None):
    """The first problem of ``desc`` under ``cfg`` as ``(ErrorCode, message)``; OK when none.

    ``dram_words``, when given, bounds every used address. The tile checks are the
    buffer-capacity rules of the tile engine: one strip of ``tile_rows`` rows of Tn channels
    must fit an IFM bank half, the output strip an OFM bank half, the kernels of one PE a
    weight bank.
    """
    def bad(code, name, value, allowed):
        return ErrorCode(code), f"field {name} = {value!r}; allowed: {allowed}"

    if desc.magic != MAGIC:
        return bad(ErrorCode.BAD_MAGIC, "magic", desc.magic, f"0x{MAGIC:02X}")
    if not isinstance(desc.opcode, Opcode):
        return bad(ErrorCode.BAD_OPCODE, "opcode", desc.opcode,
                   ", ".join(f"{o.value} ({o.name})" for o in Opcode))
    op = desc.opcode
    if op in (Opcode.END, Opcode.HOST_SYNC):
        return ErrorCode.OK, "ok"
    align = cfg.bytes_per_beat // 4
    used = _used_addresses(desc)
    for name in used:
        addr = getattr(desc, name)
        if addr % align:
            return bad(ErrorCode.MISALIGNED_ADDRESS, name, addr,
                       f"a multiple of {align} words ({cfg.bytes_per_beat}-byte DMA beats)")
        if addr >> (cfg.addr_width - 2):
            return bad(ErrorCode.ADDRESS_RANGE, name, addr,
                       f"a word address below 2**{cfg.addr_width - 2}")
        if dram_words is not None and addr >= dram_words:
            return bad(ErrorCode.ADDRESS_RANGE, name, addr, f"below {dram_words} (DRAM size)")
    if op == Opcode.SGD:
        if desc.length == 0:
            return bad(ErrorCode.BAD_LENGTH, "length", desc.length, ">= 1")
        if desc.momentum and not cfg.momentum:
            return bad(ErrorCode.BAD_FLAGS, "momentum", True,
                       "False (this configuration has no momentum unit)")
        if desc.relu or desc.pool or desc.bias:
            return bad(ErrorCode.BAD_FLAGS, "relu/pool/bias", True, "False for SGD")
        return ErrorCode.OK, "ok"

    # Layer opcodes.
    for name in ("in_channels", "out_channels"):
        v = getattr(desc, name)
        if not 1 <= v <= cfg.max_channels:
            return bad(ErrorCode.BAD_CHANNELS, name, v, f"1..{cfg.max_channels} (max_channels)")
    for name in ("in_h", "in_w"):
        v = getattr(desc, name)
        if not 1 <= v <= cfg.max_size:
            return bad(ErrorCode.BAD_SIZE, name, v, f"1..{cfg.max_size} (max_size)")
    if not 1 <= desc.batch <= cfg.max_batch:
        return bad(ErrorCode.BAD_BATCH, "batch", desc.batch, f"1..{cfg.max_batch} (max_batch)")
    if desc.is_fc:
        if desc.kernel != 1:
            return bad(ErrorCode.BAD_KERNEL, "kernel", desc.kernel, "1 for FC")
        if desc.stride != 1:
            return bad(ErrorCode.BAD_STRIDE, "stride", desc.stride, "1 for FC")
        if desc.pad != 0:
            return bad(ErrorCode.BAD_PAD, "pad", desc.pad, "0 for FC")
    else:
        if not 1 <= desc.kernel <= cfg.k_max:
            return bad(ErrorCode.BAD_KERNEL, "kernel", desc.kernel, f"1..{cfg.k_max} (k_max)")
        if not 1 <= desc.stride <= cfg.stride_max:
            return bad(ErrorCode.BAD_STRIDE, "stride", desc.stride,
                       f"1..{cfg.stride_max} (stride_max)")
        if desc.pad >= desc.kernel:
            return bad(ErrorCode.BAD_PAD, "pad", desc.pad, f"0..{desc.kernel - 1} (< kernel)")
        if desc.in_h + 2 * desc.pad < desc.kernel or desc.in_w + 2 * desc.pad < desc.kernel:
            return bad(ErrorCode.BAD_SIZE, "in_h/in_w", (desc.in_h, desc.in_w),
                       f"at least kernel - 2*pad = {desc.kernel - 2 * desc.pad}")
    p = desc.interleave
    if p < 1 or p & (p - 1) or p > cfg.acc_interleave:
        return bad(ErrorCode.BAD_INTERLEAVE, "interleave", p,
                   f"a power of two 1..{cfg.acc_interleave} (acc_interleave)")
    if desc.pool and op in FC_OPCODES:
        return bad(ErrorCode.BAD_FLAGS, "pool", True, "False for FC layers")
    wu = op in (Opcode.CONV_WU, Opcode.FC_WU)
    if desc.sgd and not wu:
        return bad(ErrorCode.BAD_FLAGS, "sgd", True, "False except for CONV_WU and FC_WU")
    if desc.momentum and not desc.sgd:
        return bad(ErrorCode.BAD_FLAGS, "momentum", True, "False except for SGD and WU "
                                                          "with sgd")
    if desc.momentum and not cfg.momentum:
        return bad(ErrorCode.BAD_FLAGS, "momentum", True,
                   "False (this configuration has no momentum unit)")
    if desc.flatten and op not in FC_OPCODES:
        return bad(ErrorCode.BAD_FLAGS, "flatten", True, "False except for FC layers")
    if desc.is_fc and not desc.flatten and (desc.in_h, desc.in_w) != (1, 1):
        return bad(ErrorCode.BAD_SIZE, "in_h/in_w", (desc.in_h, desc.in_w),
                   "(1, 1) for an FC layer without flatten")
    if desc.first_layer and op in (Opcode.CONV_BP, Opcode.FC_BP):
        return bad(ErrorCode.BAD_FLAGS, "first_layer", True,
                   "False for BP (the first layer's input gradient is never computed)")
    if desc.bias and not cfg.bias:
        return bad(ErrorCode.BAD_FLAGS, "bias", True, "False (this configuration has no bias)")
    if desc.pool and min(desc.conv_out_hw) < 2:
        return bad(ErrorCode.BAD_FLAGS, "pool", True,
                   "False when the output map is smaller than 2x2")
    # Tile capacity.
    ho, wo = desc.conv_out_hw
    if not desc.is_fc:
        if ho < 1 or wo < 1:
            return bad(ErrorCode.BAD_SIZE, "in_h/in_w", (desc.in_h, desc.in_w),
                       "a map giving at least one output pixel")
        rows_total = ho if op != Opcode.CONV_BP else desc.in_h
        if not 1 <= desc.tile_rows <= rows_total:
            return bad(ErrorCode.BAD_TILE, "tile_rows", desc.tile_rows, f"1..{rows_total}")
        in_rows = (desc.tile_rows - 1) * desc.stride + desc.kernel
        row_words = desc.in_w + 2 * desc.pad
        if op == Opcode.CONV_BP:
            in_rows = desc.tile_rows + desc.kernel - 1
            row_words = wo + desc.kernel
        if in_rows * row_words > cfg.ifm_depth:
            return bad(ErrorCode.BAD_TILE, "tile_rows", desc.tile_rows,
                       f"a strip of {in_rows} x {row_words} words must fit ifm_depth = "
                       f"{cfg.ifm_depth}")
        out_words = desc.tile_rows * (desc.in_w if op == Opcode.CONV_BP else wo)
        if op != Opcode.CONV_WU and out_words > cfg.ofm_depth:
            return bad(ErrorCode.BAD_TILE, "tile_rows", desc.tile_rows,
                       f"an output strip of {out_words} words must fit ofm_depth = "
                       f"{cfg.ofm_depth}")
    if desc.kernel * desc.kernel > cfg.weight_depth:
        return bad(ErrorCode.BAD_TILE, "kernel", desc.kernel, "k*k <= weight_depth")
    if desc.tile_groups < 1:
        return bad(ErrorCode.BAD_TILE, "tile_groups", desc.tile_groups, ">= 1")
    return ErrorCode.OK, "ok"


def validate(desc, cfg, *, index=None, dram_words=None):
    """Raise :class:`DescriptorError` when :func:`check` finds a problem; else return ``desc``."""
    code, message = check(desc, cfg, dram_words=dram_words)
    if code != ErrorCode.OK:
        raise DescriptorError(code, message, index=index)
    return desc


def _used_addresses(desc):
    op = desc.opcode
    if op == Opcode.SGD:
        return ("addr_weight", "addr_grad_w") + (("addr_momentum",) if desc.momentum else ())
    if op in (Opcode.CONV_FP, Opcode.FC_FP):
        used = ["addr_ifm", "addr_weight", "addr_ofm"]
        used += ["addr_bias"] if desc.bias else []
        used += ["addr_index"] if desc.pool else []
        return tuple(used)
    if op in (Opcode.CONV_BP, Opcode.FC_BP, Opcode.CONV_WU, Opcode.FC_WU):
        if op in (Opcode.CONV_BP, Opcode.FC_BP):
            used = ["addr_weight", "addr_grad_out", "addr_grad_in"]
        elif desc.sgd:
            used = ["addr_ifm", "addr_grad_out", "addr_weight"]
            used += ["addr_bias"] if desc.bias else []
            used += ["addr_momentum"] if desc.momentum else []
            used += ["addr_momentum_b"] if desc.momentum and desc.bias else []
        else:
            used = ["addr_ifm", "addr_grad_out", "addr_grad_w"]
            used += ["addr_grad_b"] if desc.bias else []
        used += ["addr_ofm"] if desc.relu else []
        used += ["addr_index"] if desc.pool else []
        return tuple(used)
    return ()


def amaranth_layout():
    """The descriptor as an ``amaranth.lib.data.StructLayout`` of DESC_WORDS * 32 bits.

    Built from :data:`FIELDS` (gaps become ``_rsvd_<offset>`` padding), so a
    ``data.View`` of a 1024-bit register decodes the same bits :func:`pack` encodes.
    """
    from amaranth.lib import data

    members = {}
    pos = 0
    for f in sorted(FIELDS, key=lambda f: f.offset):
        if f.offset > pos:
            members[f"_rsvd_{pos}"] = f.offset - pos
        members[f.name] = f.width
        pos = f.offset + f.width
    if pos < 32 * DESC_WORDS:
        members[f"_rsvd_{pos}"] = 32 * DESC_WORDS - pos
    return data.StructLayout(members)


def markdown_table():
    """The field table of docs/descriptors.md, generated from FIELDS and the enums."""
    lines = [
        f"A descriptor is {DESC_WORDS} little-endian 32-bit words ({DESC_BYTES} bytes). "
        "Unlisted bits are reserved and written as 0.", "",
        "| word | bits | field | meaning |", "|---|---|---|---|",
    ]
    for f in sorted(FIELDS, key=lambda f: f.offset):
        hi = f.lsb + f.width - 1
        bits = f"{hi}:{f.lsb}" if f.width > 1 else f"{f.lsb}"
        lines.append(f"| {f.word} | {bits} | `{f.name}` | {f.doc} |")
    lines += ["", "| opcode | name | meaning |", "|---|---|---|"]
    for o in Opcode:
        doc = " ".join((_enum_doc(Opcode, o) or "").split())
        lines.append(f"| {o.value} | `{o.name}` | {doc} |")
    lines += ["", "| error code | name |", "|---|---|"]
    for e in ErrorCode:
        lines.append(f"| {e.value} | `{e.name}` |")
    return "\n".join(lines) + "\n"


def _enum_doc(cls, member):
    import inspect
    src = inspect.getsource(cls).splitlines()
    doc, out = [], {}
    for line in src:
        s = line.strip()
        if s.startswith("#:"):
            doc.append(s[2:].strip())
        elif "=" in s and doc:
            out[s.split("=")[0].strip()] = " ".join(doc)
            doc = []
    return out.get(member.name, "")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m ef_train_hdl.descriptor",
        description="Print the descriptor format (the table of docs/descriptors.md).")
    parser.add_argument("--markdown", action="store_true",
                        help="print the field, opcode and error-code tables as Markdown")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(), end="")
    else:
        for f in FIELDS:
            print(f"{f.name:16s} word {f.word:2d} bits {f.lsb + f.width - 1:2d}:{f.lsb:<2d}")


if __name__ == "__main__":
    main()
