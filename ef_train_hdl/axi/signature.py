"""AXI4 and AXI4-Lite as :class:`amaranth.lib.wiring.Signature` s, with the AMBA signal names.

The members are flat (``araddr``, ``arvalid``, ``rdata`` ... not nested per channel), seen from
the **manager** (master) side: a manager port is ``Out(AXI4Signature(...))``, a subordinate
(slave) port ``In(AXI4Signature(...))``. The members are exactly the AMBA names, so a
component's port ``m_axi`` flattens to ``m_axi__araddr`` with Amaranth's default ``__``
separator, and to ``m_axi_araddr`` — the names Vivado's interface inference and
cocotbext-axi's ``AxiBus.from_prefix(dut, "m_axi")`` expect — when the Verilog is generated
with :func:`axi_ports` (``verilog.convert(top, ports=axi_ports(top))``). docs/axi.md lists the
generated names.

Only the signals the accelerator drives with meaning are present: no ``*user``, ``*region``.
``awlock`` / ``awcache`` / ``awprot`` / ``awqos`` (and the ``ar`` ones) are present so that an
interconnect sees defined values.
"""

import enum

from amaranth.hdl import ValueCastable, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "Resp", "Burst", "AXI4Signature", "AXI4LiteSignature", "axi_ports", "BOUNDARY_4K",
]

#: AXI4 bursts must not cross a 4 KiB address boundary (AMBA AXI A3.4.1).
BOUNDARY_4K = 4096


class Resp(enum.IntEnum):
    """``xRESP`` encodings."""
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


class Burst(enum.IntEnum):
    """``AxBURST`` encodings."""
    FIXED = 0
    INCR = 1
    WRAP = 2


def _check_width(name, value, allowed=None, lo=1, hi=None):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if allowed is not None and value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be between {lo} and {hi}, not {value!r}")


class AXI4Signature(wiring.Signature):
    """An AXI4 manager port (flip it for a subordinate).

    Parameters
    ----------
    data_width : int
        ``xDATA`` width in bits: 32, 64, 128, 256, 512 or 1024.
    addr_width : int
        ``AxADDR`` width in bits (byte addresses), 12..64.
    id_width : int
        ``xID`` width in bits, 1..32.
    read, write : bool
        Which halves are present: AR+R, and AW+W+B. A DMA read engine has ``write=False``,
        a write engine ``read=False``; the top-level port has both.
    """

    def __init__(self, *, data_width, addr_width, id_width=1, read=True, write=True):
        _check_width("data_width", data_width, allowed=(32, 64, 128, 256, 512, 1024))
        _check_width("addr_width", addr_width, lo=12, hi=64)
        _check_width("id_width", id_width, lo=1, hi=32)
        if not (read or write):
            raise ValueError("an AXI4 signature needs read=True or write=True (or both), "
                             "not neither")
        self.data_width = data_width
        self.addr_width = addr_width
        self.id_width = id_width
        self.read = bool(read)
        self.write = bool(write)
        members = {}
        if write:
            members.update({
                "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8),
                "awsize": Out(3), "awburst": Out(2), "awlock": Out(1), "awcache": Out(4),
                "awprot": Out(3), "awqos": Out(4), "awvalid": Out(1), "awready": In(1),
                "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
                "wvalid": Out(1), "wready": In(1),
                "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            })
        if read:
            members.update({
                "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8),
                "arsize": Out(3), "arburst": Out(2), "arlock": Out(1), "arcache": Out(4),
                "arprot": Out(3), "arqos": Out(4), "arvalid": Out(1), "arready": In(1),
                "rid": In(id_width), "rdata": In(data_width), "rresp": In(2),
                "rlast": In(1), "rvalid": In(1), "rready": Out(1),
            })
        super().__init__(members)

    def __eq__(self, other):
        return (type(other) is type(self) and
                (self.data_width, self.addr_width, self.id_width, self.read, self.write) ==
                (other.data_width, other.addr_width, other.id_width, other.read, other.write))

    def __hash__(self):
        return hash((type(self), self.data_width, self.addr_width, self.id_width))

    def __repr__(self):
        return (f"AXI4Signature(data_width={self.data_width}, addr_width={self.addr_width}, "
                f"id_width={self.id_width}, read={self.read}, write={self.write})")


class AXI4LiteSignature(wiring.Signature):
    """An AXI4-Lite manager port (flip it — ``In(...)`` — for a register block).

    Parameters
    ----------
    addr_width : int
        ``AxADDR`` width in bits (byte addresses), 4..64.
    data_width : int
        32 or 64.
    """

    def __init__(self, *, addr_width, data_width=32):
        _check_width("data_width", data_width, allowed=(32, 64))
        _check_width("addr_width", addr_width, lo=4, hi=64)
        self.addr_width = addr_width
        self.data_width = data_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return (type(other) is type(self) and
                (self.addr_width, self.data_width) == (other.addr_width, other.data_width))

    def __hash__(self):
        return hash((type(self), self.addr_width, self.data_width))

    def __repr__(self):
        return f"AXI4LiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


def axi_ports(component):
    """The ``ports=`` dict for ``verilog.convert`` naming AXI members ``<port>_<signal>``.

    Every member of an :class:`AXI4Signature` / :class:`AXI4LiteSignature` port ``m_axi`` is
    named ``m_axi_araddr`` (one underscore, as Vivado and cocotbext-axi expect); every other
    member keeps Amaranth's default name (path joined with ``__``).
    """
    from amaranth.hdl._ir import PortDirection
    if not isinstance(component, wiring.Component):
        raise TypeError(f"component must be a wiring.Component, not {component!r}")
    ports = {}
    for path, member, value in component.signature.flatten(component):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        if not isinstance(value, Value):
            continue
        sig = component.signature
        parent = None
        for step in path[:-1]:
            parent = sig.members[step].signature if sig.members[step].is_signature else None
            sig = parent
        if len(path) == 2 and isinstance(parent, (AXI4Signature, AXI4LiteSignature)):
            name = f"{path[0]}_{path[1]}"
        else:
            name = "__".join(map(str, path))
        direction = PortDirection.Input if member.flow == In else PortDirection.Output
        ports[name] = (value, direction)
    return ports
