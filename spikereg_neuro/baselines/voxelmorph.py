"""VoxelMorph baseline: ``voxelmorph.nn.models.VxmPairwise`` (voxelmorph 0.3.4, PyTorch).

The network is VoxelMorph's own (``BasicUNet`` backbone + flow layer + scaling-and-squaring
integration of a stationary velocity field); this module only configures it, trains it the way
SpikeReg is trained and adapts its output to the project's conventions.

Architecture (:class:`VoxelMorphConfig`)
    ``nb_features = (8, 16, 32, 32)``: the same channel widths as SpikeReg's encoder
    (``model.enc_channels``), one 3^3 conv + ReLU per level, 4 max-pool levels, trilinear
    upsampling with skip connections. 166,777 parameters (SpikeReg's default network: ~127k;
    VoxelMorph 0.3.4's default ``(16,)*5``: 105k, but it pools 5 times, i.e. down to 1^3 on a
    32^3 training patch, and needs volumes padded to a multiple of 32). Volumes must be a
    multiple of ``2 ** len(nb_features)`` = 16 per axis; :meth:`VoxelMorphRegistrar.register`
    zero-pads and crops back. ``integration_steps = 7`` (VoxelMorph's diffeomorphic default
    in the paper; 0 gives a plain displacement network).

Field convention (verified in ``tests/test_baselines.py``)
    ``VxmPairwise(source, target)`` returns a displacement ``(N, 3, D, H, W)`` in voxels,
    channel ``k`` along array axis ``k``, pull warping (``warped = source(x + u(x))`` via
    ``grid_sample(..., align_corners=True)``), i.e. exactly the project's convention; only the
    out-of-volume padding differs (VoxelMorph pads with zeros, the project with the border
    value). So ``source = moving``, ``target = fixed`` and the field is used as is.

Training (:func:`train_voxelmorph`)
    Same data, patch sampling, loss, optimiser and budget as the SpikeReg trainer
    (:mod:`spikereg_neuro.train.trainer`): the config's embedded training pairs (one random
    ordered pair per step, ``random_patches`` draws ``batch_size`` aligned ``patch_size^3``
    crops of it), loss ``LocalNCC(ncc_window)(fixed, warp(moving, u)) + w_smooth *
    GradientSmoothness('l2')(u) (+ w_dice * Dice on warped one-hot labels)`` on the
    displacement ``u``, AdamW(lr, weight_decay), gradient-norm clip ``grad_clip``, the SpikeReg
    trainer's learning-rate schedule (:mod:`spikereg_neuro.train.schedule`: ``train.lr_schedule``,
    cosine from ``lr`` to 0 over ``epochs x steps_per_epoch`` steps by default), a fresh pass
    over the shuffled pairs every ``steps_per_epoch`` steps, validation Dice on whole validation
    volumes after each epoch, best-validation checkpoint kept. SpikeReg-only terms (firing-rate
    penalty, residual coarse-to-fine iterations) have no VoxelMorph counterpart. With the config's ``augment``
    section enabled, every pair is augmented (:func:`spikereg_neuro.data.augment.augment_pair`)
    from a generator seeded as the SpikeReg trainer's, so both see the same augmented pairs and
    patches. ``init`` starts from a VoxelMorph checkpoint's weights (fine-tuning, like
    ``spikereg-neuro train --init``); ``resume`` continues a run from its ``last.pt`` to the same
    schedule end, bitwise like the uninterrupted run (like ``spikereg-neuro train --resume``).
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..io.atomic import atomic_write, atomic_write_text
from .base import check_field, check_pair_arrays

__all__ = [
    "VoxelMorphConfig",
    "DEFAULT_VOXELMORPH_MODEL",
    "CHECKPOINT_FORMAT",
    "voxelmorph_available",
    "build_voxelmorph",
    "predict_field",
    "save_voxelmorph",
    "load_voxelmorph",
    "VoxelMorphRegistrar",
    "train_voxelmorph",
]

DEFAULT_VOXELMORPH_MODEL = Path(__file__).resolve().parent.parent / "models" / "voxelmorph_default.pt"
CHECKPOINT_FORMAT = "spikereg-neuro/voxelmorph-checkpoint"
CHECKPOINT_VERSION = 1
PathLike = Union[str, Path]


def voxelmorph_available() -> Tuple[bool, str]:
    """``(True, version)`` if ``voxelmorph`` (PyTorch) imports, else ``(False, reason)``."""
    try:
        import voxelmorph as vxm  # noqa: F401
        from voxelmorph.nn.models import VxmPairwise  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken dependency
        return False, (f"the voxelmorph package is not usable ({exc.__class__.__name__}: {exc}); "
                       "install the extra: pip install 'spikereg-neuro[baselines]'")
    return True, str(getattr(vxm, "__version__", "unknown"))


def _require_voxelmorph():
    ok, msg = voxelmorph_available()
    if not ok:
        raise ImportError(msg)
    import voxelmorph as vxm
    return vxm


@dataclass
class VoxelMorphConfig:
    """The VoxelMorph network: ``VxmPairwise(ndim=3, 1, 1, nb_features, integration_steps)``."""

    nb_features: Tuple[int, ...] = (8, 16, 32, 32)
    integration_steps: int = 7

    def __post_init__(self) -> None:
        self.nb_features = tuple(int(v) for v in self.nb_features)
        if not self.nb_features or any(v < 1 for v in self.nb_features):
            raise ValueError(f"nb_features must be positive integers, got {self.nb_features}")
        if int(self.integration_steps) != self.integration_steps or self.integration_steps < 0:
            raise ValueError(f"integration_steps must be an integer >= 0, got {self.integration_steps!r}")
        self.integration_steps = int(self.integration_steps)

    @property
    def size_multiple(self) -> int:
        """Each axis of the network's input must be a multiple of this (one pooling per level)."""
        return 2 ** len(self.nb_features)

    def to_dict(self) -> Dict[str, Any]:
        return {"nb_features": list(self.nb_features), "integration_steps": self.integration_steps}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "VoxelMorphConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d or {}) - known)
        if unknown:
            raise ValueError(f"unknown VoxelMorph config key(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(d or {}))


def build_voxelmorph(cfg: Optional[VoxelMorphConfig] = None) -> torch.nn.Module:
    """A fresh ``VxmPairwise`` network of ``cfg`` (PyTorch default init, flow layer ~0)."""
    vxm = _require_voxelmorph()
    cfg = cfg or VoxelMorphConfig()
    net = vxm.nn.models.VxmPairwise(ndim=3, source_channels=1, target_channels=1,
                                    nb_features=list(cfg.nb_features),
                                    integration_steps=cfg.integration_steps)
    net.spikereg_config = cfg  # type: ignore[attr-defined]
    return net


def _pad_to_multiple(x: torch.Tensor, k: int) -> torch.Tensor:
    pads: List[int] = []
    for n in reversed(x.shape[2:]):
        pads += [0, -(-n // k) * k - n]
    return F.pad(x, pads) if any(pads) else x


def predict_field(net: torch.nn.Module, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """Displacement ``(N, 3, D, H, W)`` (voxels, pull) that warps ``moving`` onto ``fixed``.

    Inputs of any size are zero-padded at the far end of each axis up to the network's size
    multiple and the field is cropped back.
    """
    cfg: VoxelMorphConfig = getattr(net, "spikereg_config", VoxelMorphConfig())
    size = fixed.shape[2:]
    f = _pad_to_multiple(fixed, cfg.size_multiple)
    m = _pad_to_multiple(moving, cfg.size_multiple)
    u = net(m, f)  # VxmPairwise(source=moving, target=fixed) -> displacement
    return u[..., :size[0], :size[1], :size[2]]


# ----------------------------------------------------------------------------- checkpoints
def save_voxelmorph(path: PathLike, net: torch.nn.Module, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write weights + network config (+ ``extra``: training config, history...) atomically."""
    cfg: VoxelMorphConfig = getattr(net, "spikereg_config", VoxelMorphConfig())
    _, version = voxelmorph_available()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "voxelmorph_version": version,
        "vxm_config": cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        **(extra or {}),
    }
    path = Path(path)
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_voxelmorph(path: PathLike, expect: Optional[VoxelMorphConfig] = None
                    ) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Build the network a checkpoint describes and load its weights (eval mode).

    Clear errors for a missing file, a file that is not a VoxelMorph checkpoint of this
    project (e.g. a SpikeReg checkpoint), a newer format, weights that do not fit the stored
    config, and (with ``expect``) a checkpoint made with another network config. Nothing in
    the file is executed (``weights_only=True``); the shipped model is checked against the
    sha256 in ``models/voxelmorph_default.json``.
    """
    from ..io.safe_load import safe_torch_load, verify_shipped

    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise FileNotFoundError(f"VoxelMorph checkpoint not found: {path}")
    if path.is_file() and path.resolve() == DEFAULT_VOXELMORPH_MODEL.resolve():
        verify_shipped(path)  # before unpickling anything from it
    ckpt = safe_torch_load(path, "VoxelMorph checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        what = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a spikereg-neuro VoxelMorph checkpoint (format {what!r}, "
                         f"expected {CHECKPOINT_FORMAT!r})")
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has VoxelMorph checkpoint version {ckpt.get('format_version')}, "
                         f"this spikereg-neuro reads version {CHECKPOINT_VERSION}")
    cfg = VoxelMorphConfig.from_dict(ckpt["vxm_config"])
    if expect is not None and cfg.to_dict() != expect.to_dict():
        raise ValueError(f"{path} was made with VoxelMorph config {cfg.to_dict()}, expected {expect.to_dict()}")
    net = build_voxelmorph(cfg)
    try:
        net.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the VoxelMorph config stored in it: {exc}") from exc
    net.eval()
    return net, ckpt


# ----------------------------------------------------------------------------- registrar
class VoxelMorphRegistrar:
    """Register pairs with a trained VoxelMorph checkpoint (default: the shipped one).

    Intensities are normalised exactly like SpikeReg's inference (``normalize_intensity``:
    volumes already in [0, 1] are kept, others robustly rescaled). By default the whole volume
    goes through the network in one pass (padded to a multiple of 16); ``tile=(patch,
    stride)`` instead predicts overlapping ``patch^3`` tiles blended like SpikeReg's inference
    (:func:`spikereg_neuro.tiling.tiled_predict`).
    """

    name = "voxelmorph"

    def __init__(self, checkpoint: Optional[PathLike] = None, device: str = "cpu",
                 tile: Optional[Tuple[int, int]] = None) -> None:
        self.checkpoint = Path(checkpoint) if checkpoint is not None else DEFAULT_VOXELMORPH_MODEL
        self.device = torch.device(device)
        self.tile = None if tile is None else (int(tile[0]), int(tile[1]))
        self.net: Optional[torch.nn.Module] = None
        self.meta: Dict[str, Any] = {}

    def available(self) -> Tuple[bool, str]:
        ok, msg = voxelmorph_available()
        if not ok:
            return False, msg
        if not self.checkpoint.is_file():
            return False, (f"no VoxelMorph checkpoint at {self.checkpoint}; train one with "
                           "'spikereg-neuro baseline train-voxelmorph --out DIR' and pass --voxelmorph-model")
        return True, ""

    def load(self) -> torch.nn.Module:
        if self.net is None:
            net, ckpt = load_voxelmorph(self.checkpoint)
            self.net = net.to(self.device)
            self.meta = {k: ckpt.get(k) for k in ("vxm_config", "voxelmorph_version", "best_val_dice",
                                                  "steps", "train_config")}
        return self.net

    @torch.no_grad()
    def register(self, fixed: np.ndarray, moving: np.ndarray,
                 affine: Optional[np.ndarray] = None) -> np.ndarray:
        from ..inference import normalize_intensity

        f, m = check_pair_arrays(fixed, moving)
        net = self.load()
        ft = torch.from_numpy(normalize_intensity(f))[None, None].to(self.device)
        mt = torch.from_numpy(normalize_intensity(m))[None, None].to(self.device)
        if self.tile is None:
            u = predict_field(net, ft, mt)
        else:
            from ..tiling import tiled_predict
            p, st = self.tile
            u = tiled_predict(lambda a, b: predict_field(net, a, b), ft, mt, [p] * 3, [st] * 3, batch_size=4)
        return check_field(u[0].cpu().numpy(), f.shape, "VoxelMorph")

    def info(self) -> Dict[str, Any]:
        if self.net is None and self.available()[0]:
            self.load()
        n = sum(p.numel() for p in self.net.parameters()) if self.net is not None else None
        return {"checkpoint": str(self.checkpoint), "parameters": n,
                "inference": "whole volume" if self.tile is None else f"tiles {self.tile[0]}^3, stride {self.tile[1]}",
                "vxm_config": self.meta.get("vxm_config"), "voxelmorph_version": self.meta.get("voxelmorph_version"),
                "best_val_dice": self.meta.get("best_val_dice"), "train_steps": self.meta.get("steps")}


# ----------------------------------------------------------------------------- training
@torch.no_grad()
def _validate(net: torch.nn.Module, val_ds, max_pairs: int, device: torch.device) -> Dict[str, float]:
    from ..registration.metrics import dice_mean
    from ..registration.transform import warp_labels

    net.eval()
    dices, mags = [], []
    for i in range(len(val_ds)):
        if max_pairs and i >= max_pairs:
            break
        item = val_ds[i]
        u = predict_field(net, item["fixed"][None].to(device), item["moving"][None].to(device))
        wl = warp_labels(item["moving_labels"][None].to(device), u)
        dices.append(dice_mean(item["fixed_labels"][0].numpy(), wl[0, 0].cpu().numpy()))
        mags.append(float(u.norm(dim=1).mean()))
    return {"val_dice": float(np.nanmean(dices)) if dices else float("nan"),
            "val_disp_mean": float(np.mean(mags)) if mags else float("nan")}


def _resume_state(path: PathLike) -> Dict[str, Any]:
    """A ``last.pt`` of :func:`train_voxelmorph` with the state a resumed run needs (clear errors)."""
    from ..io.safe_load import safe_torch_load

    ckpt = safe_torch_load(path, "VoxelMorph checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"cannot resume from {path}: not a spikereg-neuro VoxelMorph checkpoint")
    if "resume" not in ckpt:
        raise ValueError(f"cannot resume from {path}: it holds no optimiser/RNG state (resume from a run's "
                         "last.pt, not best.pt or a shipped model; --init fine-tunes from those)")
    return ckpt


def train_voxelmorph(config=None, out_dir: PathLike = "runs/voxelmorph", steps: Optional[int] = None,
                     vxm_config: Optional[VoxelMorphConfig] = None, cache_dir: Optional[PathLike] = None,
                     progress: bool = True, device: Optional[str] = None,
                     init: Optional[PathLike] = None, resume: Optional[PathLike] = None) -> Dict[str, Any]:
    """Train VoxelMorph like SpikeReg is trained (see the module docstring) and return a summary.

    ``config``: a :class:`spikereg_neuro.config.Config` (default: the packaged default config,
    or with ``resume`` the checkpoint's); its ``data`` section picks the embedded data set and
    its ``train`` section the budget, patch size, loss weights, optimiser, seed and learning-rate
    schedule (:class:`spikereg_neuro.train.schedule.LRSchedule`: ``lr_schedule`` from ``lr`` to 0
    over ``epochs x steps_per_epoch`` steps, as the SpikeReg trainer). ``steps``: the global step
    to stop at (default: the planned ``epochs x steps_per_epoch``; fewer stops early on the same
    curve, more runs past its end at rate 0 for a cosine); validation runs every
    ``steps_per_epoch`` steps and at the end. Each block of ``steps_per_epoch`` steps iterates
    the shuffled training loader afresh (the SpikeReg trainer's epochs: the same pair order).
    ``init``: start from a VoxelMorph checkpoint's weights with a fresh optimiser and schedule
    (fine-tuning). ``resume``: continue a run from its ``last.pt`` (weights, optimiser, step,
    schedule end, every random state, history), bitwise like the uninterrupted run.

    Writes to ``out_dir``: ``best.pt`` (best validation Dice; weights + configs + history, no
    optimiser state), ``last.pt`` (also the ``resume`` state), ``train_log.csv`` (appended on
    resume) and ``summary.json``.
    """
    from tqdm.auto import tqdm
    from torch.utils.data import DataLoader

    from ..config import Config, load_config
    from ..data import RegistrationPairs, build_dataset
    from ..data.augment import augment_generator, augment_pair
    from ..registration.losses import DiceLoss, GradientSmoothness, LocalNCC
    from ..registration.transform import warp
    from ..train.schedule import LRSchedule, resumed_total
    from ..train.trainer import field_mse, random_patches

    if init is not None and resume is not None:
        raise ValueError("give init (fine-tune from weights) or resume (continue a run), not both")
    ckpt = _resume_state(resume) if resume is not None else None
    if config is not None:
        cfg = config
    elif ckpt is not None:
        cfg = Config.from_dict(ckpt["train_config"])
    else:
        cfg = load_config()
    tc = cfg.train
    if ckpt is not None:
        ck_vcfg = VoxelMorphConfig.from_dict(ckpt["vxm_config"])
        if vxm_config is not None and vxm_config.to_dict() != ck_vcfg.to_dict():
            raise ValueError(f"cannot resume from {resume}: it was made with VoxelMorph config "
                             f"{ck_vcfg.to_dict()}, not {vxm_config.to_dict()}")
        vxm_config = ck_vcfg
    vcfg = vxm_config or VoxelMorphConfig()
    if tc.patch_size % vcfg.size_multiple:
        raise ValueError(f"train.patch_size {tc.patch_size} must be a multiple of {vcfg.size_multiple} "
                         f"for VoxelMorph nb_features {list(vcfg.nb_features)}")
    start = int(ckpt["steps"]) if ckpt is not None else 0
    spe = tc.steps_per_epoch
    # the schedule's end: the plan of epochs x steps_per_epoch, from the last whole epoch on a resume
    plan = resumed_total(start - start % spe, start // spe, tc.epochs, spe)
    planned = ((ckpt or {}).get("scheduler") or {}).get("total_steps")
    if planned is not None and int(planned) != plan and tc.lr_schedule == "cosine":
        print(f"[voxelmorph] the cosine schedule now ends at step {plan} (epoch {tc.epochs}); "
              f"the checkpoint planned step {int(planned)}", flush=True)
    total = int(steps) if steps is not None else plan
    if total < 1:
        raise ValueError(f"steps must be >= 1, got {total}")
    if total <= start:
        raise ValueError(f"{resume} is already at step {start}: steps must be more than that, got {total}")
    schedule = LRSchedule.from_train(tc, plan)
    if tc.lr_schedule == "cosine" and total > plan:
        print(f"[voxelmorph] steps {plan + 1}..{total} run after the end of the cosine schedule (learning "
              f"rate 0); raise train.epochs to plan a longer schedule", flush=True)
    dev = torch.device(device or tc.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    h5 = build_dataset(cfg.data, cache_dir, progress=progress)
    train_ds = RegistrationPairs(h5, "train", true_fields=tc.w_field > 0)
    val_ds = RegistrationPairs(h5, "val")
    loader_gen = torch.Generator().manual_seed(tc.seed)
    loader = DataLoader(train_ds, batch_size=1, shuffle=True, generator=loader_gen)
    torch.manual_seed(tc.seed)
    gen = np.random.default_rng(tc.seed)
    aug_gen = augment_generator(tc.seed)   # the SpikeReg trainer's draws
    if init is not None:
        net, _ = load_voxelmorph(init, expect=vcfg)
        net = net.to(dev)
    else:
        net = build_voxelmorph(vcfg).to(dev)
    n_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    ncc, smooth_loss, dice_loss = LocalNCC(tc.ncc_window, sigma=tc.ncc_sigma), GradientSmoothness("l2"), DiceLoss()

    history: List[Dict[str, Any]] = []
    best = {"val_dice": -1.0, "step": 0}
    meta = {"train_config": cfg.to_dict(), "data_config": cfg.data.to_dict(), "parameters": n_params,
            **({"init": str(init)} if init is not None else {}),
            "loss": f"LocalNCC({tc.ncc_window}{f', sigma {tc.ncc_sigma:g}' if tc.ncc_sigma else ''}) + {tc.w_smooth} * Grad-l2(u) + {tc.w_dice} * Dice"
                    + (f" + {tc.w_field} * |u - u_true|^2" if tc.w_field > 0 else "")}
    epoch_start = loader_gen.get_state()  # the loader's state when the current epoch's pass began
    pos = 0                               # steps done in the current epoch
    if ckpt is not None:
        net.load_state_dict(ckpt["state_dict"], strict=True)
        opt.load_state_dict(ckpt["resume"]["optimizer"])
        rng = ckpt["resume"]["rng"]
        gen.bit_generator.state = rng["numpy"]
        aug_gen.bit_generator.state = rng["augment"]
        torch.set_rng_state(rng["torch"])
        epoch_start, pos = rng["loader_epoch_start"], int(ckpt["resume"]["epoch_step"])
        history = list(ckpt.get("history", []))
        best = {"val_dice": float(ckpt.get("best_val_dice", -1.0)), "step": int(ckpt.get("best_step", 0))}
        meta = {**{k: ckpt[k] for k in ("init",) if k in ckpt}, **meta, "resumed_from": str(resume)}
    init_val = _validate(net, val_ds, tc.val_pairs, dev) if init is not None else None
    if init_val is not None:
        meta["init_val_dice"] = init_val["val_dice"]

    def extra(step: int) -> Dict[str, Any]:
        return {**meta, "steps": step, "best_val_dice": best["val_dice"], "best_step": best["step"],
                "scheduler": schedule.state(step), "history": history}

    def resume_state(step: int) -> Dict[str, Any]:
        at_end = step % spe == 0
        return {"optimizer": opt.state_dict(), "epoch_step": 0 if at_end else pos,
                "rng": {"numpy": gen.bit_generator.state, "augment": aug_gen.bit_generator.state,
                        "torch": torch.get_rng_state(),
                        "loader_epoch_start": loader_gen.get_state() if at_end else epoch_start}}

    it = None

    def next_pair() -> Dict[str, torch.Tensor]:
        nonlocal it
        try:
            return next(it)
        except StopIteration:  # fewer pairs than steps per epoch: another pass within the epoch
            it = iter(loader)
            return next(it)

    loader_gen.set_state(epoch_start)
    if pos:  # resumed inside an epoch: replay its pass up to where the run stopped (no training)
        it = iter(loader)
        for _ in range(pos):
            next_pair()

    t0 = time.time()
    agg: Dict[str, List[float]] = {}
    log_path = out / "train_log.csv"
    append = ckpt is not None and log_path.is_file()
    writer = None
    bar = tqdm(range(start + 1, total + 1), desc="train voxelmorph", disable=not progress, dynamic_ncols=True)
    with open(log_path, "a" if append else "w", newline="") as fh:
        for step in bar:
            if (step - 1) % spe == 0:  # a new epoch: a fresh pass over the shuffled pairs
                epoch_start = loader_gen.get_state()
                it, pos = iter(loader), 0
            full = next_pair()
            pos += 1
            if cfg.augment.enabled:
                full = augment_pair(full, cfg.augment, aug_gen)
            batch = random_patches(full, tc.batch_size, tc.patch_size, gen, tc.min_foreground)
            batch = {k: v.to(dev) for k, v in batch.items()}
            net.train()
            fixed, moving = batch["fixed"], batch["moving"]
            u = net(moving, fixed)
            sim = ncc(fixed, warp(moving, u))
            smooth = smooth_loss(u)
            dice = torch.zeros((), device=dev)
            if tc.w_dice > 0:
                nl = int(max(batch["fixed_labels"].max(), batch["moving_labels"].max())) + 1
                dice = dice_loss.warped_labels(batch["fixed_labels"], batch["moving_labels"], u, nl)
            field_err = field_mse(u, batch["true_field"]) if tc.w_field > 0 else torch.zeros((), device=dev)
            loss = sim + tc.w_smooth * smooth + tc.w_dice * dice + tc.w_field * field_err
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
            lr = schedule.apply(opt.param_groups, step - 1)  # 0-based global step, as the SpikeReg trainer
            opt.step()
            stats = {"loss": float(loss), "ncc": float(sim), "smooth": float(smooth),
                     "dice_loss": float(dice), "grad_norm": float(gnorm), "lr": lr,
                     **({"field_mse": float(field_err)} if tc.w_field > 0 else {})}
            for k, v in stats.items():
                agg.setdefault(k, []).append(v)
            bar.set_postfix(loss=f"{stats['loss']:.4f}", ncc=f"{stats['ncc']:.3f}")
            if step % spe == 0 or step == total:
                row: Dict[str, Any] = {"step": step, "epoch": -(-step // spe),
                                       "seconds": round(time.time() - t0, 1),
                                       **{k: float(np.mean(v)) for k, v in agg.items()}}
                agg = {}
                row.update(_validate(net, val_ds, tc.val_pairs, dev))
                history.append(row)
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(row))
                    if not append:
                        writer.writeheader()
                writer.writerow(row)
                fh.flush()
                msg = "[voxelmorph] " + " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
                bar.write(msg) if progress else print(msg, flush=True)
                if np.isfinite(row["val_dice"]) and row["val_dice"] > best["val_dice"]:
                    best.update(val_dice=row["val_dice"], step=step)
                    save_voxelmorph(out / "best.pt", net, extra(step))
                save_voxelmorph(out / "last.pt", net, {**extra(step), "resume": resume_state(step)})
    bar.close()
    seconds = time.time() - t0
    run = total - start
    summary = {
        "model": "voxelmorph.nn.models.VxmPairwise",
        "voxelmorph_version": voxelmorph_available()[1],
        "vxm_config": vcfg.to_dict(),
        "parameters": n_params,
        "steps": total,
        "steps_run": run,
        **({"init": str(init), "init_val_dice": init_val["val_dice"]} if init_val is not None else {}),
        **({"resumed_from": str(resume), "resumed_at": start} if ckpt is not None else {}),
        "schedule": schedule.state(total),
        "patches_per_step": tc.batch_size,
        "patch_size": tc.patch_size,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / run, 4),
        "torch_threads": torch.get_num_threads(),
        "final_loss": history[-1]["loss"] if history else None,
        "final_ncc": history[-1]["ncc"] if history else None,
        "best_val_dice": best["val_dice"],
        "best_step": best["step"],
        "final_val_dice": history[-1]["val_dice"] if history else None,
        "loss": meta["loss"],
        "history": history,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    return summary
