"""Initialising a network from the tag classifier: the ONE ``init_from`` (both papers start their
segmentation nets from the classification network).

:func:`init_from` copies the classifier's backbone tensors (parameters and buffers) into every RGB
backbone of ``model``, by name and shape:

* a :class:`~wsss_lib.models.deeplab.SegNet`: its backbone (and, with ``head=True`` and a matching
  classifier, the LargeFOV head; see :func:`init_largefov_head`);
* a :class:`~wsss_lib.models.two_stream.TwoStreamNet`: the appearance backbone and the stages of the
  spatio-temporal stream after the fusion point (the motion stream has no RGB counterpart).

It returns a report ``{"copied": int, "missing": [target tensors without a source],
"unused": [classifier tensors nothing received], "head": bool}`` and refuses a partial copy
(``missing`` or ``unused`` non-empty) unless ``partial=True`` is passed: a silent partial copy
is how a wrong architecture goes unnoticed. Paper 2's classifier stops at ``conv3`` (later stages are
identities), so its video nets pass ``partial=True`` and record what was left out.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import InvalidInputError


def _targets(model: nn.Module) -> list[nn.Module]:
    """The RGB backbones of ``model`` that a classifier backbone can initialise."""
    if hasattr(model, "appearance") and hasattr(model, "spatiotemporal"):
        return [model.appearance.backbone, model.spatiotemporal.backbone]
    if hasattr(model, "backbone"):
        return [model.backbone]
    raise InvalidInputError(f"{type(model).__name__} has no backbone to initialise from a classifier")


def init_from(model: nn.Module, classifier: nn.Module, *, partial: bool = False, head: bool = True) -> dict:
    """Copy ``classifier.backbone`` (or ``classifier`` itself when it is a backbone) into ``model``'s
    RGB backbone(s); see the module docstring. Returns the report; raises
    :class:`~wsss_lib.core.errors.InvalidInputError` on a partial copy unless ``partial``."""
    src = getattr(classifier, "backbone", classifier).state_dict()
    used: set[str] = set()
    missing: list[str] = []
    copied = 0
    for i, dst in enumerate(_targets(model)):
        state = dst.state_dict()
        for k, v in state.items():
            s = src.get(k)
            if s is not None and s.shape == v.shape:
                state[k] = s.clone()
                used.add(k)
                copied += 1
            else:
                missing.append(f"target{i}.{k}")
        dst.load_state_dict(state)
    unused = sorted(set(src) - used)
    if (missing or unused) and not partial:
        raise InvalidInputError(
            f"the classifier's backbone does not match {type(model).__name__}'s: {len(missing)} tensor(s) without a "
            f"source (e.g. {missing[:3]}), {len(unused)} classifier tensor(s) unused (e.g. {unused[:3]}); pass "
            "partial=True to accept a partial copy")
    seg = model.appearance if hasattr(model, "appearance") else model
    report = {"copied": copied, "missing": missing, "unused": unused,
              "head": bool(head) and init_largefov_head(seg, classifier)}
    if hasattr(seg, "head_name"):
        seg.head_initialised = report["head"]
    return report


def init_largefov_head(seg: nn.Module, classifier: nn.Module) -> bool:
    """Initialise a SegNet's LargeFOV head from a :class:`~wsss_lib.models.TagClassifier` whose hidden
    layer has this head's width (and K = num_classes - 1 outputs), as DeepLab initialises fc6/fc7 from
    VGG's classifier [ours adaptation]: fc6 = the classifier's hidden 1x1 conv in the centre tap,
    fc7 = identity, fc8 rows 1..K = the classifier's class scores, row 0 (background) = 0. At
    initialisation a pixel is then labelled with a tagged-like class where its class score is
    positive (a CAM at threshold 0) and background elsewhere. Returns whether it happened."""
    if getattr(seg, "head_name", None) != "largefov":
        return False
    fc = getattr(classifier, "fc", None)
    cls_head = getattr(classifier, "head", None)
    fc6, fc7, fc8 = seg.head[1], seg.head[4], seg.head[7]
    if (not isinstance(fc, nn.Sequential) or not isinstance(cls_head, nn.Conv2d)
            or fc[0].out_channels != fc6.out_channels or fc[0].in_channels != fc6.in_channels
            or cls_head.out_channels != seg.num_classes - 1):
        return False
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
    return True
