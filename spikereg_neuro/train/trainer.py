"""Surrogate-gradient training of the SpikeReg network on patches of volume pairs."""
from __future__ import annotations

import csv
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import torch

from ..checkpoint import read_checkpoint, save_checkpoint
from ..config import Config
from ..inference import register_tensors
from ..model.policy import residual_registration
from ..model.unet import SpikeRegUNet
from ..registration.losses import DiceLoss, GradientSmoothness, LocalNCC, one_hot
from ..registration.metrics import dice_mean
from ..registration.transform import warp, warp_labels


def rate_penalty(rates: Dict[str, torch.Tensor], band: tuple) -> torch.Tensor:
    """Sum over layers of squared distance of the mean firing rate to ``[low, high]``."""
    lo, hi = band
    terms = [torch.relu(lo - r) ** 2 + torch.relu(r - hi) ** 2 for r in rates.values()]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def random_patches(batch: Dict[str, torch.Tensor], n: int, patch: int, gen: np.random.Generator,
                   min_foreground: float = 0.05, tries: int = 20) -> Dict[str, torch.Tensor]:
    """``n`` random aligned crops of size ``patch^3`` from a batch of full volume pairs.

    Crops whose fixed image has a mean intensity below ``min_foreground`` (mostly background)
    are redrawn up to ``tries`` times.
    """
    vols = batch["fixed"]
    size = vols.shape[2:]
    if any(s < patch for s in size):
        raise ValueError(f"training volumes {tuple(size)} are smaller than the patch {patch}")
    keys = ("fixed", "moving", "fixed_labels", "moving_labels", "true_field")
    out: Dict[str, List[torch.Tensor]] = {k: [] for k in keys if k in batch}
    for _ in range(n):
        b = int(gen.integers(vols.shape[0]))
        for _ in range(tries):
            o = [int(gen.integers(0, s - patch + 1)) for s in size]
            sl = (b, slice(None), *[slice(a, a + patch) for a in o])
            if float(vols[sl].mean()) >= min_foreground:
                break
        for k in out:
            out[k].append(batch[k][sl])
    return {k: torch.stack(v) for k, v in out.items()}


