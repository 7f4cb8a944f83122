"""Training: surrogate-gradient trainer for the SpikeReg network."""
from .trainer import SpikeRegTrainer, random_patches, rate_penalty

__all__ = ["SpikeRegTrainer", "random_patches", "rate_penalty"]
