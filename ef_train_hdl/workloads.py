"""Layer descriptions and the layer tables the benchmarks and the compiler use.

:class:`Layer` is the one description of a layer that the schedule, the performance model,
the layout's transfer enumeration and the compiler share. :class:`Phase` names the three
training phases. The tables: :func:`vgg16_conv` (the 13 conv layers of VGG-16 at 224x224, the
paper's benchmark), :func:`vgg_cifar` (a reduced VGG-style stack at 32x32) and :func:`lenet5`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Phase", "Layer", "vgg16_conv", "vgg_cifar", "lenet5", "WORKLOADS"]


class Phase(enum.Enum):
    """The three training phases that run on the PE array."""
    FP = "fp"   # forward: z = conv(x, w)
    BP = "bp"   # backward: grad_in = conv(grad_out, w transposed and flipped)
    WU = "wu"   # weight update: dw = grad_out (x) x, then SGD


LAYER_KINDS = ("conv", "fc", "pool")


@dataclass(frozen=True)
class Layer:
    """One layer as the accelerator sees it.

    Parameters
    ----------
    name : str
    kind : str
        ``"conv"``, ``"fc"`` (a 1x1 convolution of one image whose pixels are the batch) or
        ``"pool"`` (a stand-alone 2x2/2 max-pool; a pool after a conv is ``pool=True``).
    in_channels, out_channels : int
        N and M. For ``fc``, ``in_channels`` is the length of the input vector in the DRAM
        order of the flattened input (docs/layout.md), padding channels included.
    height, width : int
        Input feature-map size (1 x 1 for ``fc``).
    kernel, stride, pad : int
    relu : bool
        ReLU after the convolution (fused on the store path).
    pool : bool
        2x2 stride-2 max-pool after the ReLU (fused on the store path).
    bias : bool
    flatten_from : tuple or None
        For an ``fc`` layer that reads a conv/pool output directly: that tensor's
        ``(channels, height, width)``. Its input is then read from the conv layout
        (``[b][g][h][w][j]``), one short run per image (docs/layout.md, "flatten").
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    height: int = 1
    width: int = 1
    kernel: int = 1
    stride: int = 1
    pad: int = 0
    relu: bool = False
    pool: bool = False
    bias: bool = False
    flatten_from: tuple | None = None

    def __post_init__(self):
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"layer {self.name!r}: kind must be one of {LAYER_KINDS}, "
                             f"not {self.kind!r}")
        for field in ("in_channels", "out_channels", "height", "width", "kernel", "stride"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"layer {self.name!r}: {field} must be a positive integer, "
                                 f"not {value!r}")
        if not isinstance(self.pad, int) or self.pad < 0:
            raise ValueError(f"layer {self.name!r}: pad must be a non-negative integer, "
                             f"not {self.pad!r}")
        if self.kind == "fc" and (self.height, self.width, self.kernel, self.stride,
                                  self.pad) != (1, 1, 1, 1, 0):
            raise ValueError(f"layer {self.name!r}: an fc layer has height = width = kernel "
                             f"= stride = 1 and pad = 0")
        if self.kind == "pool" and self.in_channels != self.out_channels:
            raise ValueError(f"layer {self.name!r}: a pool layer keeps its channels "
                             f"({self.in_channels} != {self.out_channels})")
        if self.kind == "conv" and (self.height + 2 * self.pad < self.kernel
                                    or self.width + 2 * self.pad < self.kernel):
            raise ValueError(f"layer {self.name!r}: the {self.kernel}x{self.kernel} kernel "
                             f"is larger than the padded {self.height}x{self.width} input")

    # -- shapes ------------------------------------------------------------------------------

    @property
    def out_height(self):
        """Rows of the convolution output (before a pool)."""
        if self.kind == "pool":
            return self.height
        return (self.height + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def out_width(self):
        if self.kind == "pool":
            return self.width
        return (self.width + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def pooled(self):
        return self.pool or self.kind == "pool"

    @property
    def stored_height(self):
        """Rows of the tensor this layer writes in FP (after the pool, if any)."""
        return self.out_height // 2 if self.pooled else self.out_height

    @property
    def stored_width(self):
        return self.out_width // 2 if self.pooled else self.out_width

    def macs(self, batch):
        """Multiply-accumulates of FP (= those of WU; BP's for stride 1 and full padding)."""
        if self.kind == "pool":
            return 0
        if self.kind == "fc":
            return self.out_channels * self.in_channels * batch
        return (self.out_channels * self.in_channels * self.kernel * self.kernel
                * self.out_height * self.out_width * batch)


def _conv(name, n, m, size, *, k=3, s=1, p=1, pool=False):
    return Layer(name, "conv", n, m, size, size, k, s, p, relu=True, pool=pool, bias=True)


def vgg16_conv(size=224):
    """The 13 conv layers of VGG-16 (3x3, stride 1, pad 1, ReLU, pool after 2, 4, 7, 10, 13)."""
    plan = [(3, 64), (64, 64, "P"), (64, 128), (128, 128, "P"), (128, 256), (256, 256),
            (256, 256, "P"), (256, 512), (512, 512), (512, 512, "P"), (512, 512),
            (512, 512), (512, 512, "P")]
    layers = []
    for i, entry in enumerate(plan):
        pool = len(entry) == 3
        layers.append(_conv(f"conv{i + 1}", entry[0], entry[1], size, pool=pool))
        if pool:
            size //= 2
    return layers


def vgg_cifar(size=32, classes=10):
    """A reduced VGG-style stack for 32x32 inputs: 3 blocks of two 3x3 convs + pool, one FC."""
    layers, n = [], 3
    for block, m in enumerate((32, 64, 128)):
        layers.append(_conv(f"conv{block + 1}_1", n, m, size))
        layers.append(_conv(f"conv{block + 1}_2", m, m, size, pool=True))
        n, size = m, size // 2
    layers.append(Layer("fc", "fc", n * size * size, classes, bias=True,
                        flatten_from=(n, size, size)))
    return layers


def lenet5(size=28):
    """LeNet-5: conv 5x5 (pad 2 on 28x28) 6 -> pool -> conv 5x5 16 -> pool -> FC 120, 84, 10."""
    c1 = Layer("conv1", "conv", 1, 6, size, size, 5, 1, 2, relu=True, pool=True, bias=True)
    s = c1.stored_height
    c2 = Layer("conv2", "conv", 6, 16, s, s, 5, 1, 0, relu=True, pool=True, bias=True)
    s = c2.stored_height
    return [c1, c2,
            Layer("fc1", "fc", 16 * s * s, 120, relu=True, bias=True, flatten_from=(16, s, s)),
            Layer("fc2", "fc", 120, 84, relu=True, bias=True),
            Layer("fc3", "fc", 84, 10, bias=True)]


WORKLOADS = {"vgg16": vgg16_conv, "vgg_cifar": vgg_cifar, "lenet5": lenet5}
