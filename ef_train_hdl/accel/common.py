"""What the command processor and its three units share: the dispatched instruction, the token
ports, the error report.

A dispatched instruction is the raw 512-bit tile instruction (viewed by each unit through
``isa.amaranth_layout`` of its opcode) and its index in the program (for error reports).

Tokens (docs/isa.md): six counters in the command processor, one per ordered pair of units.
A unit sees the two counters of the tokens given to it (``avail_<from>``), consumes with
``take_<from>`` (a count, in the cycle it starts an instruction; it must not take more than is
available) and gives with ``give_<to>`` (a one-cycle pulse at an instruction's end).
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from .. import isa
from ..descriptor import ErrorCode

__all__ = ["dispatch_layout", "UNITS", "token_members", "TOKEN_BITS", "ERROR_BITS",
           "TokenWait", "instr_view"]

#: Width of a token counter (a compiled program never has more than a few outstanding).
TOKEN_BITS = 8
#: Width of an :class:`~ef_train_hdl.descriptor.ErrorCode` field.
ERROR_BITS = 8

UNITS = ("load", "compute", "store")


def dispatch_layout():
    return data.StructLayout({"bits": unsigned(32 * isa.INSTR_WORDS), "index": unsigned(32)})


def instr_view(bits, op):
    """``bits`` (a 512-bit value) viewed as the instruction layout of opcode ``op``."""
    return data.View(isa.amaranth_layout(op), bits)


def token_members(unit):
    """The token ports of ``unit`` (one of :data:`UNITS`)."""
    members = {}
    for other in UNITS:
        if other == unit:
            continue
        members[f"avail_{other}"] = In(TOKEN_BITS)
        members[f"take_{other}"] = Out(4)
        members[f"give_{other}"] = Out(1)
    return members


class TokenWait:
    """Combinational helper: ``ready`` when ``unit``'s instruction ``view`` can take its
    tokens; :meth:`take` drives the ``take_*`` ports with ``enable`` and :meth:`give` the
    ``give_*`` ports."""

    def __init__(self, component, unit, view):
        self.c, self.unit, self.view = component, unit, view
        self.others = [u for u in UNITS if u != unit]

    def ready(self):
        ok = []
        for other in self.others:
            ok.append(getattr(self.c, f"avail_{other}") >= getattr(self.view, f"wait_{other}"))
        return Cat(*ok).all()

    def take(self, m, enable):
        for other in self.others:
            m.d.comb += getattr(self.c, f"take_{other}").eq(
                Mux(enable, getattr(self.view, f"wait_{other}"), 0))


def give(m, component, unit, view, enable):
    """Drive ``component``'s ``give_*`` ports from ``view``'s ``signal_*`` flags."""
    for other in UNITS:
        if other == unit:
            continue
        m.d.comb += getattr(component, f"give_{other}").eq(
            enable & getattr(view, f"signal_{other}"))
