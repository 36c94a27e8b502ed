"""The tile job: what the tile engine is told to compute, and what it reports back.

A *compute job* runs one phase over one tile with one channel group in the buffers (FP: one
input-channel group of Tn against a chunk of Tm output channels; BP: one output-channel group
of Tn against a chunk of Tm input channels; WU: one input-channel group of Tn against a chunk
of Tm output gradients). Jobs over several groups accumulate into the same buffer words; the
job's ``term_base`` tells the engine where in the reduction sequence of docs/numerics.md it
starts, so that partial-sum slots and the first-term initialisation come out as the contract
says. A *drain job* reads a finished result out of the buffers, reduces the P partial sums of
each result (section 4's ``tree_sum``) and streams it out.

The layouts here are gateware; :mod:`ef_train_hdl.model.tiles` fills them (and the buffers)
from numpy tensors on the host side and is the reference for what each field means.
"""

from amaranth.hdl import unsigned, signed
from amaranth.lib import data, enum

__all__ = ["Phase", "TileError", "DrainSource", "job_layout", "drain_layout", "ctrl_layout",
           "addr_bits", "SIZE_BITS", "OFFSET_BITS"]

#: Bits of the tile-shape fields (rows, columns): up to 2**17 - 1.
SIZE_BITS = 17
#: Bits of the signed row/column offsets (padding and halo: a few rows either way).
OFFSET_BITS = 8


class Phase(enum.Enum, shape=2):
    """Which computation the PE array runs (the same names as :class:`ef_train_hdl.workloads.Phase`)."""
    FP = 0
    BP = 1
    WU = 2


class TileError(enum.Enum, shape=4):
    """Why a job was refused; the job is dropped and nothing is written."""
    NONE = 0
    #: ``phase`` is not FP, BP or WU.
    PHASE = 1
    #: ``kernel`` is 0 or above k_max.
    KERNEL = 2
    #: ``stride`` is 0 or above stride_max.
    STRIDE = 3
    #: a row or column count is zero.
    SHAPE = 4
    #: ``log2_p`` names more partial sums than the accumulators have (A).
    INTERLEAVE = 5
    #: the input plane does not fit the IFM bank from ``ifm_base``.
    IFM_RANGE = 6
    #: the weights (or WU accumulators, or the bias word) do not fit the weight bank.
    WEIGHT_RANGE = 7
    #: the output tile (or the WU gradient tile) does not fit the OFM bank.
    OFM_RANGE = 8
    #: a drain job's ``count`` is zero or its words do not fit the bank.
    DRAIN_RANGE = 9


class DrainSource(enum.Enum, shape=1):
    #: FP/BP results: one word per lane (Tm) per pixel, in the OFM half ``half``.
    OFM = 0
    #: WU results: one word per PE (Tm x Tn) per tap, in the weight banks.
    WEIGHT = 1


def addr_bits(depth):
    """Address bits of a bank of ``depth`` words."""
    return max(1, (depth - 1).bit_length())


def _log2p_bits(cfg):
    return max(1, cfg.acc_interleave.bit_length())


def job_layout(cfg):
    """The compute job (see :mod:`ef_train_hdl.model.tiles` for the meaning of each field).

    ``in_rows x in_cols`` is the plane held in each IFM bank from ``ifm_base`` (FP/WU: input
    activations, BP: output gradients); ``out_rows x out_cols`` the output pixels (FP: conv
    output, BP: input gradient, WU: the pixels of the output gradient); ``row_off`` /
    ``col_off`` place the output tile over the input plane (padding and halo); ``term_base``
    is the channel group (FP/BP) or the index of the tile's first pixel in the batch (WU).
    """
    return data.StructLayout({
        "phase": Phase,
        "kernel": unsigned(4),
        "stride": unsigned(2),
        "in_rows": unsigned(SIZE_BITS),
        "in_cols": unsigned(SIZE_BITS),
        "out_rows": unsigned(SIZE_BITS),
        "out_cols": unsigned(SIZE_BITS),
        "row_off": signed(OFFSET_BITS),
        "col_off": signed(OFFSET_BITS),
        "ifm_half": unsigned(1),
        "ofm_half": unsigned(1),
        "ifm_base": unsigned(addr_bits(cfg.ifm_depth)),
        "w_base": unsigned(addr_bits(cfg.weight_depth)),
        "ofm_base": unsigned(addr_bits(cfg.ofm_depth)),
        "term_base": unsigned(32),
        "log2_p": unsigned(_log2p_bits(cfg)),
        "bias": unsigned(1),
        "bias_addr": unsigned(addr_bits(cfg.weight_depth)),
        "ones": unsigned(1),
    })


def drain_layout(cfg):
    """The drain job: ``count`` results (OFM: pixels; WEIGHT: taps) from ``base``, each as
    ``2**log2_p`` partial sums at consecutive words."""
    return data.StructLayout({
        "source": DrainSource,
        "half": unsigned(1),
        "base": unsigned(max(addr_bits(cfg.ofm_depth), addr_bits(cfg.weight_depth))),
        "count": unsigned(max(addr_bits(cfg.ofm_depth), addr_bits(cfg.weight_depth)) + 1),
        "log2_p": unsigned(_log2p_bits(cfg)),
    })


def ctrl_layout(cfg):
    """One operation of the PE array, as the address generator issues it each cycle."""
    wab, oab = addr_bits(cfg.weight_depth), addr_bits(cfg.ofm_depth)
    return data.StructLayout({
        "valid": unsigned(1),       # a MAC term (else a bubble)
        "null": unsigned(1),        # the term is +0 (a pixel with no tap: numerics.md 6)
        "first": unsigned(1),       # the first term of its partial-sum slot: start from init
        "bias_use": unsigned(1),    # ... and the init is the lane's bias
        "bias_load": unsigned(1),   # preamble: latch weight bank (m, 0)'s word as the bias
        "ones": unsigned(1),        # WU bias gradient: the activation operand is 1.0
        "ifm_half": unsigned(1),
        "ofm_half": unsigned(1),
        "ifm_zero": unsigned(1),    # the activation operand is padding: +0
        "ifm_addr": unsigned(addr_bits(cfg.ifm_depth)),
        "w_addr": unsigned(wab),    # FP/BP: weight word; preamble: bias word
        "ofm_addr": unsigned(oab),  # WU: output-gradient word
        "acc_addr": unsigned(max(wab, oab)),  # FP/BP: OFM partial sum; WU: weight-bank one
    })
