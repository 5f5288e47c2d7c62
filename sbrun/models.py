"""The built-in model zoo. Each is a plain constructor: its signature is its config schema
(conf/model/<name>.yaml names it as `_target_`), and sbrun passes num_classes, in_channels and
image_size where a signature takes them, exactly as it does for a user's own model.

CIFAR-style variants throughout: a 3x3 stride-1 stem and no max-pool, so 32x32 inputs keep their
resolution into the first stage (and 8x8 or 28x28 inputs work too). Adaptive pooling before the
classifier makes every convolutional model accept any input size, which Composer's downsampled
selection forward relies on.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import check


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _Head(nn.Sequential):
    """Global average pool, optional dropout, linear classifier."""

    def __init__(self, cin: int, num_classes: int, dropout: float = 0.0):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(cin, num_classes))


def mlp(num_classes: int, in_channels: int, image_size: int, width: int = 256, dropout: float = 0.0) -> nn.Module:
    check(width >= 1, "model.width", width, "an integer >= 1")
    check(0.0 <= dropout < 1.0, "model.dropout", dropout, "a number in [0, 1)")
    d = in_channels * image_size * image_size
    return nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.ReLU(inplace=True),
                         nn.Dropout(dropout), nn.Linear(width, width), nn.ReLU(inplace=True),
                         nn.Linear(width, num_classes))


def linear(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Multinomial logistic regression (for exact gradient tests)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))


def cnn(num_classes: int, in_channels: int, image_size: int, width: int = 32, dropout: float = 0.0) -> nn.Module:
    """Small VGG-style net for digits/MNIST-sized inputs: two conv pairs, each halving the size,
    then an adaptive average pool and a linear classifier. The pool keeps a 4x4 map for inputs of
    16 pixels and more: a global pool learned MNIST slowly, and its eval-mode accuracy swung by 20
    points between early epochs. 8x8 digits (2x2 after the convolutions) pool globally, which
    trains them best."""
    check(width >= 1, "model.width", width, "an integer >= 1")
    check(0.0 <= dropout < 1.0, "model.dropout", dropout, "a number in [0, 1)")
    w = width
    side = 4 if image_size >= 16 else 1
    return nn.Sequential(_conv_bn(in_channels, w), _conv_bn(w, w), nn.MaxPool2d(2),
                         _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
                         nn.AdaptiveAvgPool2d(side), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(2 * w * side * side, num_classes))


# --- ResNet-18 (He et al. 2016), CIFAR variant ------------------------------------------------

class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)), inplace=True)
        return F.relu(self.b2(self.c2(out)) + self.short(x), inplace=True)


def resnet18(num_classes: int, in_channels: int) -> nn.Module:
    layers = [_conv_bn(in_channels, 64)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_Basic(cin, cout, stride), _Basic(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, _Head(512, num_classes))


# --- Wide ResNet (Zagoruyko & Komodakis 2016) --------------------------------------------------

class _WideBlock(nn.Module):
    """Pre-activation block with dropout between the convolutions."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.b1 = nn.BatchNorm2d(cin)
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.short = None if (stride == 1 and cin == cout) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        pre = F.relu(self.b1(x))
        out = self.c1(pre)
        out = F.dropout(F.relu(self.b2(out)), self.dropout, self.training)
        out = self.c2(out)
        return out + (x if self.short is None else self.short(pre))


def wrn(num_classes: int, in_channels: int, depth: int = 28, widen_factor: int = 10, dropout: float = 0.3) -> nn.Module:
    check(depth >= 10 and (depth - 4) % 6 == 0, "model.depth", depth, "6n+4 with n >= 1 (e.g. 16, 28, 40) for wrn")
    check(widen_factor >= 1, "model.widen_factor", widen_factor, "an integer >= 1")
    check(0.0 <= dropout < 1.0, "model.dropout", dropout, "a number in [0, 1)")
    n = (depth - 4) // 6
    widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    layers = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
    cin = widths[0]
    for i, stride in enumerate((1, 2, 2)):
        for j in range(n):
            layers.append(_WideBlock(cin, widths[i + 1], stride if j == 0 else 1, dropout))
            cin = widths[i + 1]
    layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, _Head(cin, num_classes))


# --- MobileNetV2 (Sandler et al. 2018), CIFAR variant -----------------------------------------

class _Inverted(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU6(inplace=True), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.body(x)
        return x + out if self.residual else out


def mobilenetv2(num_classes: int, in_channels: int) -> nn.Module:
    # (expansion, channels, repeats, stride); the first two strides are 1 for 32x32 inputs.
    spec = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]
    layers = [_conv_bn(in_channels, 32)]
    cin = 32
    for expand, cout, repeats, stride in spec:
        for j in range(repeats):
            layers.append(_Inverted(cin, cout, expand, stride if j == 0 else 1))
            cin = cout
    layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True)]
    return nn.Sequential(*layers, _Head(1280, num_classes))


# --- DenseNet-BC (Huang et al. 2017), CIFAR variant -------------------------------------------

class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True),
            nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


def densenet(num_classes: int, in_channels: int, depth: int = 100, growth_rate: int = 12) -> nn.Module:
    check(depth >= 10 and (depth - 4) % 6 == 0, "model.depth", depth, "6n+4 with n >= 1 (e.g. 40, 100) for densenet")
    check(growth_rate >= 1, "model.growth_rate", growth_rate, "an integer >= 1")
    n = (depth - 4) // 6      # bottleneck layers per dense block
    g = growth_rate
    cin = 2 * g
    layers = [nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False)]
    for block in range(3):
        for _ in range(n):
            layers.append(_DenseLayer(cin, g))
            cin += g
        if block < 2:   # transition: compression 0.5 and 2x2 average pooling
            cout = cin // 2
            layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False),
                       nn.AvgPool2d(2, ceil_mode=True)]
            cin = cout
    layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, _Head(cin, num_classes))


# --- ImageNet models (torchvision) -----------------------------------------------------------------

def torchvision_resnet(num_classes: int, in_channels: int, depth: int = 50) -> nn.Module:
    """torchvision's ImageNet ResNet-18/34/50/101/152 (7x7 stride-2 stem and max-pool), randomly
    initialised, with a `num_classes` classifier; a 1-channel stem for grayscale data."""
    import torchvision

    arch = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}
    check(depth in arch, "model.depth", depth, " | ".join(map(str, arch)))
    model = getattr(torchvision.models, arch[depth])(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model
