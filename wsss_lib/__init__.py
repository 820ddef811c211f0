"""wsss_lib: weakly-supervised semantic segmentation from image tags.

A tested, importable reproduction of two papers by Saleh, Aliakbarian, Salzmann, Petersson,
(Gould,) Alvarez:

* ECCV'16 "Built-in Foreground/Background Prior": fg/bg masks fused from a tag classifier's
  higher conv layers (:mod:`wsss_lib.ops.masks`), smoothed with a dense CRF (:mod:`wsss_lib.ops.crf`),
  used in a weakly-supervised segmentation loss (:mod:`wsss_lib.ops.losses`).
* ICCV'17 "Bringing Background into the Foreground": per-class classifier heatmaps for many
  background classes (:mod:`wsss_lib.ops.heatmaps`), optical flow (:mod:`wsss_lib.ops.flow`) and a
  two-stream network (:mod:`wsss_lib.models.two_stream`).

Modules import torch lazily where they can, so ``import wsss_lib`` stays cheap.
"""

__version__ = "0.1.0"

from .core.errors import WsssError  # noqa: F401
