"""Training: the loop with its curriculum and checkpoints (`trainer`), run folders (`runs`), atomic checkpoint files
(`checkpoint`) and data-parallel processes (`distributed`)."""
