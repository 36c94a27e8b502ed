"""The project's own small network spec, and an importer for ``torch.nn.Sequential``.

A :class:`Network` is an input shape ``(C, H, W)`` plus a list of layers — :class:`Conv2d`,
:class:`ReLU`, :class:`MaxPool2d` (2x2, stride 2), :class:`Flatten`, :class:`Linear` — in the
order PyTorch would run them. :func:`fuse` groups them the way the accelerator runs them: one
*hardware layer* (:class:`HwLayer`) per convolution or linear layer, with the ReLU and max-pool
that follow it fused on its store path (docs/numerics.md section 8) and Flatten free (an FC
layer reads the previous layer's DRAM image as its input vector). Anything the accelerator
cannot run raises :class:`UnsupportedLayer` naming the layer's index, what it is and what is
allowed.

Weights are kept in PyTorch's shapes and order here (conv ``[M, N, K, K]``, linear
``[out, in]`` with ``in`` in PyTorch's ``(c, h, w)`` flatten order); the compiler permutes FC
weights that follow a Flatten into the DRAM flatten order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear", "Network", "HwLayer",
    "UnsupportedLayer", "fuse", "lenet5", "small_cnn", "vgg_cifar", "from_torch", "NETWORKS",
]


class UnsupportedLayer(ValueError):
    """A layer the accelerator cannot run (raised at compile time)."""


@dataclass
class Conv2d:
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    bias: bool = True


@dataclass
class ReLU:
    pass


@dataclass
class MaxPool2d:
    kernel_size: int = 2
    stride: int | None = None


@dataclass
class Flatten:
    pass


@dataclass
class Linear:
    in_features: int
    out_features: int
    bias: bool = True


@dataclass
class Network:
    """Input shape ``(C, H, W)`` and a list of layers."""
    input_shape: tuple
    layers: list
    #: Optional initial parameters: {layer index: (weight, bias or None)} in PyTorch shapes.
    params: dict = field(default_factory=dict)


@dataclass
class HwLayer:
    """One layer as the accelerator runs it (conv or FC, with fused ReLU / pool)."""
    index: int                 # position among the hardware layers
    source: int                # index of the Conv2d/Linear in Network.layers
    kind: str                  # "conv" or "fc"
    in_shape: tuple            # (C, H, W) of the input map (FC after FC: (features, 1, 1))
    out_channels: int
    kernel: int = 1
    stride: int = 1
    pad: int = 0
    bias: bool = True
    relu: bool = False
    pool: bool = False
    flatten: bool = False      # FC whose input is a flattened conv-layout map

    @property
    def conv_out_hw(self):
        if self.kind == "fc":
            return 1, 1
        _, h, w = self.in_shape
        k, s, p = self.kernel, self.stride, self.pad
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    @property
    def out_shape(self):
        ho, wo = self.conv_out_hw
        if self.pool:
            ho, wo = ho // 2, wo // 2
        return self.out_channels, ho, wo

    @property
    def in_features(self):
        c, h, w = self.in_shape
        return c * h * w

    @property
    def weight_shape(self):
        if self.kind == "conv":
            return (self.out_channels, self.in_shape[0], self.kernel, self.kernel)
        return (self.out_channels, self.in_features)

    def macs(self, batch):
        ho, wo = self.conv_out_hw
        return batch * self.out_channels * self.in_shape[0] * self.kernel ** 2 * ho * wo \
            if self.kind == "conv" else batch * self.out_channels * self.in_features

    def describe(self):
        if self.kind == "conv":
            s = (f"Conv2d({self.in_shape[0]}, {self.out_channels}, k={self.kernel}, "
                 f"stride={self.stride}, pad={self.pad})")
        else:
            s = f"Linear({self.in_features}, {self.out_channels})"
        return s + (" +ReLU" if self.relu else "") + (" +MaxPool2d(2)" if self.pool else "")


def _what(layer):
    return f"{type(layer).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(layer).items())})" \
        if hasattr(layer, "__dict__") else repr(layer)


def fuse(network, cfg=None):
    """The :class:`HwLayer` list of ``network``; raises :class:`UnsupportedLayer`.

    With ``cfg``, kernel and stride limits of the configuration are checked too.
    """
    shape = tuple(network.input_shape)
    if len(shape) != 3 or any(not isinstance(v, int) or v < 1 for v in shape):
        raise ValueError(f"input_shape must be (C, H, W) positive integers, not {shape!r}")
    out = []
    flattened = False
    allowed = ("Conv2d(k <= k_max, stride <= stride_max, pad < k), ReLU after Conv2d/Linear, "
               "MaxPool2d(2) after Conv2d[+ReLU], Flatten, Linear")

    def fail(i, layer, why):
        raise UnsupportedLayer(f"layer {i}: {_what(layer)} is not supported: {why}; "
                               f"allowed: {allowed}")

    for i, layer in enumerate(network.layers):
        last = out[-1] if out else None
        if isinstance(layer, Conv2d):
            if flattened:
                fail(i, layer, "a convolution after Flatten")
            if layer.in_channels != shape[0]:
                fail(i, layer, f"its input has {shape[0]} channels, not {layer.in_channels}")
            if cfg is not None and not 1 <= layer.kernel_size <= cfg.k_max:
                fail(i, layer, f"kernel {layer.kernel_size} > k_max = {cfg.k_max}")
            if cfg is not None and not 1 <= layer.stride <= cfg.stride_max:
                fail(i, layer, f"stride {layer.stride}, the configuration allows 1.."
                               f"{cfg.stride_max}")
            if not 0 <= layer.padding < layer.kernel_size:
                fail(i, layer, f"padding {layer.padding} must be below the kernel size")
            if layer.bias and cfg is not None and not cfg.bias:
                fail(i, layer, "bias, but the configuration has no bias unit")
            hw = HwLayer(len(out), i, "conv", shape, layer.out_channels, layer.kernel_size,
                         layer.stride, layer.padding, layer.bias)
            if min(hw.conv_out_hw) < 1:
                fail(i, layer, f"input map {shape[1]}x{shape[2]} is smaller than the kernel")
            out.append(hw)
            shape = hw.out_shape
        elif isinstance(layer, Linear):
            c, h, w = shape
            if (h > 1 or w > 1) and not flattened:
                fail(i, layer, "a Linear on a map needs a Flatten before it")
            if layer.in_features != c * h * w:
                fail(i, layer, f"its input has {c * h * w} features, not {layer.in_features}")
            if layer.bias and cfg is not None and not cfg.bias:
                fail(i, layer, "bias, but the configuration has no bias unit")
            # An FC fed by a conv output (or by the input map) reads the conv layout.
            out.append(HwLayer(len(out), i, "fc", shape, layer.out_features, bias=layer.bias,
                               flatten=flattened and (last is None or last.kind == "conv")))
            shape = (layer.out_features, 1, 1)
        elif isinstance(layer, ReLU):
            if last is None or last.source != i - 1:
                fail(i, layer, "ReLU must directly follow a Conv2d or Linear")
            last.relu = True
        elif isinstance(layer, MaxPool2d):
            stride = layer.stride if layer.stride is not None else layer.kernel_size
            if layer.kernel_size != 2 or stride != 2:
                fail(i, layer, "only 2x2 max-pool with stride 2")
            if last is None or last.kind != "conv" or last.pool or not isinstance(
                    network.layers[i - 1], (Conv2d, ReLU)):
                fail(i, layer, "MaxPool2d must follow a Conv2d (or its ReLU)")
            if min(last.conv_out_hw) < 2:
                fail(i, layer, "the map is smaller than 2x2")
            last.pool = True
            shape = last.out_shape
        elif isinstance(layer, Flatten):
            flattened = True
        else:
            fail(i, layer, "unknown layer type")
    if not out:
        raise UnsupportedLayer("the network has no Conv2d or Linear layer")
    if out[-1].kind != "fc" or out[-1].relu:
        raise UnsupportedLayer(f"layer {out[-1].source}: the network must end with a Linear "
                               f"layer without ReLU (its outputs are the logits)")
    return out


def lenet5(num_classes=10, in_channels=1, size=32):
    """LeNet-5 (ReLU, max-pool): the workload of the training CLI."""
    s = ((size - 4) // 2 - 4) // 2
    return Network((in_channels, size, size), [
        Conv2d(in_channels, 6, 5), ReLU(), MaxPool2d(2),
        Conv2d(6, 16, 5), ReLU(), MaxPool2d(2),
        Flatten(),
        Linear(16 * s * s, 120), ReLU(),
        Linear(120, 84), ReLU(),
        Linear(84, num_classes),
    ])


def small_cnn(num_classes=10, in_channels=1, size=8):
    """A small CNN for the raw 8x8 digits (fast tests): two 3x3 convs (pad 1) with ReLU and
    max-pool, then FC 128 -> 32 -> classes."""
    return Network((in_channels, size, size), [
        Conv2d(in_channels, 8, 3, padding=1), ReLU(), MaxPool2d(2),
        Conv2d(8, 8, 3, stride=1, padding=1), ReLU(), MaxPool2d(2),
        Flatten(),
        Linear(8 * (size // 4) ** 2, 32), ReLU(),
        Linear(32, num_classes),
    ])


def vgg_cifar(num_classes=10, in_channels=3, size=32, widths=(32, 64, 128)):
    """A reduced VGG-style stack (workloads.vgg_cifar): blocks of two 3x3 convs (pad 1, ReLU),
    the second pooled, then one FC to the classes."""
    layers, n = [], in_channels
    for m in widths:
        layers += [Conv2d(n, m, 3, padding=1), ReLU(), Conv2d(m, m, 3, padding=1), ReLU(),
                   MaxPool2d(2)]
        n, size = m, size // 2
    layers += [Flatten(), Linear(n * size * size, num_classes)]
    full = size * 2 ** len(widths)
    return Network((in_channels, full, full), layers)


NETWORKS = {"lenet": lenet5, "small": small_cnn, "vgg": vgg_cifar}


def from_torch(module, input_shape):
    """A :class:`Network` from a ``torch.nn.Sequential`` (weights copied, PyTorch order)."""
    import torch.nn as nn

    layers, params = [], {}
    for i, m in enumerate(module):
        if isinstance(m, nn.Conv2d):
            k, s, p = m.kernel_size, m.stride, m.padding
            if k[0] != k[1] or s[0] != s[1] or isinstance(p, str) or p[0] != p[1] \
                    or m.groups != 1 or tuple(m.dilation) != (1, 1) \
                    or m.padding_mode != "zeros":
                raise UnsupportedLayer(
                    f"layer {i}: {m} is not supported: only square kernels, equal strides "
                    f"and zero paddings, groups=1, dilation=1")
            layers.append(Conv2d(m.in_channels, m.out_channels, k[0], s[0], p[0],
                                 m.bias is not None))
        elif isinstance(m, nn.Linear):
            layers.append(Linear(m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.ReLU):
            layers.append(ReLU())
            continue
        elif isinstance(m, nn.MaxPool2d):
            def one(v):
                return v if isinstance(v, int) else (v[0] if v[0] == v[1] else v)
            if m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode:
                raise UnsupportedLayer(f"layer {i}: {m} is not supported: only "
                                       f"MaxPool2d(2) without padding, dilation, ceil_mode")
            layers.append(MaxPool2d(one(m.kernel_size), one(m.stride)))
            continue
        elif isinstance(m, nn.Flatten):
            layers.append(Flatten())
            continue
        else:
            raise UnsupportedLayer(f"layer {i}: {type(m).__name__} ({m}) is not supported; "
                                   f"allowed: Conv2d, ReLU, MaxPool2d(2), Flatten, Linear")
        w = m.weight.detach().cpu().numpy().astype(np.float32)
        b = m.bias.detach().cpu().numpy().astype(np.float32) if m.bias is not None else None
        params[i] = (w, b)
    return Network(tuple(input_shape), layers, params)
