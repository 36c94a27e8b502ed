"""The training CLI: it runs, prints what it promises, saves/loads weights, fine-tunes."""

import re

import numpy as np
import pytest

from ef_train_hdl import datasets
from ef_train_hdl.train import build_parser, main


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for action in build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and action.option_strings[-1] in out


def test_cli_quick_run_and_finetune(tmp_path, capsys):
    w = tmp_path / "w.npz"
    assert main(["--net", "small", "--batch", "16", "--epochs", "2", "--max-steps", "6",
                 "--train-subset", "64", "--lr", "0.05", "--no-progress",
                 "--save", str(w)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"epoch 1: train loss \d+\.\d+  test accuracy \d+\.\d+ %", out)
    assert re.search(r"\d+ cycles, PE utilisation \d+\.\d+ %", out)
    assert w.exists()
    saved = dict(np.load(w))
    assert main(["--net", "small", "--batch", "16", "--epochs", "1", "--max-steps", "2",
                 "--train-subset", "32", "--no-progress", "--init", str(w),
                 "--shift", "invert"]) == 0
    out = capsys.readouterr().out
    assert "before adaptation (shift invert): test accuracy" in out
    assert "after adaptation (shift invert): test accuracy" in out
    assert set(saved) == {"w0", "b0", "w3", "b3", "w7", "b7", "w9", "b9"}


def test_dataset_split_and_shifts():
    x, y, xt, yt = datasets.digits(32)
    assert x.shape == (1437, 1, 32, 32) and xt.shape == (360, 1, 32, 32)
    assert set(np.unique(y)) == set(range(10))
    x8, _, _, _ = datasets.digits(8)
    # Nearest-neighbour upsampling: every 4x4 block is one source pixel.
    np.testing.assert_array_equal(x[:, :, ::4, ::4], x8)
    np.testing.assert_array_equal(x[:, :, 3::4, 3::4], x8)
    xr, _, _, _ = datasets.digits(8, "rotate")
    np.testing.assert_array_equal(xr[:, 0], np.rot90(x8[:, 0], 1, axes=(1, 2)))
    xi, _, _, _ = datasets.digits(8, "invert")
    np.testing.assert_array_equal(xi, 1 - x8)


@pytest.mark.slow
def test_lenet_reaches_90_percent(capsys):
    assert main(["--no-progress"]) == 0
    out = capsys.readouterr().out
    acc = float(re.findall(r"test accuracy (\d+\.\d+) %", out)[-1])
    assert acc >= 90.0
