"""Surrogate-gradient training of the SpikeReg network on patches of volume pairs."""
from __future__ import annotations

import contextlib
import csv
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import torch

from ..checkpoint import read_checkpoint, save_checkpoint
from ..config import Config
from ..inference import register_tensors
from ..model.neuron import LEARNED_DECAYS, decay_parameters, effective_decays
from ..model.policy import residual_registration
from ..model.unet import SpikeRegUNet
from ..registration.losses import DiceLoss, GradientSmoothness, LocalNCC
from ..registration.metrics import dice_mean
from ..registration.transform import warp, warp_labels
from . import distributed as ddp
from .schedule import LRSchedule, cosine_lr, resumed_total  # noqa: F401  (cosine_lr: re-exported)
from ..data.augment import augment_generator, augment_pair


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


def default_out_dir() -> Path:
    """``runs/<YYYYmmdd-HHMMSS>`` under the current folder (the trainer's default run folder)."""
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def _generator_of(loader: Any) -> Optional[torch.Generator]:
    """The ``torch.Generator`` that orders a ``DataLoader`` (``None`` if it has none)."""
    gen = getattr(loader, "generator", None)
    return gen if isinstance(gen, torch.Generator) else None


class SpikeRegTrainer:
    """Train a :class:`SpikeRegUNet` with its residual policy.

    Loss per iteration ``k`` (weights ``(k+1)/K``): local NCC(fixed, warped) +
    ``w_smooth`` * gradient smoothness of the field + ``w_dice`` * Dice loss on warped labels
    + ``w_field`` * mean squared endpoint error against the batch's ``true_field`` (synthetic
    data only); plus ``w_rate`` * the firing-rate band penalty over every layer of every
    network call.

    Each step takes the next full-volume pair of the training loader and crops ``batch_size``
    random patches from it. Inside a ``torch.distributed`` process group of ``N`` ranks
    (:mod:`spikereg_neuro.train.distributed`) the global batch is split: every rank crops
    ``batch_size / N`` patches from the same pair with its own generator (seeded
    ``[seed, rank]``), gradients are averaged over the ranks, the firing rates of the rate
    penalty and the number of label classes are made global, so a step equals one process's
    step on the concatenated batch. Only rank 0 writes the log and checkpoints and validates.

    The learning rate is a closed-form cosine of the global step that ends at
    ``train.epochs x train.steps_per_epoch`` (0 past it, never restarting). Checkpoints hold
    everything a resumed run needs to continue bitwise like an uninterrupted one: weights,
    optimiser, step, the patch generators and torch RNG of every rank and the training
    loader's generator state (plain tensors, numbers, strings, lists and dicts).
    """

    def __init__(self, model: SpikeRegUNet, config: Config, out_dir: str | Path | None = None,
                 progress: bool = True) -> None:
        self.net = model
        self.cfg = config
        self.tc = config.train
        self.rank, self.world = ddp.world_info()
        self.is_main = self.rank == 0
        if self.tc.batch_size % self.world:
            raise ValueError(f"train.batch_size {self.tc.batch_size} cannot be split over {self.world} "
                             "processes (it must be a multiple of the process count)")
        self.local_batch = self.tc.batch_size // self.world
        if out_dir is None:
            out_dir = default_out_dir()
            if self.is_main:
                print(f"[train] writing to {out_dir}", flush=True)
        self.out = Path(out_dir)
        if self.is_main:
            if self.out.exists() and not self.out.is_dir():
                raise ValueError(f"run folder {self.out} exists and is not a folder")
            self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(self.tc.device)
        self.net.to(self.device)
        if self.world > 1:
            ddp.broadcast_module(self.net)  # every rank starts from rank 0's weights
        self.progress = progress and self.is_main
        self.opt = torch.optim.AdamW(self._param_groups(), lr=self.tc.lr, weight_decay=self.tc.weight_decay)
        self.global_step = 0
        self.total_steps = self.tc.epochs * self.tc.steps_per_epoch
        self.ncc = LocalNCC(self.tc.ncc_window, sigma=self.tc.ncc_sigma)
        self.smooth = GradientSmoothness("l2")
        self.dice_loss = DiceLoss()
        self.epoch = 0
        self.best_val_dice = -1.0
        self.history: List[Dict[str, Any]] = []
        #: recorded in checkpoints as ``data`` (what the run trained on), if set
        self.data_info: Optional[Dict[str, Any]] = None
        self._loader_state: Optional[torch.Tensor] = None  # restored into the loader by train()
        self._ranks_state: Optional[List[Dict[str, Any]]] = None  # every rank's RNG at the last epoch end
        torch.manual_seed(self.tc.seed)
        self.gen = np.random.default_rng(self.tc.seed if self.world == 1 else [self.tc.seed, self.rank])
        #: augmentation draws: one generator, the same on every rank (they augment one pair)
        self.aug_gen = augment_generator(self.tc.seed)

    # ------------------------------------------------------------------------------------------
    def _param_groups(self) -> List[Dict[str, Any]]:
        """The weights, and (with ``neuron.learn_decays``) the neuron decays as a second group:
        stored in 1/4096 units, they step ``train.decay_lr_scale`` x the learning rate, with no
        weight decay."""
        decays = decay_parameters(self.net)
        ids = {id(p) for p in decays}
        groups: List[Dict[str, Any]] = [{"params": [p for p in self.net.parameters() if id(p) not in ids]}]
        if decays:
            groups.append({"params": decays, "weight_decay": 0.0, "lr_scale": self.tc.decay_lr_scale})
        return groups

    def _decay_log(self) -> Dict[str, float]:
        """Each block's learned decays (fractions per step, as the device applies them)."""
        return {f"{b.name}.{k}": v for b in self.net.blocks() if hasattr(b, "neuron") and decay_parameters(b.neuron)
                for k, v in effective_decays(b.neuron).items() if k in LEARNED_DECAYS}

    @property
    def schedule(self) -> LRSchedule:
        """The learning-rate schedule (:mod:`spikereg_neuro.train.schedule`), ending at ``total_steps``."""
        return LRSchedule.from_train(self.tc, self.total_steps)

    def lr_at(self, step: int) -> float:
        """Learning rate of global step ``step`` (0-based)."""
        return self.schedule.lr_at(step)

    def _rng_state(self) -> Dict[str, Any]:
        return {"numpy": self.gen.bit_generator.state, "torch": torch.get_rng_state()}

    def _extra(self, loader: Any = None, ranks: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        gen = _generator_of(loader)
        rng = {**self._rng_state(), "world_size": self.world,
               "loader": gen.get_state() if gen is not None else None,
               "augment": self.aug_gen.bit_generator.state}
        if ranks is not None and self.world > 1:
            rng["ranks"] = ranks
        return {
            "epoch": self.epoch,
            "best_val_dice": self.best_val_dice,
            "config": self.cfg.to_dict(),
            "data_config": self.cfg.data.to_dict(),
            "inference": asdict(self.cfg.inference),
            **({"data": self.data_info} if self.data_info is not None else {}),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.schedule.state(self.global_step),
            "rng": rng,
            "history": self.history,
        }

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint written by this trainer (same model config required).

        Restores weights, optimiser, epoch, global step, history and the random state (this
        rank's patch generator and torch RNG; the training loader's generator is applied by
        the next :meth:`train`). The schedule still ends at ``train.epochs`` of this trainer's
        config: the total to reach, so a resumed run with the checkpoint's config continues
        the same cosine to the same end.
        """
        ckpt = read_checkpoint(path)
        if ckpt["model_config"] != self.net.cfg.to_dict():
            raise ValueError(f"cannot resume from {path}: it was trained with another model config")
        self.net.load_state_dict(ckpt["state_dict"])
        if "optimizer" in ckpt:
            self.opt.load_state_dict(ckpt["optimizer"])
        self.epoch = int(ckpt.get("epoch", 0))
        sched = ckpt.get("scheduler") or {}
        old_steps = (ckpt.get("config") or {}).get("train", {}).get("steps_per_epoch", self.tc.steps_per_epoch)
        # older checkpoints hold a CosineAnnealingLR state: its last_epoch is the step count
        self.global_step = int(sched.get("step", sched.get("last_epoch", self.epoch * old_steps)))
        self.total_steps = resumed_total(self.global_step, self.epoch, self.tc.epochs, self.tc.steps_per_epoch)
        planned = sched.get("total_steps", sched.get("T_max"))
        if (self.is_main and planned is not None and int(planned) != self.total_steps
                and self.tc.lr_schedule == "cosine"):
            print(f"[train] the cosine schedule now ends at step {self.total_steps} (epoch {self.tc.epochs}); "
                  f"the checkpoint planned step {int(planned)}", flush=True)
        self.best_val_dice = float(ckpt.get("best_val_dice", -1.0))
        self.history = list(ckpt.get("history", []))
        rng = ckpt.get("rng")
        if rng:
            state = rng
            if self.world > 1:
                ranks = rng.get("ranks")
                if ranks is not None and len(ranks) == self.world:
                    state = ranks[self.rank]
                else:
                    state = None
                    if self.is_main:
                        print(f"[train] {path} was written by {rng.get('world_size', 1)} process(es), this run has "
                              f"{self.world}: patch draws are reseeded, the data order differs from the "
                              "original run", flush=True)
                    self.gen = np.random.default_rng([self.tc.seed, self.rank, self.epoch])
            if state is not None:
                self.gen.bit_generator.state = state["numpy"]
                torch.set_rng_state(state["torch"])
            self._loader_state = rng.get("loader")
            if rng.get("augment") is not None:
                self.aug_gen.bit_generator.state = rng["augment"]

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

    def _rates(self) -> Dict[str, torch.Tensor]:
        """The network's last firing rates; over all ranks' batches in a process group."""
        rates = self.net.rates
        if self.world == 1 or not rates:
            return dict(rates)
        names = list(rates)
        g = ddp.global_mean(torch.stack([rates[k] for k in names]))
        return {k: g[i] for i, k in enumerate(names)}

    def step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """One optimisation step on a batch of patches (tensors already on the device).

        In a process group ``batch`` is this rank's share of the global batch; the returned
        statistics are means over the ranks.
        """
        self.net.train()
        fixed, moving = batch["fixed"], batch["moving"]
        rate_terms: List[torch.Tensor] = []
        rates: Dict[str, List[float]] = {}

        def predict(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            out = self.net(f, m.detach() if self.tc.detach_warped else m)
            now = self._rates()
            rate_terms.append(rate_penalty(now, self.tc.rate_band))
            for k, r in now.items():
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
        use_dice = self.tc.w_dice > 0 and "fixed_labels" in batch
        if use_dice:
            nl = int(max(batch["fixed_labels"].max(), batch["moving_labels"].max())) + 1
            if self.world > 1:  # the same classes on every rank: the Dice mean is then global
                nl = ddp.all_reduce_max(nl)
        for k, u in enumerate(fields):
            wk = (k + 1) / K
            warped = warp(moving, u)
            sim = sim + wk * self.ncc(fixed, warped, mask)
            smooth = smooth + wk * self.smooth(u)
            if use_dice:
                dice = dice + wk * self.dice_loss.warped_labels(batch["fixed_labels"], batch["moving_labels"], u, nl)
            if self.tc.w_field > 0:
                field_err = field_err + wk * field_mse(u, batch["true_field"])
        with torch.no_grad():  # the unregistered similarity, for the log: progress = ncc < ncc_identity
            ncc_identity = float(self.ncc(fixed, moving, mask)) * sum((k + 1) / K for k in range(K))
        rate = torch.stack(rate_terms).mean()
        loss = (sim + self.tc.w_smooth * smooth + self.tc.w_dice * dice + self.tc.w_field * field_err
                + self.tc.w_rate * rate)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.world > 1:
            ddp.average_gradients(self.net.parameters())
        gnorm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.tc.grad_clip)
        lr = self.schedule.apply(self.opt.param_groups, self.global_step)
        self.opt.step()
        self.global_step += 1
        stats = {"loss": float(loss), "ncc": float(sim), "ncc_identity": ncc_identity,
                 "smooth": float(smooth), "dice_loss": float(dice),
                 **({"field_mse": float(field_err)} if self.tc.w_field > 0 else {}),
                 "rate_pen": float(rate), "grad_norm": float(gnorm), "lr": lr,
                 "rate_mean": float(np.mean([np.mean(v) for v in rates.values()])),
                 "rate_min": float(min(np.mean(v) for v in rates.values()))}
        if self.world > 1:
            t = torch.tensor(list(stats.values()), dtype=torch.float64)
            torch.distributed.all_reduce(t)
            stats = dict(zip(stats, (t / self.world).tolist()))
            stats["lr"] = lr
        return stats

    @torch.no_grad()
    def validate(self, val_loader: Iterable[Dict[str, torch.Tensor]]) -> Dict[str, float]:
        """Mean Dice (and field magnitude) on whole validation volumes, registered like inference
        (the config's ``inference`` settings: whole volumes up to ``max_voxels``).

        Shows a progress bar over the pairs (when ``progress``); leaves every RNG as it was.
        """
        from tqdm.auto import tqdm

        self.net.eval()
        ic = self.cfg.inference
        dices, mags = [], []
        try:
            total: Optional[int] = len(val_loader)  # type: ignore[arg-type]
        except TypeError:
            total = None
        if self.tc.val_pairs and total is not None:
            total = min(total, self.tc.val_pairs)
        bar = tqdm(total=total, desc=f"validate {self.epoch}", unit="pair", disable=not self.progress,
                   dynamic_ncols=True, leave=False, file=sys.stderr)
        with torch.random.fork_rng(devices=[]), bar:
            for i, batch in enumerate(val_loader):
                if self.tc.val_pairs and i >= self.tc.val_pairs:
                    break
                f = batch["fixed"].to(self.device)
                m = batch["moving"].to(self.device)
                u = register_tensors(self.net, self.net.cfg.scales, f, m, [ic.patch_size] * 3,
                                     [ic.stride] * 3, ic.batch_size,
                                     integration_steps=self.net.cfg.integration_steps,
                                     max_voxels=ic.max_voxels,
                                     multiple=self.net.cfg.downsampling)
                wl = warp_labels(batch["moving_labels"].to(self.device), u)
                dices.append(dice_mean(batch["fixed_labels"][0, 0].numpy(), wl[0, 0].cpu().numpy()))
                mags.append(float(u.norm(dim=1).mean()))
                bar.update(1)
                bar.set_postfix(dice=f"{np.nanmean(dices):.4f}")
        return {"val_dice": float(np.nanmean(dices)) if dices else float("nan"),
                "val_disp_mean": float(np.mean(mags)) if mags else float("nan")}

    def train(self, train_loader: Iterable[Dict[str, torch.Tensor]],
              val_loader: Optional[Iterable[Dict[str, torch.Tensor]]] = None,
              num_epochs: Optional[int] = None) -> Dict[str, Any]:
        """Train up to ``train.epochs`` in total (or ``num_epochs`` more epochs); returns a summary.

        After every epoch rank 0 validates (if ``val_loader``), appends to ``train_log.csv``
        and writes ``last.pt`` (and ``best.pt`` on a better validation Dice).
        """
        from tqdm.auto import tqdm

        if num_epochs is not None and int(num_epochs) < 0:
            raise ValueError(f"num_epochs must be >= 0, got {num_epochs}")
        target = self.tc.epochs if num_epochs is None else self.epoch + int(num_epochs)
        gen = _generator_of(train_loader)
        if self._loader_state is not None and gen is not None:
            gen.set_state(self._loader_state)  # the data order of the interrupted run
        self._loader_state = None
        if (self.is_main and self.tc.lr_schedule == "cosine"
                and self.global_step + (target - self.epoch) * self.tc.steps_per_epoch > self.total_steps):
            print(f"[train] epochs past {self.tc.epochs} run after the end of the cosine schedule "
                  "(learning rate 0); raise train.epochs to plan a longer schedule", flush=True)
        log_path = self.out / "train_log.csv"
        t0 = time.time()
        with contextlib.ExitStack() as stack:
            fh = None            # opened with the first row: a run failing in its first epoch leaves no log
            new_log = not log_path.exists()
            writer = None
            while self.epoch < target:
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
                    if self.cfg.augment.enabled:
                        full = augment_pair(full, self.cfg.augment, self.aug_gen)
                    batch = random_patches(full, self.local_batch, self.tc.patch_size, self.gen,
                                           self.tc.min_foreground)
                    batch = {k: v.to(self.device) for k, v in batch.items()}
                    stats = self.step(batch)
                    for k, v in stats.items():
                        agg.setdefault(k, []).append(v)
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", ncc=f"{stats['ncc']:.3f}",
                                    rate=f"{stats['rate_mean']:.3f}")
                row = {"epoch": self.epoch, "seconds": round(time.time() - t0, 1),
                       **{k: float(np.mean(v)) for k, v in agg.items()}}
                # every rank's random state at the end of the epoch (a collective: all ranks)
                ranks = ddp.gather_objects(self._rng_state()) if self.world > 1 else None
                self._ranks_state = ranks
                if not self.is_main:
                    continue
                row.update(self._decay_log())
                if val_loader is not None:
                    row.update(self.validate(val_loader))
                self.history.append(row)
                if writer is None:
                    fh = stack.enter_context(open(log_path, "a", newline=""))
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
                    save_checkpoint(self.out / "best.pt", self.net, self._extra(train_loader, ranks))
                save_checkpoint(self.out / "last.pt", self.net, self._extra(train_loader, ranks))
        if val_loader is None and self.is_main:
            save_checkpoint(self.out / "best.pt", self.net, self._extra(train_loader, self._ranks_state))
        ddp.barrier()
        return {"epochs": self.epoch, "best_val_dice": self.best_val_dice, "seconds": time.time() - t0,
                "last": self.history[-1] if self.history else {}}
