"""The SpikeReg network in lava-dl SLAYER terms (no Lava runtime imports here)."""
from .blocks import ReadoutBlock, SpikingConvBlock
from .config import ModelConfig
from .neuron import NeuronConfig
from .policy import ResidualPolicy, residual_registration
from .synapse import Conv3dSynapse
from .unet import SpikeRegUNet

__all__ = ["Conv3dSynapse", "ModelConfig", "NeuronConfig", "ReadoutBlock", "ResidualPolicy",
           "SpikeRegUNet", "SpikingConvBlock", "residual_registration"]
