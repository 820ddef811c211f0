"""ops: functions on tensors/arrays, shapes in docstrings: fg/bg masks, heatmaps, dense CRF
(pydensecrf and torch), optical flow, losses, check-mask. No training, no dataset files."""
