"""VGG-style backbones with named stages ``conv1`` .. ``conv5``.

Both papers read activations of intermediate conv blocks, so every backbone here is a
:class:`Backbone`: an ``nn.ModuleDict`` of five stages run in order, each stage = (pooling of the
previous block, where there is one) + that block's convolutions + ReLUs. ``forward(x,
return_stages=("conv4", "conv5"))`` returns the last stage's output *and* the asked activations
from the same single pass, so mask extraction costs one forward.

Stage ``convN`` ends after VGG's ``convN_x`` ReLU, i.e. before ``poolN``. Output strides (pixels of
input per feature cell): conv1 1, conv2 2, conv3 4, conv4 8, conv5 8 (DeepLab style, our default):
``pool4`` becomes a 3x3 stride-1 max-pool and the conv5 convolutions use dilation 2, so the last
stage keeps a 8x finer grid than plain VGG (stride 16). ``output_stride=16`` gives the plain VGG
layout (``pool4`` stride 2, no dilation). ``pool5`` is never part of the backbone (heads add their
own).

* :class:`SmallVGG` — a CPU-sized VGG-style net with batch norm, trained from scratch (toy data;
  no ImageNet weights are downloadable in this project's environment) [ours].
* :class:`VGG16Backbone` — torchvision's VGG-16 (the papers' backbone [summary]), optionally with
  ImageNet weights.

Inputs are float ``(B, in_channels, H, W)`` in [0, 1]; normalisation happens inside
(``input_norm="imagenet"`` for RGB, ``"none"``/``"unit"``/``(mean, std)`` e.g. for a 3-channel
optical-flow image, which must not be ImageNet-normalised).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from ..core.errors import InvalidInputError, WsssError

STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _norm_stats(input_norm, in_channels: int) -> tuple[list[float], list[float]]:
    """Mean/std per channel for ``input_norm`` ("imagenet" | "unit" | "none" | (mean, std))."""
    if input_norm in (None, "none"):
        return [0.0] * in_channels, [1.0] * in_channels
    if input_norm == "unit":  # [0, 1] -> [-1, 1]
        return [0.5] * in_channels, [0.5] * in_channels
    if input_norm == "imagenet":
        if in_channels != 3:
            raise InvalidInputError(f"input_norm='imagenet' needs in_channels=3, got {in_channels}; "
                                    "use 'none', 'unit' or (mean, std)")
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    try:
        mean, std = input_norm
        mean, std = [float(m) for m in mean], [float(s) for s in std]
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"input_norm must be 'imagenet', 'unit', 'none' or (mean, std); "
                                f"got {input_norm!r}") from exc
    if len(mean) != in_channels or len(std) != in_channels or min(std) <= 0:
        raise InvalidInputError(f"input_norm (mean, std) must have {in_channels} entries each and std > 0")
    return mean, std


class Backbone(nn.Module):
    """A sequence of named stages with known channels and strides.

    Attributes: ``stages`` (``nn.ModuleDict`` conv1..conv5, run in order), ``channels``
    (``{stage: C}``), ``strides`` (``{stage: s}``), ``in_channels``, ``out_channels`` (last stage).
    """

    def __init__(self, stages: "OrderedDict[str, nn.Module]", channels: dict[str, int], strides: dict[str, int],
                 in_channels: int = 3, input_norm="imagenet"):
        super().__init__()
        if list(stages) != list(channels) or list(stages) != list(strides):
            raise InvalidInputError("stages, channels and strides must name the same stages in the same order")
        self.stages = nn.ModuleDict(stages)
        self.channels = dict(channels)
        self.strides = dict(strides)
        self.in_channels = int(in_channels)
        self.input_norm = input_norm if isinstance(input_norm, str) or input_norm is None else "custom"
        mean, std = _norm_stats(input_norm, self.in_channels)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(self.stages.keys())

    @property
    def out_channels(self) -> int:
        return self.channels[self.stage_names[-1]]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` in [0, 1] -> normalised network input."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def check_input(self, x: torch.Tensor, return_stages: Iterable[str]) -> tuple[str, ...]:
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise InvalidInputError(f"backbone expects a (B, {self.in_channels}, H, W) tensor, got {shape}")
        if not x.is_floating_point():
            raise InvalidInputError(f"backbone expects float input in [0, 1], got dtype {x.dtype}")
        want = tuple(return_stages)
        bad = [s for s in want if s not in self.stages]
        if bad:
            raise InvalidInputError(f"unknown stage(s) {bad}; this backbone has {list(self.stages)}")
        return want

    def forward(self, x: torch.Tensor,
                return_stages: Sequence[str] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One pass: ``x`` float ``(B, in_channels, H, W)`` in [0, 1] -> (last stage output
        ``(B, out_channels, H/s, W/s)``, ``{stage: activation}`` for the asked stages)."""
        want = self.check_input(x, return_stages)
        x = self.normalize(x)
        feats: dict[str, torch.Tensor] = {}
        for name, stage in self.stages.items():
            x = stage(x)
            if name in want:
                feats[name] = x
        return x, feats


