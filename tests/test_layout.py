"""The reshaped DRAM layouts: round trips, element addresses, the flatten, and the DMA
transfers of every tile (each one contiguous run, stores covering their tensor once)."""

import numpy as np
import pytest

from ef_train_hdl.config import preset
from ef_train_hdl.layout import (
    ActivationLayout, BiasLayout, WeightLayout, bursts, burst_stats, fc_weights_from_torch,
    flat_length, pack_activations, pack_fc_activations, pack_weights, tile_transfers,
    unpack_activations, unpack_fc_activations, unpack_weights)
from ef_train_hdl.schedule import Tiling
from ef_train_hdl.workloads import Layer, Phase, lenet5, vgg_cifar


@pytest.mark.parametrize("shape,tn", [((2, 5, 3, 4), 4), ((1, 16, 2, 2), 8), ((3, 1, 5, 7), 2)])
def test_activation_round_trip_and_addresses(shape, tn):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    flat = pack_activations(x, tn)
    assert (unpack_activations(flat, shape, tn) == x).all()
    lay = ActivationLayout(*shape, tn)
    assert flat.size == lay.words == shape[0] * -(-shape[1] // tn) * tn * shape[2] * shape[3]
    # [b][g][h][w][j] with c = g*tn + j, written out by hand
    b, c, h, w = shape
    groups = -(-c // tn)
    for bb, cc, hh, ww in np.ndindex(*shape):
        addr = (((bb * groups + cc // tn) * h + hh) * w + ww) * tn + cc % tn
        assert flat[addr] == x[bb, cc, hh, ww]
    # padding channels are zero
    mask = np.ones(flat.size, bool)
    mask[lay.address(*np.indices(shape)).reshape(-1)] = False
    assert (flat[mask] == 0).all()


def test_pool_index_words_like_pooled_activation():
    idx = np.random.default_rng(1).integers(0, 4, (2, 3, 2, 2))
    lay = ActivationLayout(*idx.shape, 2)
    flat = lay.pack(idx, np.uint32)
    assert flat.dtype == np.uint32
    assert (lay.unpack(flat) == idx).all()


@pytest.mark.parametrize("m,n,k,tm,tn", [(5, 7, 3, 4, 2), (16, 3, 5, 8, 8), (3, 9, 1, 2, 4)])
def test_weight_round_trip_and_block_order(m, n, k, tm, tn):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((m, n, k, k)).astype(np.float32)
    flat = pack_weights(w, tm, tn)
    assert (unpack_weights(flat, w.shape, tm, tn) == w).all()
    ng = -(-n // tn)
    for mm, nn, ky, kx in np.ndindex(*w.shape):
        addr = ((((mm // tm) * ng + nn // tn) * k * k + ky * k + kx) * tm + mm % tm) * tn + nn % tn
        assert flat[addr] == w[mm, nn, ky, kx]


def test_fc_weights_bias_and_fc_activations_round_trip():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((10, 13)).astype(np.float32)
    assert (unpack_weights(pack_weights(w, 4, 8), w.shape, 4, 8) == w).all()
    b = rng.standard_normal(10).astype(np.float32)
    bl = BiasLayout(10, 4)
    assert bl.words == 12 and (bl.unpack(bl.pack(b)) == b).all()
    x = rng.standard_normal((6, 13)).astype(np.float32)       # [batch, features]
    flat = pack_fc_activations(x, 4)
    assert (unpack_fc_activations(flat, 6, 13, 4) == x).all()
    # one image whose pixels are the batch: [g][b][j]
    assert flat[(1 * 6 + 5) * 4 + 2] == x[5, 6]


def test_flatten_matches_pytorch_order():
    """An FC on the conv layout's image words equals the PyTorch NCHW flatten (float64)."""
    rng = np.random.default_rng(4)
    c, h, w, tn, batch = 5, 3, 2, 4, 3
    x = rng.standard_normal((batch, c, h, w))
    wt = rng.standard_normal((7, c * h * w))
    reference = x.reshape(batch, -1) @ wt.T
    flat = pack_activations(x, tn, np.float64).reshape(batch, -1)
    assert flat.shape[1] == flat_length(c, h, w, tn)
    ours = flat @ fc_weights_from_torch(wt, c, h, w, tn).T
    np.testing.assert_allclose(ours, reference, rtol=1e-12)


def test_bursts_by_hand():
    cfg = preset("zcu102", dma_data_width=128, max_burst_beats=256)
    assert bursts(0, 1024, cfg) == 1            # 4096 bytes = 256 beats, one 4 KiB page
    assert bursts(0, 1025, cfg) == 2
    assert bursts(1000, 100, cfg) == 2          # 4000..4400 bytes crosses 4096
    assert bursts(0, 1024, cfg.replace(max_burst_beats=16)) == 16
    stats = burst_stats([], cfg)
    assert stats == {}


LAYERS = [
    Layer("c", "conv", 5, 6, 7, 6, 3, 1, 1, relu=True, pool=True),
    Layer("s2", "conv", 3, 4, 9, 8, 3, 2, 1, relu=True),
    Layer("k5", "conv", 6, 16, 10, 10, 5, 1, 0),
    Layer("fc", "fc", 36, 10, relu=True),
]


@pytest.mark.parametrize("cfg", [preset("tiny"), preset("ulx3s").replace(tm=8, tn=4),
                                  preset("ulx3s").replace(tm=4, tn=8)], ids=["2x2", "8x4", "4x8"])
@pytest.mark.parametrize("layer", LAYERS + lenet5()[:3] + vgg_cifar()[4:6], ids=lambda l: l.name)
@pytest.mark.parametrize("phase", list(Phase))
def test_tile_transfers_are_runs_and_stores_cover_once(cfg, layer, phase):
    from ef_train_hdl.layout import _tensor_layouts
    from ef_train_hdl.schedule import candidate_tilings, fits
    batch = 3
    lay = _tensor_layouts(layer, cfg, batch)
    extra = [t for t in (Tiling(2, 1, "streamed"), Tiling(2, 2, "streamed"))
             if phase is not Phase.WU and fits(layer, phase, t, cfg, batch)]
    tilings = candidate_tilings(layer, phase, cfg, batch)[:2] + extra
    assert tilings
    for tiling in tilings:
        transfers = tile_transfers(layer, phase, tiling, cfg, batch)
        written = {}
        for t in transfers:
            assert t.words > 0
            assert 0 <= t.offset and t.offset + t.words <= lay[t.tensor].words, t
            if t.direction == "store":
                written.setdefault(t.tensor, np.zeros(lay[t.tensor].words, int))
                written[t.tensor][t.offset:t.offset + t.words] += 1
        # Each tile load of an input strip is one run (except the flatten, one per image).
        per_step = {}
        for t in transfers:
            if t.direction == "load" and t.tensor == "ifm":
                per_step[t.step] = per_step.get(t.step, 0) + 1
        limit = batch if layer.flatten_from is not None else 1
        assert all(v <= limit for v in per_step.values())
        expected = {Phase.FP: ["ofm"] + (["pool_idx"] if layer.pooled else []),
                    Phase.BP: ["grad_in"], Phase.WU: ["weights"]}[phase]
        for name in expected:
            if phase is Phase.FP:
                # every stored word is written exactly once; padding channels are written
                # (as zeros) together with their group, dropped pool rows are not
                covered = written[name]
                assert covered.max() == 1
                out = lay["ofm"]
                rows = out.height
                assert covered.sum() == out.batch * out.groups * rows * out.width * out.tn
            else:
                assert (written[name] == 1).all(), (name, tiling)
