"""One training run from command-line options: config, data, loaders, trainer, resume, summary.

Shared by ``spikereg-neuro train`` (one process, or ``--ddp N`` spawned ones) and
``torchrun ... -m spikereg_neuro.train`` (every rank runs :func:`run_training`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from . import distributed as ddp

__all__ = ["TrainOptions", "prepare_config", "run_training"]


@dataclass
class TrainOptions:
    """What ``spikereg-neuro train`` was asked for (``None``: from the config / checkpoint)."""

    config: Optional[str] = None
    out: Optional[str] = None
    epochs: Optional[int] = None
    steps: Optional[int] = None
    device: Optional[str] = None
    resume: Optional[str] = None
    init: Optional[str] = None
    cache: Optional[str] = None
    data: Optional[str] = None
    progress: bool = True
    ddp: int = 1

    def check(self) -> None:
        """One-line ``ValueError`` for impossible values, before any work."""
        for name in ("epochs", "steps"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"--{name} must be an integer >= 1, got {v}")
        if isinstance(self.ddp, bool) or not isinstance(self.ddp, int) or self.ddp < 1:
            raise ValueError(f"--ddp must be an integer >= 1 (processes), got {self.ddp}")
        if self.out is not None and Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"--out {self.out} exists and is not a folder")
        if self.resume is not None and not Path(self.resume).is_file():
            raise FileNotFoundError(f"--resume: checkpoint not found: {self.resume}")
        if self.init is not None and not Path(self.init).is_file():
            raise FileNotFoundError(f"--init: checkpoint not found: {self.init}")
        if self.init is not None and self.resume is not None:
            raise ValueError("--init starts a new run from a model's weights, --resume continues a run: "
                             "use one of them")
        if self.init is not None and self.out is not None:
            from ..io.paths import same_file
            for name in RUN_CHECKPOINTS:
                if same_file(self.init, Path(self.out) / name):
                    raise ValueError(f"--init {self.init} is this run's {name} (--out {self.out}), which training "
                                     "overwrites: copy it elsewhere or choose another --out")
        if self.data is not None and not Path(self.data).exists():
            raise FileNotFoundError(f"--data: not found: {self.data}")


#: the checkpoints a run writes into its folder
RUN_CHECKPOINTS = ("best.pt", "last.pt")


def prepare_config(opts: TrainOptions) -> Any:
    """The run's :class:`~spikereg_neuro.config.Config` with the options applied and checked.

    With ``--resume`` and no ``--config`` the checkpoint's own config is used, so the run
    continues the same schedule to the same end. ``--epochs`` is always the total number of
    epochs of the run (on resume: the total to reach, not extra epochs); it must exceed the
    epochs the checkpoint has already trained.
    """
    from ..checkpoint import read_checkpoint
    from ..config import Config, load_config

    opts.check()
    ckpt = read_checkpoint(opts.resume) if opts.resume else None
    if opts.config is None and ckpt is not None and ckpt.get("config"):
        try:
            cfg = Config.from_dict(ckpt["config"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{opts.resume}: its config is not valid here ({exc}); pass --config") from None
    else:
        cfg = load_config(opts.config)
    over: Dict[str, Any] = {}
    if opts.epochs is not None:
        over["epochs"] = opts.epochs
    if opts.steps is not None:
        over["steps_per_epoch"] = opts.steps
    if opts.device:
        over["device"] = opts.device
    if over:
        cfg.train = replace(cfg.train, **over)  # re-runs TrainConfig's checks
    if ckpt is not None:
        _check_same_data(opts, cfg, ckpt)
        done = int(ckpt.get("epoch", 0))
        if cfg.train.epochs <= done:
            hint = ("--epochs is the total to reach, not extra epochs" if opts.epochs is not None
                    else "the run is complete; pass --epochs N (the new total)")
            raise ValueError(f"{opts.resume} has already trained {done} epoch(s) and train.epochs is "
                             f"{cfg.train.epochs}: {hint}, so N > {done}")
    from ..devices import check_device
    check_device(cfg.train.device, "train.device" if opts.device is None else "--device")
    if opts.data is not None and cfg.train.w_field > 0:
        raise ValueError("train.w_field > 0 needs the embedded synthetic data's true fields; --data folders have none")
    world = max(opts.ddp, ddp.world_info()[1])
    if cfg.train.batch_size % world:
        raise ValueError(f"train.batch_size {cfg.train.batch_size} cannot be split over {world} processes "
                         "(the global batch must be a multiple of the process count)")
    return cfg


def _check_same_data(opts: TrainOptions, cfg: Any, ckpt: Dict[str, Any]) -> None:
    """``--resume`` continues a run on the data it trained on: another data section (a
    ``--config`` with another shape, seed ...) or another source (``--data`` against the embedded
    set, or another folder) is a one-line error, not a run that silently changes its data."""
    was = ckpt.get("data") or {}
    kind = "folder" if opts.data is not None else "embedded"
    if was.get("kind") and was["kind"] != kind:
        raise ValueError(f"--resume {opts.resume}: the run trained on the {was['kind']} data"
                         + (f" ({was.get('path')})" if was.get("path") else "") + f", this one would use the {kind} "
                         "data; resume it as it was, or start a new run from its weights with --init")
    if kind == "folder" and was.get("path") and Path(was["path"]).resolve() != Path(opts.data).resolve():
        from .folder_data import folder_records
        here = folder_records(opts.data)[2].get("path")
        if here and Path(here).resolve() != Path(was["path"]).resolve():
            raise ValueError(f"--resume {opts.resume}: the run trained on {was['path']}, not {here}; "
                             "use --init to start a new run from its weights")
    old = ((ckpt.get("config") or {}).get("data")) if kind == "embedded" else None
    if old is not None:
        from ..data.dataset import DataConfig
        before, now = DataConfig.from_dict(old).to_dict(), cfg.data.to_dict()
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            raise ValueError(f"--resume {opts.resume}: the config's data section differs from the run's "
                             f"({', '.join('data.' + k for k in changed)}); resume without --config, or use --init")


def folder_data(path: str) -> Tuple[Any, Optional[Any], Dict[str, Any]]:
    """Training set, validation set (``None`` without labelled ``registration_val`` pairs) and the
    checkpoint's ``data`` record of a ``--data`` folder."""
    from .folder_data import FolderPairs, folder_records

    train, val, info = folder_records(path)
    train_set = FolderPairs(train)
    val_set = FolderPairs(val) if val and all(r.has_labels for r in val) else None
    info = {"kind": "folder", **info, "train_pairs": len(train), "val_pairs": len(val_set or []),
            "labels": train_set.with_labels, "shape": list(train_set.shape),
            "spacing_mm": list(train_set.spacing)}
    return train_set, val_set, info


