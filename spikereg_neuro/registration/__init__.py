"""Registration building blocks: spatial transforms, metrics and losses."""
from .transform import (
    compose,
    identity_grid,
    integrate_velocity,
    resize_field,
    warp,
    warp_labels,
)
from .metrics import (
    dice_mean,
    dice_per_label,
    folding_percent,
    hd95,
    hd95_mean,
    jacobian_determinant,
    sdlogj_learn2reg,
    std_log_jacobian,
)
from .losses import (
    MSE,
    BendingEnergy,
    DiceLoss,
    GradientSmoothness,
    LocalNCC,
    one_hot,
)

__all__ = [
    # transform
    "identity_grid",
    "warp",
    "warp_labels",
    "compose",
    "integrate_velocity",
    "resize_field",
    # metrics
    "dice_per_label",
    "dice_mean",
    "hd95",
    "hd95_mean",
    "jacobian_determinant",
    "folding_percent",
    "std_log_jacobian",
    "sdlogj_learn2reg",
    # losses
    "LocalNCC",
    "MSE",
    "GradientSmoothness",
    "BendingEnergy",
    "DiceLoss",
    "one_hot",
]
