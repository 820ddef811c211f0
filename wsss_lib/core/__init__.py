"""core: errors, config (the one place for defaults), runtime (device, seeds, precision, the one
inference loop), parallel (the one process pool), io (images, labels, atomic files, palettes),
checkpoint, metrics, results. Imports nothing above it."""
