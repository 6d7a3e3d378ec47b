"""Writing and describing datasets: deterministic tar shards, manifest, stats, card, task expansion."""
