"""Networks: VGG-style backbones with named stages, the tag classifier, the DeepLab-style SegNet."""

from .backbones import STAGES, Backbone, SmallVGG, VGG16Backbone, build_backbone
from .classifier import TagClassifier, global_pool
from .deeplab import SegNet

__all__ = ["STAGES", "Backbone", "SmallVGG", "VGG16Backbone", "build_backbone", "TagClassifier", "global_pool",
           "SegNet"]
