"""What the DMA read and write engines share: command layout, error codes, burst splitting."""

import enum

from amaranth.hdl import Mux, Signal, unsigned
from amaranth.lib import data
from amaranth.utils import ceil_log2, exact_log2

from ..config import AcceleratorConfig
from .signature import BOUNDARY_4K

__all__ = ["DmaError", "command_layout", "check_engine_params", "burst_beats"]


class DmaError(enum.IntEnum):
    """``error_code`` of a DMA engine (sticky until ``clear``).

    The command processor maps them onto ``descriptor.ErrorCode`` (``AXI_READ_ERROR``,
    ``AXI_WRITE_ERROR``, ``MISALIGNED_ADDRESS``, ``BAD_LENGTH``).
    """
    NONE = 0
    SLVERR = 1       #: the subordinate answered SLVERR
    DECERR = 2       #: the interconnect answered DECERR (no subordinate at the address)
    MISALIGNED = 3   #: a command's word address is not a multiple of the words per beat
    ZERO_LENGTH = 4  #: a command of length 0


def command_layout(config):
    """The command payload: ``addr`` (word address) and ``length`` (words), both 32-bit words.

    ``addr`` has ``addr_width - 2`` bits (the byte address is ``addr * 4``); ``length`` the same,
    so a command can span the whole address space.
    """
    return data.StructLayout({
        "addr": unsigned(config.addr_width - 2),
        "length": unsigned(config.addr_width - 2),
    })


def check_engine_params(config, counter_width, max_outstanding, what):
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
    if not isinstance(counter_width, int) or isinstance(counter_width, bool):
        raise TypeError(f"counter_width must be an integer, not {counter_width!r}")
    if not 16 <= counter_width <= 64:
        raise ValueError(f"counter_width must be between 16 and 64, not {counter_width!r}")
    if not isinstance(max_outstanding, int) or isinstance(max_outstanding, bool):
        raise TypeError(f"{what} must be an integer, not {max_outstanding!r}")
    if not 1 <= max_outstanding <= 64:
        raise ValueError(f"{what} must be between 1 and 64, not {max_outstanding!r}")


def burst_beats(m, config, byte_addr, beats_left):
    """The beats of the next burst: ``min(beats_left, max_burst_beats, beats to 4 KiB)``.

    Returns a combinational signal (range 1..max_burst_beats when ``beats_left`` > 0).
    """
    bpb = config.bytes_per_beat
    max_burst = config.max_burst_beats
    to_4k = Signal(range(BOUNDARY_4K // bpb + 1))
    # Beats from byte_addr to the next 4 KiB boundary; byte_addr is beat-aligned.
    m.d.comb += to_4k.eq((BOUNDARY_4K - byte_addr[:12]) >> exact_log2(bpb))
    limit = min(max_burst, BOUNDARY_4K // bpb)
    capped = Signal(range(limit + 1))
    m.d.comb += capped.eq(Mux(to_4k < limit, to_4k, limit))
    beats = Signal(range(limit + 1))
    m.d.comb += beats.eq(Mux(beats_left < capped, beats_left, capped))
    return beats


def lane_bits(config):
    """Bits of a 'words in this beat' count (1..floats_per_beat)."""
    return ceil_log2(config.floats_per_beat + 1)
