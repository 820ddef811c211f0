"""papers: the steps of paper 1 (paper1, segmentation) and paper 2 (paper2, video) that the
notebooks and the CLI share, on one run context and one load-or-train cache (common)."""