def _conv_block(cin: int, cout: int, n: int, dilation: int = 1, batch_norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=dilation, dilation=dilation,
                                bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return layers


def _stage_pools(output_stride: int) -> tuple[list, list]:
    """Pool before each stage (None = no pool, "s1" = 3x3 stride-1 pool) and each stage's dilation,
    for output stride 4, 8 or 16 (the stages after the last stride-2 pool are dilated, DeepLab-style)."""
    if output_stride == 4:
        return [None, "s2", "s2", "s1", "s1"], [1, 1, 1, 2, 4]
    if output_stride == 8:
        return [None, "s2", "s2", "s2", "s1"], [1, 1, 1, 1, 2]
    if output_stride == 16:
        return [None, "s2", "s2", "s2", "s2"], [1, 1, 1, 1, 1]
    raise InvalidInputError(f"output_stride must be 4, 8 or 16, got {output_stride}")


def _pool(kind: str | None) -> list[nn.Module]:
    if kind is None:
        return []
    if kind == "s2":
        return [nn.MaxPool2d(2, 2, ceil_mode=True)]
    return [nn.MaxPool2d(3, 1, padding=1)]


class SmallVGG(Backbone):
    """CPU-sized VGG-style backbone trained from scratch [ours].

    Parameters
    ----------
    widths: channels of conv1..conv5 (VGG-16: 64, 128, 256, 512, 512).
    depths: 3x3 convs per stage (VGG-16: 2, 2, 3, 3, 3).
    in_channels: 3 for RGB, 3 for an encoded flow image, etc.
    input_norm: "imagenet" (RGB), "unit", "none" or (mean, std).
    output_stride: 8 (DeepLab layout, default), 16 (plain VGG) or 4 (finer maps for small images
        and small objects [ours]: conv4 and conv5 keep stride 4, dilated 2 and 4).
    batch_norm: BN after every conv (makes from-scratch training fast and stable).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128, 128), depths: Sequence[int] = (1, 1, 2, 2, 2),
                 in_channels: int = 3, input_norm="imagenet", output_stride: int = 8, batch_norm: bool = True):
        widths, depths = [int(w) for w in widths], [int(d) for d in depths]
        if len(widths) != 5 or len(depths) != 5 or min(widths) < 1 or min(depths) < 1:
            raise InvalidInputError(f"widths and depths need 5 positive entries (conv1..conv5); got {widths}, {depths}")
        pools, dils = _stage_pools(output_stride)
        stages, channels, strides = OrderedDict(), OrderedDict(), OrderedDict()
        cin, stride = in_channels, 1
        for i, name in enumerate(STAGES):
            if pools[i] == "s2":
                stride *= 2
            dil = dils[i]
            stages[name] = nn.Sequential(*_pool(pools[i]), *_conv_block(cin, widths[i], depths[i], dil, batch_norm))
            channels[name], strides[name] = widths[i], stride
            cin = widths[i]
        super().__init__(stages, channels, strides, in_channels=in_channels, input_norm=input_norm)
        self.arch = {"name": "small_vgg", "widths": widths, "depths": depths, "in_channels": in_channels,
                     "output_stride": output_stride, "batch_norm": batch_norm}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


# torchvision vgg16().features indices of each block's convs (conv, relu pairs) and pools
_VGG16_CONVS = {"conv1": (0, 2), "conv2": (5, 7), "conv3": (10, 12, 14), "conv4": (17, 19, 21), "conv5": (24, 26, 28)}


def _load_vgg16_state(pretrained) -> dict | None:
    """ImageNet VGG-16 state dict from a local file, the TORCH_HOME cache or a torchvision download."""
    if pretrained in (None, False):
        return None
    if isinstance(pretrained, (str, os.PathLike)) and str(pretrained) not in ("imagenet", "true", "True"):
        p = Path(pretrained).expanduser()
        if not p.is_file():
            raise WsssError(f"VGG-16 weights file not found: {p}")
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any decoding error is a user-facing file problem
            raise WsssError(f"cannot read VGG-16 weights {p}: {exc}") from exc
        return state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    from torchvision.models import VGG16_Weights  # lazy: torchvision only for the VGG-16 / RAFT paths

    try:
        return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # noqa: BLE001 - network / cache failures
        raise WsssError(
            "ImageNet VGG-16 weights are not available offline. Either download "
            f"{VGG16_Weights.IMAGENET1K_V1.url} on a connected machine and pass its path "
            "(pretrained='/path/vgg16-397923af.pth' or --pretrained PATH), put it in "
            "$TORCH_HOME/hub/checkpoints/, or use pretrained=None (random init) / the small_vgg backbone. "
            f"(cause: {type(exc).__name__}: {exc})"
        ) from exc


class VGG16Backbone(Backbone):
    """torchvision VGG-16 conv layers as stages conv1..conv5 (the papers' backbone [summary]).

    ``pretrained``: ``True``/``"imagenet"`` -> ImageNet weights (torchvision download or the
    TORCH_HOME cache; offline without them -> one :class:`WsssError` saying how to provide them);
    a path -> a local ``.pth`` state dict of ``torchvision.models.vgg16``; ``None``/``False`` ->
    random init (no download). ``output_stride=8`` (default) = DeepLab layout: pool4 3x3 stride 1
    and dilated conv5 (4: pool3 and pool4 stride 1, conv4/conv5 dilated 2/4; 16: plain VGG).
    """

    def __init__(self, pretrained: str | bool | None = None, output_stride: int = 8, in_channels: int = 3,
                 input_norm="imagenet"):
        from torchvision.models import vgg16  # lazy: torchvision only for the VGG-16 / RAFT paths

        state = _load_vgg16_state(pretrained)
        net = vgg16(weights=None)
        if state is not None:
            feat_state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
            if not feat_state:
                raise WsssError("VGG-16 weights file has no 'features.*' entries; "
                                "expected a torchvision vgg16 state dict")
            net.features.load_state_dict(feat_state)
        feats = net.features
        if in_channels != 3:
            old = feats[0]
            feats[0] = nn.Conv2d(in_channels, old.out_channels, 3, padding=1)
        pools, dils = _stage_pools(output_stride)
        stages, channels, strides = OrderedDict(), OrderedDict(), OrderedDict()
        stride = 1
        for i, name in enumerate(STAGES):
            if pools[i] == "s2":
                stride *= 2
            mods = _pool(pools[i])
            for j in _VGG16_CONVS[name]:
                conv = feats[j]
                if dils[i] > 1:
                    conv.dilation, conv.padding = (dils[i], dils[i]), (dils[i], dils[i])
                mods += [conv, nn.ReLU(inplace=True)]
            stages[name] = nn.Sequential(*mods)
            channels[name], strides[name] = feats[_VGG16_CONVS[name][-1]].out_channels, stride
        super().__init__(stages, channels, strides, in_channels=in_channels, input_norm=input_norm)
        self.arch = {"name": "vgg16", "output_stride": output_stride, "in_channels": in_channels,
                     "pretrained": bool(state is not None)}


def build_backbone(name: str = "small_vgg", **kw) -> Backbone:
    """``"small_vgg"`` -> :class:`SmallVGG` (``widths``, ``depths``, ...); ``"vgg16"`` ->
    :class:`VGG16Backbone` (``pretrained``, ...). Unknown names/keywords raise InvalidInputError."""
    builders = {"small_vgg": SmallVGG, "vgg16": VGG16Backbone}
    if name not in builders:
        raise InvalidInputError(f"unknown backbone {name!r}; known: {sorted(builders)}")
    try:
        return builders[name](**kw)
    except TypeError as exc:
        raise InvalidInputError(f"bad arguments for backbone {name!r}: {exc}") from exc
