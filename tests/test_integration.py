"""docs/integration.md's example SoC — the accelerator next to a memory and an AXI4-Lite manager
of the SoC's own — taken out of the page as it is, elaborated and simulated: the inference
program of a compiled network runs from the SoC's memory, and the logits it leaves there
equal the tile machine's."""

import re
from pathlib import Path

import numpy as np
from amaranth.sim import Simulator

from ef_train_hdl.config import preset
from ef_train_hdl.network import Conv2d, Flatten, Linear, Network, ReLU
from ef_train_hdl.runtime import Trainer

DOC = Path(__file__).resolve().parents[1] / "docs" / "integration.md"


def example_namespace():
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace


def test_the_documented_soc_runs_a_program():
    ns = example_namespace()
    cfg = preset("tiny")
    net = Network((1, 6, 6), [Conv2d(1, 2, 3, padding=1), ReLU(), Flatten(),
                              Linear(2 * 6 * 6, 3)])
    ref = Trainer(net, 2, cfg, backend="tiles")
    ref.init(seed=4)
    x = np.random.default_rng(4).standard_normal((2, 1, 6, 6)).astype(np.float32)
    ref._write_input(x)
    image = ref.backend.mem.copy()          # the DRAM image before the run
    want = ref.predict(x)                   # runs the inference tile program on the machine
    c = ref.compiled
    f = cfg.floats_per_beat
    words = np.concatenate([image, np.zeros(-len(image) % f, np.uint32)])
    beats = [sum(int(w) << (32 * i) for i, w in enumerate(words[k:k + f]))
             for k in range(0, len(words), f)]
    soc = ns["MySoC"](cfg, beats, c.infer_tiles_addr)
    result = {}

    async def tb(ctx):
        for _ in range(200_000):
            if ctx.get(soc.done):
                break
            await ctx.tick()
        result["status"] = ctx.get(soc.status)
        logits = c.logits
        got = []
        for k in range(logits.base // f, (logits.base + logits.words) // f):
            beat = ctx.get(soc.ram.memory.data[k])
            got += [(beat >> (32 * i)) & 0xFFFF_FFFF for i in range(f)]
        result["logits"] = np.array(got, np.uint32)

    sim = Simulator(soc)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert result["status"] & 0b111 == 0b010, f"STATUS 0x{result['status']:X}: not done"
    got = c.unpack_logits(result["logits"].view(np.float32))
    np.testing.assert_array_equal(got, want)