def init_weights(net: Any, path: str) -> None:
    """Load a checkpoint's trainable weights (synapses) into ``net``; the neuron constants stay
    ``net``'s own (its config's). Shapes must match: one clear error otherwise.

    A model sending its input once (``model.input_once``) that starts from one re-sending it
    gets its first layer's weights scaled by ``1 / current_decay`` of the source (2 at the
    default 0.5; clipped to the 8-bit range): a re-sent input builds a current of
    ``input / current_decay``, a held one a current of once the input.
    """
    import torch

    from ..checkpoint import read_checkpoint
    from ..model.config import ModelConfig
    from ..model.neuron import decay_parameters

    ckpt = read_checkpoint(path)
    state = ckpt["state_dict"]
    own = dict(net.named_parameters())
    decays = {id(p) for p in decay_parameters(net)}   # learned with learn_decays: stay the config's
    want = [k for k, p in own.items() if p.requires_grad and id(p) not in decays]
    missing = [k for k in want if k not in state]
    bad = [k for k in want if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or bad:
        raise ValueError(f"--init {path}: its network differs from the config's "
                         f"(missing {missing[:3]}, other shapes {bad[:3]})")
    src = ModelConfig.from_stored(ckpt["model_config"])
    with torch.no_grad():
        for k in want:
            own[k].copy_(state[k])
        if net.cfg.input_once and not src.input_once and src.neuron.current_decay > 0:
            w, ws = own["enc.0.synapse.weight"], net.enc[0].neuron.w_scale   # SLAYER's 8-bit grid
            w.copy_((w / src.neuron.current_decay).clamp(-256 / ws, 254 / ws))


def run_training(opts: TrainOptions) -> Dict[str, Any]:
    """Train as ``opts`` says on this process (one rank of a group, or alone); rank 0's summary.

    Data: the embedded data set (rank 0 builds the cached file first while the others wait) or,
    with ``--data``, a Learn2Reg / ``pairs.json`` folder (:mod:`.folder_data`); the checkpoint
    records which (``data``). Rank 0 writes ``summary.json`` next to the checkpoints.
    """
    import torch
    from torch.utils.data import DataLoader

    from ..data import RegistrationPairs, build_dataset
    from ..io.atomic import atomic_write_text
    from ..model.unet import SpikeRegUNet
    from .trainer import SpikeRegTrainer

    rank, world = ddp.world_info()
    cfg = prepare_config(opts)
    if world > 1 and cfg.train.device.startswith("cuda"):
        import os
        local = int(os.environ.get("LOCAL_RANK", rank))
        cfg.train = replace(cfg.train, device=f"cuda:{local}")
    if cfg.train.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch sees no CUDA device")
    # the network (and --init's weights, checked here) before the data: a bad --init fails at once.
    # Nothing below draws from torch's global generator before the trainer, so the run is unchanged.
    torch.manual_seed(cfg.train.seed)
    net = SpikeRegUNet(cfg.model)
    if opts.init and not opts.resume:
        init_weights(net, opts.init)
    if opts.data is not None:
        train_set, val_set, data_info = folder_data(opts.data)
    else:
        if rank == 0:
            h5 = build_dataset(cfg.data, opts.cache, progress=opts.progress)
        ddp.barrier()
        if rank != 0:
            h5 = build_dataset(cfg.data, opts.cache, progress=False)
        train_set = RegistrationPairs(h5, "train", true_fields=cfg.train.w_field > 0)
        val_set = RegistrationPairs(h5, "val")
        data_info = {"kind": "embedded", "path": Path(h5).name, "data_config": cfg.data.to_dict()}
    gen = torch.Generator().manual_seed(cfg.train.seed)  # the same pair order on every rank
    train_loader = DataLoader(train_set, batch_size=1, shuffle=True, generator=gen)
    val_loader = (DataLoader(val_set, batch_size=1, shuffle=False)
                  if rank == 0 and val_set is not None else None)
    fresh = opts.out is None or not Path(opts.out).exists()
    trainer = SpikeRegTrainer(net, cfg, opts.out, progress=opts.progress)
    try:
        trainer.data_info = data_info
        if opts.resume:
            trainer.resume(opts.resume)
        elif opts.init:
            if rank == 0:
                print(f"[train] weights from {opts.init}", flush=True)
            if world > 1:
                ddp.broadcast_module(net)
        summary = trainer.train(train_loader, val_loader)
    except BaseException:
        # a run that fails before it wrote anything (a refused --resume, a first step that
        # cannot run) leaves no empty folder behind
        if rank == 0 and fresh and trainer.out.is_dir() and not any(trainer.out.iterdir()):
            trainer.out.rmdir()
        raise
    summary["processes"] = world
    if rank == 0:
        atomic_write_text(trainer.out / "summary.json", json.dumps(summary, indent=2, default=float))
        print(f"best validation Dice {summary['best_val_dice']:.4f}; checkpoints in {trainer.out}")
    return summary
