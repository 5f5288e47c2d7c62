"""The model zoo. Every builder takes (ModelConfig, channels, image_size, num_classes).

CIFAR-style variants throughout: a 3x3 stride-1 stem and no max-pool, so 32x32 inputs keep their
resolution into the first stage (and 8x8 or 28x28 inputs work too). Adaptive pooling before the
classifier makes every convolutional model accept any input size, which Composer's downsampled
selection forward relies on.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig

Builder = Callable[[ModelConfig, int, int, int], nn.Module]
MODELS: Dict[str, Builder] = {}
CONVOLUTIONAL = {"cnn", "resnet18", "wrn", "mobilenetv2", "densenet"}


def register(name: str):
    def deco(fn: Builder) -> Builder:
        MODELS[name] = fn
        return fn
    return deco


def build_model(cfg: ModelConfig, channels: int, image_size: int, num_classes: int) -> nn.Module:
    return MODELS[cfg.name](cfg, channels, image_size, num_classes)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _Head(nn.Sequential):
    """Global average pool, optional dropout, linear classifier."""

    def __init__(self, cin: int, num_classes: int, dropout: float = 0.0):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(cin, num_classes))


@register("mlp")
def mlp(cfg: ModelConfig, channels: int, image_size: int, num_classes: int) -> nn.Module:
    d = channels * image_size * image_size
    return nn.Sequential(nn.Flatten(), nn.Linear(d, cfg.width), nn.ReLU(inplace=True),
                         nn.Dropout(cfg.dropout), nn.Linear(cfg.width, cfg.width), nn.ReLU(inplace=True),
                         nn.Linear(cfg.width, num_classes))


@register("linear")
def linear(cfg: ModelConfig, channels: int, image_size: int, num_classes: int) -> nn.Module:
    """Multinomial logistic regression (for exact gradient tests)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size * image_size, num_classes))


@register("cnn")
def cnn(cfg: ModelConfig, channels: int, image_size: int, num_classes: int) -> nn.Module:
    """Small VGG-style net for digits/MNIST-sized inputs: two conv pairs, each halving the size,
    then an adaptive average pool and a linear classifier. The pool keeps a 4x4 map for inputs of
    16 pixels and more: a global pool learned MNIST slowly, and its eval-mode accuracy swung by 20
    points between early epochs. 8x8 digits (2x2 after the convolutions) pool globally, which
    trains them best."""
    w = cfg.width
    side = 4 if image_size >= 16 else 1
    return nn.Sequential(_conv_bn(channels, w), _conv_bn(w, w), nn.MaxPool2d(2),
                         _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
                         nn.AdaptiveAvgPool2d(side), nn.Flatten(), nn.Dropout(cfg.dropout),
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


@register("resnet18")
def resnet18(cfg: ModelConfig, channels: int, image_size: int, num_classes: int) -> nn.Module:
    layers = [_conv_bn(channels, 64)]
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


@register("wrn")
def wrn(cfg: ModelConfig, channels: int, image_size: int, num_classes: int) -> nn.Module:
    n = (cfg.depth - 4) // 6
    widths = [16, 16 * cfg.widen_factor, 32 * cfg.widen_factor, 64 * cfg.widen_factor]
    layers = [nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)]
    cin = widths[0]
    for i, stride in enumerate((1, 2, 2)):
        for j in range(n):
            layers.append(_WideBlock(cin, widths[i + 1], stride if j == 0 else 1, cfg.dropout))
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


@register("mobilenetv2")
def mobilenetv2(cfg: ModelConfig, channels: int, image_size: int, num_classes: int) -> nn.Module:
    # (expansion, channels, repeats, stride); the first two strides are 1 for 32x32 inputs.
    spec = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]
    layers = [_conv_bn(channels, 32)]
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


@register("densenet")
def densenet(cfg: ModelConfig, channels: int, image_size: int, num_classes: int) -> nn.Module:
    n = (cfg.depth - 4) // 6      # bottleneck layers per dense block
    g = cfg.growth_rate
    cin = 2 * g
    layers = [nn.Conv2d(channels, cin, 3, 1, 1, bias=False)]
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
