"""Two-stream (appearance + motion) segmentation network of paper 2.

[summary] One stream takes the RGB frame, the other the optical flow; an **early trainable
fusion** of the two makes a spatio-temporal stream, and a **late fusion** merges it with the
appearance stream. Our reconstruction [ours], each choice a constructor parameter::

    RGB  --conv1..F (appearance backbone)--+--conv(F+1)..conv5 + head --> S_app ----------+
                                           |                                               (+) --> logits
    flow --conv1..F (motion backbone) ---[concat + conv]--conv(F+1)..conv5 + head --> S_st -+

* ``fuse_stage`` F (default ``"conv3"``): where the two streams are concatenated; a trainable
  ``fusion_kernel`` x ``fusion_kernel`` conv (+ BN + ReLU) maps the concatenation back to the
  appearance channel count ("early trainable fusion").
* ``late_fusion``: ``"sum"`` of the two streams' score maps (default), ``"mean"``, or ``"none"``
  (the spatio-temporal stream alone).
* The spatio-temporal stream's later stages and head are a copy of the appearance stream's
  (both can be initialised from the tag classifier); the fusion conv starts as the identity on
  the appearance channels plus small random weights on the motion channels, so at step 0 the
  spatio-temporal stream sees appearance and learns how much motion to use.

``forward(image (B, 3, H, W), flow (B, 3, H, W))`` -> logits ``(B, C, H/8, W/8)``; with
``return_parts=True`` a dict ``{"logits", "appearance", "spatiotemporal"}``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..core.errors import InvalidInputError
from .backbones import Backbone
from .deeplab import SegNet
from .init import init_from

LATE_FUSIONS = ("sum", "mean", "none")


def run_stages(backbone: Backbone, x: torch.Tensor, start: str | None = None, stop: str | None = None,
               normalize: bool = False) -> torch.Tensor:
    """Run ``backbone``'s stages from ``start`` (inclusive; None = first) to ``stop`` (inclusive;
    None = last) on ``x``; ``normalize`` applies the backbone's input normalisation first."""
    names = list(backbone.stages.keys())
    i = names.index(start) if start is not None else 0
    j = names.index(stop) if stop is not None else len(names) - 1
    if normalize:
        x = backbone.normalize(x)
    for n in names[i:j + 1]:
        x = backbone.stages[n](x)
    return x


