"""Fully-convolutional multi-label tag classifier (paper 1's fine-tuning stage).

``TagClassifier(backbone, K)``: a 1x1 convolution on the backbone's last stage gives class score
maps ``(B, K, h, w)``; a global pooling turns them into image logits ``(B, K)``. Trained with a
multi-label (sigmoid / BCE) loss on image tags only. The score maps are what CAM thresholds
(the baseline), the stage activations are what the fg/bg prior fuses — both come from the same
single forward pass (``forward(x, return_stages=("conv4", "conv5"))``).

Pooling [ours]: ``"mean"`` (global average pooling: the score maps are exactly CAM), ``"max"``
(MIL-style) or ``"lse"`` (log-sum-exp with sharpness ``r``, between the two).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..core.errors import InvalidInputError
from .backbones import Backbone, build_backbone

POOLINGS = ("mean", "max", "lse")


def global_pool(maps: torch.Tensor, pooling: str = "mean", r: float = 5.0) -> torch.Tensor:
    """``(B, K, h, w)`` -> ``(B, K)`` by spatial mean, max, or log-sum-exp
    ``(1/r) log mean exp(r x)`` (-> mean as r -> 0, -> max as r -> inf)."""
    if maps.ndim != 4:
        raise InvalidInputError(f"global_pool expects (B, K, h, w), got {tuple(maps.shape)}")
    flat = maps.flatten(2)
    if pooling == "mean":
        return flat.mean(-1)
    if pooling == "max":
        return flat.amax(-1)
    if pooling == "lse":
        return (torch.logsumexp(r * flat, dim=-1) - math.log(flat.shape[-1])) / r
    raise InvalidInputError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class TagClassifier(nn.Module):
    """Backbone + 1x1 conv class-score head + global pooling.

    Parameters
    ----------
    backbone: a :class:`~wsss_lib.models.backbones.Backbone`.
    num_classes: K tags (paper 1: the foreground classes; the background is always present).
    pooling: "mean" | "max" | "lse" (see :func:`global_pool`); ``lse_r`` its sharpness.
    dropout: dropout on the last stage before the head (0 = none).
    hidden: 0 -> the class maps are a 1x1 conv of the last stage (CAM's layout); > 0 -> a hidden
        1x1 conv + ReLU of this width first (VGG's fc6/fc7 made convolutional [ours]), which keeps
        conv5 a generic feature layer rather than the classifier's input.
    """

    def __init__(self, backbone: Backbone, num_classes: int, pooling: str = "mean", lse_r: float = 5.0,
                 dropout: float = 0.0, hidden: int = 0):
        super().__init__()
        if pooling not in POOLINGS:
            raise InvalidInputError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if int(num_classes) < 1:
            raise InvalidInputError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.pooling = pooling
        self.lse_r = float(lse_r)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.hidden = int(hidden)
        if self.hidden > 0:
            self.fc = nn.Sequential(nn.Conv2d(backbone.out_channels, self.hidden, 1), nn.ReLU(inplace=True))
            nn.init.kaiming_normal_(self.fc[0].weight, nonlinearity="relu")
            nn.init.zeros_(self.fc[0].bias)
        else:
            self.fc = nn.Identity()
        self.head = nn.Conv2d(self.hidden or backbone.out_channels, self.num_classes, 1)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, return_stages: Sequence[str] = ()) -> dict[str, torch.Tensor | dict]:
        """``x`` float ``(B, 3, H, W)`` in [0, 1] -> ``{"logits": (B, K), "score_maps": (B, K, h, w),
        "stages": {name: (B, C, h_s, w_s)}}`` (one pass)."""
        feat, stages = self.backbone(x, return_stages)
        score_maps = self.head(self.fc(self.dropout(feat)))
        logits = global_pool(score_maps, self.pooling, self.lse_r)
        return {"logits": logits, "score_maps": score_maps, "stages": stages}


def build_heatmap_classifier(num_classes: int, backbone: str = "small_vgg", last_stage: str = "conv5",
                             pooling: str = "lse", lse_r: float = 5.0, dropout: float = 0.0, hidden: int = 0,
                             **backbone_kw) -> torch.nn.Module:
    """A multi-label :class:`~wsss_lib.models.TagClassifier` over all classes whose score maps
    come from stage ``last_stage`` [ours].

    Stages after ``last_stage`` are replaced by identities, which bounds the receptive field of a
    score-map cell (SmallVGG ``depths=(1, 1, 2, 1, 1)``: ~26 px at ``"conv3"`` vs the whole 96x128
    frame at ``"conv5"``): a cell must then recognise its class from a local patch, so the maps
    localise background "stuff" instead of firing on the whole image from context.
    ``backbone_kw`` go to :func:`~wsss_lib.models.build_backbone` (``widths``, ``depths``...).
    """
    bb = build_backbone(backbone, **backbone_kw)
    names = list(bb.stages.keys())
    if last_stage not in names:
        raise InvalidInputError(f"last_stage must be one of {names}, got {last_stage!r}")
    for n in names[names.index(last_stage) + 1:]:
        bb.stages[n] = nn.Identity()
        bb.channels[n] = bb.channels[last_stage]
        bb.strides[n] = bb.strides[last_stage]
    return TagClassifier(bb, num_classes, pooling=pooling, lse_r=lse_r, dropout=dropout, hidden=hidden)
