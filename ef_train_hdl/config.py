"""The accelerator's configuration: the one object gateware, numpy model, compiler and host share.

Every hardware parameter lives in :class:`AcceleratorConfig`, a frozen dataclass that checks
itself when it is made. The gateware elaborates from it, the numpy model reproduces its
numerics from it (the adder-tree width, the accumulator interleave), the compiler tiles layers
to its buffer depths and the host driver sizes descriptor fields from it. Named presets exist
per board (:data:`PRESETS`, :func:`preset`).

This module imports nothing from the gateware or from the host side, so both may import it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = [
    "AcceleratorConfig", "PRESETS", "preset", "FMUL_LATENCY", "FADD_LATENCY",
    "MULT_FORMATS", "ACC_LOOP_LATENCY", "LOADER_FIFO_BEATS", "STORER_FIFO_BEATS",
]


#: Cycles from operands in to product out of :class:`ef_train_hdl.fp.FMul` (II = 1).
FMUL_LATENCY = 4
#: Cycles from operands in to sum out of :class:`ef_train_hdl.fp.FAdd` (II = 1).
#: An accumulator that feeds its own output back needs this many independent partial sums
#: in flight to accept one addend per cycle; see docs/numerics.md.
FADD_LATENCY = 7
#: Cycles around an accumulator's loop: one to read the partial sum from its buffer bank,
#: then the adder. A partial sum may be revisited no sooner than this many cycles after it
#: was last read; this is the ``L`` of docs/numerics.md section 4.
ACC_LOOP_LATENCY = FADD_LATENCY + 1

#: Multiplier operand formats: full binary32, or bfloat16 operands (the top 16 bits of a
#: binary32, truncated) with an exact product rounded once to binary32.
MULT_FORMATS = ("fp32", "bf16")


def _is_pow2(value):
    return isinstance(value, int) and value > 0 and value & (value - 1) == 0


def _pow2_ceil(value):
    return 1 << max(0, (value - 1).bit_length())


@dataclass(frozen=True)
class AcceleratorConfig:
    """Every parameter of one accelerator instance.

    Parameters
    ----------
    tm : int
        Output lanes of the PE array (output channels computed at once in FP). Power of two.
    tn : int
        Inputs per lane (input channels reduced by each adder tree in FP). Power of two.
    k_max : int
        Largest square kernel the address generators and weight buffers support (1..11).
    stride_max : int
        Largest convolution stride supported (1 or 2).
    ifm_depth : int
        Words in one input-tile bank, per half of the ping-pong pair (Tn banks per half).
    weight_depth : int
        Words in one weight bank (Tm x Tn banks). Holds ``k*k*groups`` weights of one PE, so it
        bounds how many channel groups stay on chip for reuse across a batch.
    ofm_depth : int
        Words in one output/accumulator bank, per half (Tm banks per half).
    dma_data_width : int
        AXI4 data bus width in bits (32, 64, 128, 256 or 512); 128 moves 4 floats a beat.
    addr_width : int
        AXI4 address width in bits (32..64).
    max_burst_beats : int
        Longest AXI4 INCR burst the DMA issues (1..256; bursts never cross 4 KiB anyway).
    max_outstanding_reads : int
        Read bursts the DMA keeps in flight (1..64).
    mult_format : str
        Multiplier operand format, one of :data:`MULT_FORMATS`.
    max_channels : int
        Largest channel count a descriptor may name (sizes the descriptor fields).
    max_size : int
        Largest feature-map height or width a descriptor may name.
    max_batch : int
        Largest batch a descriptor may name.
    bias : bool
        Whether convolution and FC layers may have a bias.
    momentum : bool
        Whether the SGD unit implements momentum.
    name : str
        A label carried into reports; it does not change the hardware.
    """

    tm: int = 8
    tn: int = 8
    k_max: int = 5
    stride_max: int = 2
    ifm_depth: int = 2048
    weight_depth: int = 1024
    ofm_depth: int = 2048
    dma_data_width: int = 128
    addr_width: int = 32
    max_burst_beats: int = 256
    max_outstanding_reads: int = 16
    mult_format: str = "fp32"
    max_channels: int = 4096
    max_size: int = 1024
    max_batch: int = 256
    bias: bool = True
    momentum: bool = True
    name: str = "custom"

    def __post_init__(self):
        def check_int(field, lo, hi, *, pow2=False):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{field} must be an integer, not {value!r}")
            if pow2 and not _is_pow2(value):
                raise ValueError(f"{field} must be a positive power of two, not {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"{field} must be between {lo} and {hi}, not {value!r}")

        check_int("tm", 1, 64, pow2=True)
        check_int("tn", 1, 64, pow2=True)
        check_int("k_max", 1, 11)
        check_int("stride_max", 1, 2)
        check_int("ifm_depth", 16, 1 << 20, pow2=True)
        check_int("weight_depth", 16, 1 << 20, pow2=True)
        check_int("ofm_depth", 16, 1 << 20, pow2=True)
        check_int("addr_width", 32, 64)
        check_int("max_burst_beats", 1, 256, pow2=True)
        check_int("max_outstanding_reads", 1, 64)
        check_int("max_channels", 1, 1 << 16)
        check_int("max_size", 1, 1 << 16)
        check_int("max_batch", 1, 1 << 16)
        if self.dma_data_width not in (32, 64, 128, 256, 512):
            raise ValueError(f"dma_data_width must be one of 32, 64, 128, 256, 512 bits, "
                             f"not {self.dma_data_width!r}")
        if self.mult_format not in MULT_FORMATS:
            raise ValueError(f"mult_format must be one of {', '.join(MULT_FORMATS)}, "
                             f"not {self.mult_format!r}")
        for field in ("bias", "momentum"):
            if not isinstance(getattr(self, field), bool):
                raise TypeError(f"{field} must be a bool, not {getattr(self, field)!r}")
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a string, not {self.name!r}")
        if self.weight_depth < self.k_max * self.k_max:
            raise ValueError(f"weight_depth must hold at least one k_max x k_max kernel "
                             f"({self.k_max * self.k_max} words), not {self.weight_depth!r}")
        # The narrowest tile the schedule may emit is one output row of a layer with the
        # largest kernel: k_max input rows of at least k_max pixels.
        if self.ifm_depth < self.k_max * self.k_max:
            raise ValueError(f"ifm_depth must hold at least k_max x k_max = "
                             f"{self.k_max * self.k_max} words, not {self.ifm_depth!r}")

    # -- derived quantities ------------------------------------------------------------------

    @property
    def pes(self):
        """Multipliers in the PE array (Tm x Tn): peak MACs per cycle."""
        return self.tm * self.tn

    @property
    def floats_per_beat(self):
        """binary32 words moved by one AXI data beat."""
        return self.dma_data_width // 32

    @property
    def bytes_per_beat(self):
        return self.dma_data_width // 8

    @property
    def acc_interleave(self):
        """Independent partial sums an accumulator needs to take one addend per cycle.

        The accumulator loop's latency (:data:`ACC_LOOP_LATENCY`) rounded up to a power of
        two, so that the partial sums reduce in a balanced pairwise tree (docs/numerics.md).
        """
        return _pow2_ceil(ACC_LOOP_LATENCY)

    @property
    def pe_depth(self):
        """Cycles from an operation's issue to its last buffer write in the PE array: the
        longer of the FP/BP path (row skew, operand registers, multiplier, adder tree,
        accumulator) and the WU path (row and column skew, multiplier, accumulator)."""
        levels = (self.tn - 1).bit_length()
        return max(self.tm + 1 + FMUL_LATENCY + FADD_LATENCY * levels + FADD_LATENCY,
                   self.tm + self.tn + FMUL_LATENCY + FADD_LATENCY) + 1

    def job_overhead(self, stride_phases=1, bias=False):
        """Cycles a tile job spends beyond its operations (one per cycle): 2 of checks, 4
        per stride phase (set-up), 1 for a bias, the PE array's depth plus 2 to flush
        (measured by ``bench core`` and tests/test_core.py)."""
        return 2 + 4 * stride_phases + int(bias) + self.pe_depth + 2

    def job_setup(self, stride_phases=1, bias=False):
        """The part of :meth:`job_overhead` that holds the engine: all of it but the flush,
        which runs in the background while the next job of the same phase starts, in the
        cycle after the last operation (``model.tiles.jobs_schedule``)."""
        return self.job_overhead(stride_phases, bias) - self.pe_depth - 2

    def peak_gflops(self, clock_mhz):
        """Peak GFLOPS (two flops per MAC) at ``clock_mhz``."""
        return 2 * self.pes * clock_mhz / 1000

    def replace(self, **changes):
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self):
        return dataclasses.asdict(self)


#: Read-router FIFO depth (beats) of the loader's streams A (the data), B (stored ReLU
#: outputs) and C (pool indices); ``accel.loader`` builds them, the models count with them.
LOADER_FIFO_BEATS = {"a": 512, "b": 128, "c": 128}

#: Read-router FIFO depth (beats) of the storer's SGD operand streams W (weights), V
#: (momentum) and G (a gradient read from DRAM); ``accel.storer`` builds them, the models
#: count with them. 256, not 512: deeper, the SGD's reads queue ahead of the loader's in the
#: DMA (docs/perf_model.md, "At the paper's DRAM latency").
STORER_FIFO_BEATS = {"w": 256, "v": 256, "g": 256}


#: Named presets. ``tiny`` keeps simulator tests fast; the board presets fit their devices.
PRESETS = {
    # A 2x2 array takes 2 floats a cycle: a 64-bit DMA beat is one pixel of Tn lanes (the
    # whole accelerator needs floats_per_beat <= Tn, so no beat splits across pixels).
    "tiny": AcceleratorConfig(
        tm=2, tn=2, k_max=5, ifm_depth=512, weight_depth=256, ofm_depth=256,
        dma_data_width=64, max_channels=256, max_size=64, max_batch=16, name="tiny"),
    # ECP5-85F: 156 18x18 multipliers, ~84k LUT4, 208 EBR (18 kbit).
    "ulx3s": AcceleratorConfig(
        tm=4, tn=4, k_max=5, ifm_depth=1024, weight_depth=512, ofm_depth=1024,
        max_channels=1024, max_size=256, max_batch=64, name="ulx3s"),
    # XCZU3EG: 70,560 LUT, 141,120 FF, 360 DSP48E2, 216 BRAM36.
    "ultra96": AcceleratorConfig(
        tm=8, tn=8, k_max=5, ifm_depth=2048, weight_depth=1024, ofm_depth=2048,
        name="ultra96"),
    # XCZU9EG: 274,080 LUT, 548,160 FF, 2,520 DSP48E2, 912 BRAM36. The paper's array.
    "zcu102": AcceleratorConfig(
        tm=16, tn=16, k_max=5, ifm_depth=4096, weight_depth=2048, ofm_depth=4096,
        name="zcu102"),
}


def preset(name, **overrides):
    """The preset called ``name``, with ``overrides`` applied and validated."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")
    config = PRESETS[name]
    return config.replace(**overrides) if overrides else config
