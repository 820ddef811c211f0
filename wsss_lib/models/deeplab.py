"""DeepLab-LargeFOV-style segmentation network on a :class:`Backbone` (output stride 8).

Head [DeepLab-LargeFOV, as used by paper 1 [ours: reconstruction]]: a 3x3 max-pool stride 1
("pool5"), a dilated 3x3 conv ("fc6", dilation 12 for VGG-16 at 321 px), ReLU, dropout, a 1x1 conv
("fc7"), ReLU, dropout, and a 1x1 classifier ("fc8") -> logits ``(B, num_classes, H/8, W/8)``.
For the 96 px toy images the dilation and widths are scaled down (``dilation``, ``width``; the
``seg`` preset sets them). :meth:`SegNet.init_from_classifier` copies a trained tag classifier's
backbone (the papers initialise from the classification network).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..core.errors import InvalidInputError
from .backbones import Backbone
from .init import init_from

HEADS = ("largefov", "linear")


class SegNet(nn.Module):
    """Backbone + DeepLab-LargeFOV head.

    Parameters
    ----------
    backbone: a :class:`Backbone` (stride 8 for the DeepLab layout).
    num_classes: output classes incl. background (K + 1 for paper 1).
    head: "largefov" (pool5, fc6 dilated 3x3, fc7 1x1, fc8 1x1) or "linear" (a single 1x1 conv).
    width: channels of fc6/fc7 (1024 in DeepLab-LargeFOV).
    dilation: fc6 dilation (12 in DeepLab-LargeFOV at 321 px).
    dropout: dropout after fc6 and fc7 (0.5 in DeepLab).
    """

    def __init__(self, backbone: Backbone, num_classes: int, head: str = "largefov", width: int = 1024,
                 dilation: int = 12, dropout: float = 0.5):
        super().__init__()
        if head not in HEADS:
            raise InvalidInputError(f"head must be one of {HEADS}, got {head!r}")
        if int(num_classes) < 2:
            raise InvalidInputError(f"a segmentation net needs >= 2 classes, got {num_classes}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.head_name = head
        cin = backbone.out_channels
        if head == "largefov":
            self.head = nn.Sequential(
                nn.MaxPool2d(3, 1, padding=1),
                nn.Conv2d(cin, width, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True),
                nn.Dropout2d(dropout),
                nn.Conv2d(width, width, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
                nn.Conv2d(width, self.num_classes, 1),
            )
        else:
            self.head = nn.Sequential(nn.Conv2d(cin, self.num_classes, 1))
        for m in self.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        last = self.head[-1]
        nn.init.normal_(last.weight, std=0.01)
        nn.init.zeros_(last.bias)

    @property
    def output_stride(self) -> int:
        return self.backbone.strides[self.backbone.stage_names[-1]]

    def forward(self, x: torch.Tensor, return_stages: Sequence[str] = ()) -> torch.Tensor:
        """``x`` float ``(B, 3, H, W)`` in [0, 1] -> logits ``(B, num_classes, H/8, W/8)``.

        With ``return_stages`` non-empty, returns ``(logits, {stage: activation})`` instead.
        """
        feat, stages = self.backbone(x, return_stages)
        logits = self.head(feat)
        return (logits, stages) if return_stages else logits

    def head_parameters(self):
        return self.head.parameters()

    def backbone_parameters(self):
        return self.backbone.parameters()

    def init_from_classifier(self, classifier: nn.Module, head: bool = True) -> "SegNet":
        """Copy ``classifier.backbone``'s weights (same architecture required) and, with ``head``, the
        LargeFOV head where the classifier matches: :func:`~wsss_lib.models.init.init_from`
        (``self.head_initialised`` records whether the head was initialised); returns self."""
        init_from(self, classifier, head=head)
        return self
