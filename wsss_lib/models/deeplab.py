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
        """Copy ``classifier.backbone``'s weights (same architecture required); returns self.

        With ``head=True`` and a :class:`~wsss_lib.models.TagClassifier` whose hidden layer has this
        head's ``width`` (and K = num_classes - 1 outputs), the LargeFOV head is initialised from
        the classifier's head too (as DeepLab initialises fc6/fc7 from VGG's classifier [ours
        adaptation]): fc6 = the classifier's hidden 1x1 conv in the centre tap, fc7 = identity,
        fc8 rows 1..K = the classifier's class scores, row 0 (background) = 0. At initialisation a
        pixel is then labelled with a tagged-like class where its class score is positive (a CAM
        at threshold 0) and background elsewhere. ``self.head_initialised`` records whether it
        happened.
        """
        src = getattr(classifier, "backbone", classifier)
        try:
            self.backbone.load_state_dict(src.state_dict())
        except RuntimeError as exc:
            raise InvalidInputError(f"classifier backbone does not match this SegNet's backbone: {exc}") from exc
        self.head_initialised = False
        if not head or self.head_name != "largefov":
            return self
        fc = getattr(classifier, "fc", None)
        cls_head = getattr(classifier, "head", None)
        fc6, fc7, fc8 = self.head[1], self.head[4], self.head[7]
        if (not isinstance(fc, nn.Sequential) or not isinstance(cls_head, nn.Conv2d)
                or fc[0].out_channels != fc6.out_channels or fc[0].in_channels != fc6.in_channels
                or cls_head.out_channels != self.num_classes - 1):
            return self
        w = fc6.out_channels
        with torch.no_grad():
            fc6.weight.zero_()
            fc6.weight[:, :, 1, 1] = fc[0].weight[:, :, 0, 0]
            fc6.bias.copy_(fc[0].bias)
            fc7.weight.copy_(torch.eye(w, dtype=fc7.weight.dtype)[:, :, None, None])
            fc7.bias.zero_()
            fc8.weight.zero_()
            fc8.bias.zero_()
            fc8.weight[1:] = cls_head.weight
            fc8.bias[1:] = cls_head.bias
        self.head_initialised = True
        return self
