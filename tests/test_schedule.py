"""The schedule: chosen tilings fit the buffers (checked on the DMA transfers themselves), bad
layers raise errors that name the layer, the limit and the need."""

import pytest

from ef_train_hdl.config import preset
from ef_train_hdl.layout import tile_transfers
from ef_train_hdl.perf import DramModel, layer_perf
from ef_train_hdl.schedule import Tiling, check_layer, fits, schedule_layer
from ef_train_hdl.workloads import Layer, Phase, lenet5, vgg_cifar


@pytest.mark.parametrize("name", ["tiny", "ultra96"])
@pytest.mark.parametrize("layer", lenet5() + vgg_cifar(), ids=lambda l: l.name)
def test_schedule_fits_buffers(name, layer):
    cfg = preset(name, max_channels=4096)      # fc1 reads 400 inputs; tiny allows 256
    batch = 2
    for phase in Phase:
        perf = schedule_layer(layer, phase, cfg, batch)
        tiling = perf.tiling
        transfers = tile_transfers(layer, phase, tiling, cfg, batch)
        # Words one step loads into the Tn IFM banks, per bank, from the transfers themselves.
        per_step = {}
        for t in transfers:
            if t.direction == "load" and t.tensor == "ifm":
                per_step[t.step] = per_step.get(t.step, 0) + t.words
        if per_step:
            assert max(per_step.values()) / cfg.tn <= cfg.ifm_depth
        # The chosen tiling is never slower than the smallest feasible one.
        small = Tiling(1, 1, tiling.order)
        if fits(layer, phase, small, cfg, batch):
            assert perf.cycles <= layer_perf(layer, phase, small, cfg, batch).cycles


def test_weights_resident_reused_across_batch():
    """With the weights on chip, FP loads each weight word once per layer."""
    cfg = preset("ultra96")
    layer = vgg_cifar()[1]
    perf = schedule_layer(layer, Phase.FP, cfg, 8)
    assert perf.tiling.order == "resident"
    weights = sum(t.words for t in tile_transfers(layer, Phase.FP, perf.tiling, cfg, 8)
                  if t.tensor == "weights")
    assert weights == layer.out_channels * layer.in_channels * 9


def test_kernel_too_large():
    layer = Layer("big_k", "conv", 3, 8, 32, 32, 7, 1, 3)
    with pytest.raises(ValueError, match=r"big_k.*kernel 7.*k_max = 5"):
        check_layer(layer, preset("ultra96"), 1)


def test_stride_too_large():
    layer = Layer("s3", "conv", 3, 8, 32, 32, 3, 3, 1)
    with pytest.raises(ValueError, match=r"s3.*stride 3.*stride_max = 2"):
        schedule_layer(layer, Phase.FP, preset("ultra96"), 1)


def test_row_does_not_fit():
    # tiny: ifm_depth 512; one output row of a 5x5 kernel needs 5 input rows of 200 pixels
    layer = Layer("wide", "conv", 2, 2, 8, 200, 5, 1, 2)
    with pytest.raises(ValueError, match=r"wide.*FP needs 1000 words per ifm bank.*ifm_depth "
                                         r"is 512"):
        check_layer(layer, preset("tiny").replace(max_size=1024), 1)


def test_descriptor_limits():
    with pytest.raises(ValueError, match=r"fc.*batch = 32 exceeds max_batch = 16"):
        check_layer(Layer("fc", "fc", 8, 8), preset("tiny"), 32)


def test_tiling_validation():
    with pytest.raises(ValueError, match="tile_rows must be a positive integer, not 0"):
        Tiling(0)
    with pytest.raises(ValueError, match="order must be one of"):
        Tiling(1, 1, "sideways")


def test_tm_below_tn_stores_whole_groups():
    cfg = preset("ulx3s").replace(tm=4, tn=8)
    layer = Layer("c", "conv", 8, 16, 8, 8, 3, 1, 1)
    assert not fits(layer, Phase.FP, Tiling(8, 1), cfg, 1)
    assert fits(layer, Phase.FP, Tiling(8, 2), cfg, 1)
    assert schedule_layer(layer, Phase.FP, cfg, 1).tiling.groups % 2 == 0


def test_pooled_tiles_are_even():
    cfg = preset("tiny")
    layer = lenet5()[0]
    perf = schedule_layer(layer, Phase.FP, cfg, 2, DramModel())
    assert perf.tiling.tile_rows % 2 == 0 or perf.tiling.tile_rows >= layer.out_height
