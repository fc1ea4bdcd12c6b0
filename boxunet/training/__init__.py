"""Training: data pipeline, losses, the training loop, checkpoints, distributed training, trainers."""
