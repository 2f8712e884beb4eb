"""A fitted model -> files: the run folder, the checkpoint format, assignment tables."""
