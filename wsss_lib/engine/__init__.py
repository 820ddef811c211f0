"""engine: the training loop (fit), inference and evaluation (predict), data-parallel runs
(distributed) and sharded dataset jobs (shard)."""
