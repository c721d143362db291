"""The engines: the training loop with its run folder, logs and checkpoints, and the inference engine."""