class TwoStreamNet(nn.Module):
    """Appearance stream + spatio-temporal stream (early fusion of RGB and flow) with late fusion.

    Parameters
    ----------
    appearance: a :class:`SegNet` (RGB backbone + head): the appearance stream.
    motion: a :class:`Backbone` with ``in_channels=3`` for the encoded flow image (its
        ``input_norm`` should not be "imagenet"); only its stages up to ``fuse_stage`` are used
        (the rest are dropped).
    fuse_stage: stage after which the streams are fused (any of the appearance backbone's stages
        but the last).
    late_fusion: "sum" | "mean" | "none".
    fusion_kernel: 1 or 3.
    """

    uses_flow = True

    def __init__(self, appearance: SegNet, motion: Backbone, fuse_stage: str = "conv3", late_fusion: str = "sum",
                 fusion_kernel: int = 1):
        super().__init__()
        app_bb = appearance.backbone
        names = list(app_bb.stages.keys())
        if fuse_stage not in names[:-1] or fuse_stage not in motion.stages:
            raise InvalidInputError(f"fuse_stage must be one of {names[:-1]} (and a stage of the motion backbone), "
                                    f"got {fuse_stage!r}")
        if late_fusion not in LATE_FUSIONS:
            raise InvalidInputError(f"late_fusion must be one of {LATE_FUSIONS}, got {late_fusion!r}")
        if fusion_kernel not in (1, 3):
            raise InvalidInputError(f"fusion_kernel must be 1 or 3, got {fusion_kernel}")
        if motion.in_channels != 3:
            raise InvalidInputError(f"the motion backbone must take the 3-channel flow image, has in_channels={motion.in_channels}")
        if app_bb.strides[fuse_stage] != motion.strides[fuse_stage]:
            raise InvalidInputError(f"appearance and motion strides differ at {fuse_stage}: "
                                    f"{app_bb.strides[fuse_stage]} vs {motion.strides[fuse_stage]}")
        self.appearance = appearance
        self.fuse_stage = fuse_stage
        self.late_fusion = late_fusion
        self.num_classes = appearance.num_classes
        # motion stream: keep only the stages up to the fusion point
        mnames = list(motion.stages.keys())
        for n in mnames[mnames.index(fuse_stage) + 1:]:
            del motion.stages[n]
        self.motion = motion
        ca, cm = app_bb.channels[fuse_stage], motion.channels[fuse_stage]
        pad = fusion_kernel // 2
        self.fusion = nn.Sequential(nn.Conv2d(ca + cm, ca, fusion_kernel, padding=pad, bias=False), nn.BatchNorm2d(ca),
                                    nn.ReLU(inplace=True))
        with torch.no_grad():
            w = self.fusion[0].weight
            nn.init.normal_(w, std=0.01)
            for c in range(ca):
                w[c, c, pad, pad] += 1.0
        # spatio-temporal stream: later stages + head, a copy of the appearance stream's
        self.spatiotemporal = copy.deepcopy(appearance)
        st_bb = self.spatiotemporal.backbone
        for n in names[: names.index(fuse_stage) + 1]:
            st_bb.stages[n] = nn.Identity()
        self.arch = {"fuse_stage": fuse_stage, "late_fusion": late_fusion, "fusion_kernel": fusion_kernel}

    @property
    def output_stride(self) -> int:
        return self.appearance.output_stride

    def forward(self, image: torch.Tensor, flow: torch.Tensor, return_parts: bool = False):
        """``image`` float ``(B, 3, H, W)`` in [0, 1], ``flow`` float ``(B, 3, H, W)`` in [0, 1]
        (:func:`wsss_lib.ops.flow.encode_flow`) -> logits ``(B, C, H/s, W/s)``."""
        if not torch.is_tensor(flow) or flow.ndim != 4 or flow.shape[1] != 3:
            raise InvalidInputError(f"flow must be a (B, 3, H, W) flow image, got "
                                    f"{tuple(flow.shape) if torch.is_tensor(flow) else type(flow).__name__}")
        if not torch.is_tensor(image) or image.ndim != 4 or image.shape[0] != flow.shape[0] \
                or image.shape[-2:] != flow.shape[-2:]:
            raise InvalidInputError(f"image {tuple(image.shape) if torch.is_tensor(image) else image!r} and flow "
                                    f"{tuple(flow.shape)} must share batch size and spatial size")
        app_bb = self.appearance.backbone
        feat, stages = app_bb(image, (self.fuse_stage,))
        s_app = self.appearance.head(feat)
        self.motion.check_input(flow, ())
        m = run_stages(self.motion, flow, stop=self.fuse_stage, normalize=True)
        a = stages[self.fuse_stage]
        if m.shape[-2:] != a.shape[-2:]:
            m = nn.functional.interpolate(m, size=a.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fusion(torch.cat([a, m], dim=1))
        names = list(app_bb.stages.keys())
        x = run_stages(self.spatiotemporal.backbone, x, start=names[names.index(self.fuse_stage) + 1])
        s_st = self.spatiotemporal.head(x)
        if self.late_fusion == "sum":
            logits = s_app + s_st
        elif self.late_fusion == "mean":
            logits = 0.5 * (s_app + s_st)
        else:
            logits = s_st
        if return_parts:
            return {"logits": logits, "appearance": s_app, "spatiotemporal": s_st}
        return logits

    def init_from_classifier(self, classifier: nn.Module) -> "TwoStreamNet":
        """Copy a tag classifier's backbone into both streams' RGB/later stages (and the appearance
        head where it matches): :func:`~wsss_lib.models.init.init_from`; returns self."""
        init_from(self, classifier)
        return self
