"""Training: surrogate-gradient trainer for the SpikeReg network (one process or data-parallel)."""
from .trainer import SpikeRegTrainer, cosine_lr, default_out_dir, random_patches, rate_penalty

__all__ = ["SpikeRegTrainer", "cosine_lr", "default_out_dir", "random_patches", "rate_penalty"]
