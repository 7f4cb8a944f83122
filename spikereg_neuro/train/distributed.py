"""Multi-process data-parallel training with ``torch.distributed`` (gloo on the CPU, NCCL on GPUs).

Two ways to start it, both running :func:`spikereg_neuro.train.run.run_training` on every rank:

* ``torchrun --nproc_per_node N -m spikereg_neuro.train ...`` (``env://`` rendezvous; any
  number of machines);
* ``spikereg-neuro train --ddp N ...``: :func:`spawn_training` starts N local processes
  (``torch.multiprocessing.spawn``, a file rendezvous in a temporary folder).

Every rank holds the same weights (broadcast from rank 0 when the trainer is built) and draws
its share of the global batch; after each backward pass the gradients are averaged over the
ranks (:func:`average_gradients`), so every rank takes the same optimiser step. Losses that
are not means over samples are made global first (:func:`global_mean`, differentiable), so one
step of N processes equals one step of one process on the concatenated batch.
"""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Tuple

import torch
import torch.distributed as dist

__all__ = ["world_info", "init_from_env", "backend_for", "average_gradients", "broadcast_module",
           "global_mean", "all_reduce_max", "gather_objects", "barrier", "spawn_training",
           "default_rank_threads"]

#: collective timeout: rank 0 validates while the others wait in their next all-reduce
TIMEOUT = _dt.timedelta(hours=2)


def world_info() -> Tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def backend_for(device: str) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1); ``False`` if none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist.is_available() and dist.is_initialized()
    dist.init_process_group(backend_for(device), init_method="env://", timeout=TIMEOUT)
    return True


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers to every rank (in place)."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace every ``.grad`` by its mean over the ranks (one flat all-reduce)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    k = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[k:k + n].view_as(g))
        k += n


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the ranks, differentiable (backward all-reduces the gradient)."""
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x) / dist.get_world_size()


def all_reduce_max(value: int) -> int:
    """The largest ``value`` over the ranks."""
    t = torch.tensor([int(value)], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather_objects(obj: Any) -> List[Any]:
    """``obj`` of every rank, in rank order (a list of one without a process group)."""
    rank, world = world_info()
    if world == 1:
        return [obj]
    out: List[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if world_info()[1] > 1:
        dist.barrier()


# ---------------------------------------------------------------------------------- spawning
_USER_ERRORS = ("ValueError", "FileNotFoundError", "KeyError", "NotADirectoryError", "PermissionError")


def _worker(rank: int, world: int, init_file: str, train: Callable[[Any], dict], opts: Any,
            result_file: str) -> None:
    """One spawned rank: join the group, ``train(opts)``, leave (rank 0 writes the summary)."""
    import json

    device = str(opts.device or "cpu")
    dist.init_process_group(backend_for(device), init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=TIMEOUT)
    try:
        torch.set_num_threads(default_rank_threads(world))
        summary = train(opts)
        if rank == 0:
            Path(result_file).write_text(json.dumps(summary, default=float))
    finally:
        dist.destroy_process_group()


def spawn_training(train: Callable[[Any], dict], opts: Any, nprocs: int) -> dict:
    """Run ``train(opts)`` (:func:`~spikereg_neuro.train.run.run_training`, passed in so this
    module needs nothing of the trainer's) on ``nprocs`` local processes; ``train`` must be a
    module-level function (it is pickled to the spawned processes).

    Returns rank 0's summary. A failure on any rank raises ``RuntimeError`` naming it.
    """
    import json

    import torch.multiprocessing as mp

    if nprocs < 2:
        raise ValueError(f"--ddp needs at least 2 processes, got {nprocs}")
    with tempfile.TemporaryDirectory(prefix="spikereg-ddp-") as tmp:
        init_file = str(Path(tmp) / "rendezvous")
        result_file = str(Path(tmp) / "summary.json")
        try:
            mp.spawn(_worker, args=(nprocs, init_file, train, opts, result_file), nprocs=nprocs, join=True)
        except mp.ProcessRaisedException as exc:
            lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else str(exc)
            kind, _, msg = last.partition(": ")
            if kind.split(".")[-1] in _USER_ERRORS:  # an expected error on a rank: keep it one line
                raise ValueError(msg) from None
            raise RuntimeError(f"a training process failed: {last}") from None
        except mp.ProcessExitedException as exc:
            raise RuntimeError(f"a training process died: {exc}") from None
        return json.loads(Path(result_file).read_text())


def default_rank_threads(world: Optional[int] = None) -> int:
    """CPU threads per rank that share the machine's cores evenly."""
    world = world or world_info()[1]
    return max(1, (os.cpu_count() or 1) // world)
