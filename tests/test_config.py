import pytest

from ef_train_hdl.config import AcceleratorConfig, PRESETS, preset


def test_presets_are_valid_and_named():
    assert set(PRESETS) >= {"tiny", "ulx3s", "ultra96", "zcu102"}
    assert (preset("tiny").tm, preset("tiny").tn) == (2, 2)
    assert (preset("ultra96").tm, preset("ultra96").tn) == (8, 8)
    assert (preset("zcu102").tm, preset("zcu102").tn) == (16, 16)
    for name, config in PRESETS.items():
        assert config.name == name


def test_config_is_frozen():
    with pytest.raises(Exception):
        preset("tiny").tm = 4


@pytest.mark.parametrize("field, value, error, words", [
    ("tm", 3, ValueError, "tm must be a positive power of two, not 3"),
    ("tn", 0, ValueError, "tn must be a positive power of two"),
    ("tm", 2.0, TypeError, "tm must be an integer, not 2.0"),
    ("k_max", 12, ValueError, "k_max must be between 1 and 11, not 12"),
    ("stride_max", 3, ValueError, "stride_max must be between 1 and 2"),
    ("dma_data_width", 96, ValueError, "dma_data_width must be one of"),
    ("mult_format", "fp16", ValueError, "mult_format must be one of fp32, bf16, not 'fp16'"),
    ("ifm_depth", 1000, ValueError, "ifm_depth must be a positive power of two"),
    ("weight_depth", 16, ValueError, "weight_depth must hold at least one k_max x k_max"),
    ("bias", 1, TypeError, "bias must be a bool"),
])
def test_bad_values_name_the_parameter(field, value, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        AcceleratorConfig(**{field: value})


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="unknown preset 'vc707'; the presets are tiny, ulx3s"):
        preset("vc707")


def test_overrides_are_validated():
    assert preset("ultra96", tm=16).tm == 16
    with pytest.raises(ValueError, match="tn must be"):
        preset("ultra96", tn=5)


def test_derived_quantities():
    config = preset("zcu102")
    assert config.pes == 256
    assert config.floats_per_beat == 4
    assert config.peak_gflops(100) == pytest.approx(51.2)
    assert config.acc_interleave & (config.acc_interleave - 1) == 0