def field_mse(field: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean over voxels of the squared endpoint error ``|u - u_true|^2`` (voxels^2)."""
    if field.shape != true.shape:
        raise ValueError(f"field {tuple(field.shape)} and true field {tuple(true.shape)} differ in shape")
    return ((field - true) ** 2).sum(dim=1).mean()


class SpikeRegTrainer:
    """Train a :class:`SpikeRegUNet` with its residual policy.

    Loss per iteration ``k`` (weights ``(k+1)/K``): local NCC(fixed, warped) +
    ``w_smooth`` * gradient smoothness of the field + ``w_dice`` * Dice loss on warped labels
    + ``w_field`` * mean squared endpoint error against the batch's ``true_field`` (synthetic
    data only); plus ``w_rate`` * the firing-rate band penalty over every layer of every
    network call.
    """

    def __init__(self, model: SpikeRegUNet, config: Config, out_dir: str | Path,
                 progress: bool = True) -> None:
        self.net = model
        self.cfg = config
        self.tc = config.train
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(self.tc.device)
        self.net.to(self.device)
        self.progress = progress
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=self.tc.lr, weight_decay=self.tc.weight_decay)
        total = self.tc.epochs * self.tc.steps_per_epoch
        self.sched = (torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=total)
                      if self.tc.lr_schedule == "cosine" else None)
        self.ncc = LocalNCC(self.tc.ncc_window, sigma=self.tc.ncc_sigma)
        self.smooth = GradientSmoothness("l2")
        self.dice_loss = DiceLoss()
        self.epoch = 0
        self.best_val_dice = -1.0
        self.history: List[Dict[str, Any]] = []
        torch.manual_seed(self.tc.seed)
        self.gen = np.random.default_rng(self.tc.seed)

    # ------------------------------------------------------------------------------------------
    def _extra(self) -> Dict[str, Any]:
        return {
            "epoch": self.epoch,
            "best_val_dice": self.best_val_dice,
            "config": self.cfg.to_dict(),
            "data_config": self.cfg.data.to_dict(),
            "inference": asdict(self.cfg.inference),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "rng": {"numpy": self.gen.bit_generator.state, "torch": torch.get_rng_state()},
            "history": self.history,
        }

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint written by this trainer (same model config required)."""
        ckpt = read_checkpoint(path)
        if ckpt["model_config"] != self.net.cfg.to_dict():
            raise ValueError(f"cannot resume from {path}: it was trained with another model config")
        self.net.load_state_dict(ckpt["state_dict"])
        if "optimizer" in ckpt:
            self.opt.load_state_dict(ckpt["optimizer"])
        if self.sched is not None and ckpt.get("scheduler"):
            self.sched.load_state_dict(ckpt["scheduler"])
        self.epoch = int(ckpt.get("epoch", 0))
        self.best_val_dice = float(ckpt.get("best_val_dice", -1.0))
        self.history = list(ckpt.get("history", []))
        if "rng" in ckpt:
            self.gen.bit_generator.state = ckpt["rng"]["numpy"]
            torch.set_rng_state(ckpt["rng"]["torch"])

    def _similarity_mask(self, batch: Dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        """Where the similarity loss counts (``train.ncc_mask``); ``None`` for everywhere."""
        if self.tc.ncc_mask == "none":
            return None
        if "fixed_labels" not in batch:
            raise ValueError("train.ncc_mask = 'labels' needs training labels (fixed_labels)")
        mask = (batch["fixed_labels"] > 0).float()
        r = self.tc.ncc_mask_dilate
        if r > 0:
            mask = torch.nn.functional.max_pool3d(mask, 2 * r + 1, stride=1, padding=r)
        return mask

    def step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """One optimisation step on a batch of patches (tensors already on the device)."""
        self.net.train()
        fixed, moving = batch["fixed"], batch["moving"]
        rate_terms: List[torch.Tensor] = []
        rates: Dict[str, List[float]] = {}

        def predict(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            out = self.net(f, m.detach() if self.tc.detach_warped else m)
            rate_terms.append(rate_penalty(self.net.rates, self.tc.rate_band))
            for k, r in self.net.rates.items():
                rates.setdefault(k, []).append(float(r))
            return out

        _, fields = residual_registration(predict, fixed, moving, self.net.cfg.scales,
                                          integration_steps=self.net.cfg.integration_steps)
        K = len(fields)
        mask = self._similarity_mask(batch)
        sim = smooth = dice = field_err = torch.zeros((), device=fixed.device)
        if self.tc.w_field > 0 and "true_field" not in batch:
            raise ValueError("train.w_field > 0 needs the pairs' true fields in the batch "
                             "(RegistrationPairs(..., true_fields=True), embedded synthetic data)")
        for k, u in enumerate(fields):
            wk = (k + 1) / K
            warped = warp(moving, u)
            sim = sim + wk * self.ncc(fixed, warped, mask)
            smooth = smooth + wk * self.smooth(u)
            if self.tc.w_dice > 0 and "fixed_labels" in batch:
                nl = int(max(batch["fixed_labels"].max(), batch["moving_labels"].max())) + 1
                ml = one_hot(batch["moving_labels"], nl)
                dice = dice + wk * self.dice_loss(one_hot(batch["fixed_labels"], nl), warp(ml, u))
            if self.tc.w_field > 0:
                field_err = field_err + wk * field_mse(u, batch["true_field"])
        with torch.no_grad():  # the unregistered similarity, for the log: progress = ncc < ncc_identity
            ncc_identity = float(self.ncc(fixed, moving, mask)) * sum((k + 1) / K for k in range(K))
        rate = torch.stack(rate_terms).mean()
        loss = (sim + self.tc.w_smooth * smooth + self.tc.w_dice * dice + self.tc.w_field * field_err
                + self.tc.w_rate * rate)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.tc.grad_clip)
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        return {"loss": float(loss), "ncc": float(sim), "ncc_identity": ncc_identity,
                "smooth": float(smooth), "dice_loss": float(dice),
                **({"field_mse": float(field_err)} if self.tc.w_field > 0 else {}),
                "rate_pen": float(rate), "grad_norm": float(gnorm), "lr": self.opt.param_groups[0]["lr"],
                "rate_mean": float(np.mean([np.mean(v) for v in rates.values()])),
                "rate_min": float(min(np.mean(v) for v in rates.values()))}

    @torch.no_grad()
    def validate(self, val_loader: Iterable[Dict[str, torch.Tensor]]) -> Dict[str, float]:
        """Mean Dice (and field magnitude) on whole validation volumes, tiled like inference."""
        self.net.eval()
        ic = self.cfg.inference
        dices, mags = [], []
        for i, batch in enumerate(val_loader):
            if self.tc.val_pairs and i >= self.tc.val_pairs:
                break
            f = batch["fixed"].to(self.device)
            m = batch["moving"].to(self.device)
            u = register_tensors(self.net, self.net.cfg.scales, f, m, [ic.patch_size] * 3,
                                 [ic.stride] * 3, ic.batch_size,
                                 integration_steps=self.net.cfg.integration_steps)
            wl = warp_labels(batch["moving_labels"].to(self.device), u)
            dices.append(dice_mean(batch["fixed_labels"][0, 0].numpy(), wl[0, 0].cpu().numpy()))
            mags.append(float(u.norm(dim=1).mean()))
        return {"val_dice": float(np.nanmean(dices)) if dices else float("nan"),
                "val_disp_mean": float(np.mean(mags)) if mags else float("nan")}

    def train(self, train_loader: Iterable[Dict[str, torch.Tensor]],
              val_loader: Optional[Iterable[Dict[str, torch.Tensor]]] = None,
              num_epochs: Optional[int] = None) -> Dict[str, Any]:
        """Train for ``num_epochs`` (default: config) more epochs; returns a summary."""
        from tqdm.auto import tqdm

        epochs = num_epochs if num_epochs is not None else self.tc.epochs
        log_path = self.out / "train_log.csv"
        new_log = not log_path.exists()
        t0 = time.time()
        with open(log_path, "a", newline="") as fh:
            writer = None
            for _ in range(epochs):
                self.epoch += 1
                it = iter(train_loader)
                bar = tqdm(range(self.tc.steps_per_epoch), desc=f"epoch {self.epoch}",
                           disable=not self.progress, dynamic_ncols=True)
                agg: Dict[str, List[float]] = {}
                for _ in bar:
                    try:
                        full = next(it)
                    except StopIteration:
                        it = iter(train_loader)
                        full = next(it)
                    batch = random_patches(full, self.tc.batch_size, self.tc.patch_size, self.gen,
                                           self.tc.min_foreground)
                    batch = {k: v.to(self.device) for k, v in batch.items()}
                    stats = self.step(batch)
                    for k, v in stats.items():
                        agg.setdefault(k, []).append(v)
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", ncc=f"{stats['ncc']:.3f}",
                                    rate=f"{stats['rate_mean']:.3f}")
                row = {"epoch": self.epoch, "seconds": round(time.time() - t0, 1),
                       **{k: float(np.mean(v)) for k, v in agg.items()}}
                if val_loader is not None:
                    row.update(self.validate(val_loader))
                self.history.append(row)
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(row))
                    if new_log:
                        writer.writeheader()
                writer.writerow(row)
                fh.flush()
                msg = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
                print(f"[train] {msg}", flush=True)
                vd = row.get("val_dice", float("nan"))
                if val_loader is not None and np.isfinite(vd) and vd > self.best_val_dice:
                    self.best_val_dice = vd
                    save_checkpoint(self.out / "best.pt", self.net, self._extra())
                save_checkpoint(self.out / "last.pt", self.net, self._extra())
        if val_loader is None:
            save_checkpoint(self.out / "best.pt", self.net, self._extra())
        return {"epochs": self.epoch, "best_val_dice": self.best_val_dice, "seconds": time.time() - t0,
                "last": self.history[-1] if self.history else {}}
