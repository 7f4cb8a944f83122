"""The optional C time loop of :class:`~spikereg_neuro.model.fused_alif.FusedALIF` (``alif_kernel.c``).

The kernel is a small C file without torch headers: compiled on first use with the system C
compiler (well under a second) into ``$SPIKEREG_CACHE/native`` (default
``~/.cache/spikereg-neuro/native``), keyed by the source, the flags and the machine, and called
through :mod:`ctypes` on the tensors' memory (the GIL is released, so the elements are split over
``torch.get_num_threads()`` threads). ``make setup`` builds it; anything that stops it (no
compiler, a read-only cache, ``SPIKEREG_NATIVE=0``) leaves the pure-torch loop, which gives the
same numbers (both are tested against SLAYER). :func:`status` says which one runs and why.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import torch

_SOURCE = Path(__file__).with_name("alif_kernel.c")
_lib: Optional[ctypes.CDLL] = None
_lib_path: Optional[Path] = None    # the compiled kernel that is loaded
_why: Optional[str] = None          # why the kernel is not used (None: not tried yet, or loaded)
_tried = False
_pool: Optional[ThreadPoolExecutor] = None

_F, _I, _P, _L = ctypes.c_float, ctypes.c_int, ctypes.c_void_p, ctypes.c_int64
FRAC = 12                           # SLAYER's decays are 12-bit fractions (p_scale 4096)


def odd_part(m: int) -> int:
    """The odd part of ``m`` (a product with ``m / 4096`` needs that many more bits)."""
    while m and not m & 1:
        m >>= 1
    return max(m, 1)


def use_complement(m: int) -> bool:
    """Whether the decay ``rstz(x m, 12)`` is cheaper in its complement form
    ``x - sign(x) ceil(|x| d / 4096)`` (``d = 4096 - m``; ``fused_alif._rstz`` and the C kernel)."""
    return odd_part((1 << FRAC) - m) < odd_part(m)


def decay_cost(m: int) -> int:
    """How many times ``|x|`` of mantissa the decay ``rstz(x m, 12)`` needs in its cheaper exact
    form (direct, or the complement: :func:`use_complement`)."""
    return min(odd_part(m), odd_part((1 << FRAC) - m))


MIN_PER_THREAD = 65536              # elements per thread below which one thread does it all


def _cpu_flags() -> Sequence[str]:
    """Target flags: the widest x86-64 level this CPU has (the cache key holds it), else none."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    if {"avx2", "fma", "bmi2"} <= flags:
        return ["-march=x86-64-v3"]
    if "sse4_1" in flags:
        return ["-march=x86-64-v2"]
    return []


def _flags() -> list:
    # no FMA contraction (torch rounds each multiply and add); no errno or traps, so that trunc,
    # ceil and copysign become vector instructions (the values are the same IEEE results)
    return ["-O3", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", *_cpu_flags()]


def cache_dir() -> Path:
    """Where compiled kernels are kept (``$SPIKEREG_CACHE/native`` or ``~/.cache/spikereg-neuro/native``)."""
    root = os.environ.get("SPIKEREG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "spikereg-neuro")
    return Path(root) / "native"


def _library_path(cc: str) -> Path:
    key = hashlib.sha256(_SOURCE.read_bytes() + " ".join([cc, *_flags(), platform.platform()]).encode())
    return cache_dir() / f"alif_kernel-{key.hexdigest()[:16]}.so"


def build(force: bool = False) -> Path:
    """Compile the kernel into the cache (atomically) unless it is there; returns its path."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    out = _library_path(cc)
    if out.is_file() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        res = subprocess.run([cc, *_flags(), str(_SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True,
                             timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{cc} failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _load() -> Optional[ctypes.CDLL]:
    global _lib, _lib_path, _why, _tried
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("SPIKEREG_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        _why = "disabled by SPIKEREG_NATIVE=0"
        return None
    try:
        path = build()
        lib = ctypes.CDLL(str(path))
        lib.alif_forward.argtypes = [_P, _L, _L, _L, _L, _L, _P, _P, _F, _F, _F, _I, _F, _F, _I, _F, _F, _I,
                                     _F, _F, _F, _F, _F, _I, _F, _F]
        lib.alif_forward.restype = ctypes.c_int
        lib.alif_backward.argtypes = [_P, _L, _L, _L, _L, _P, _F, _F]
        lib.alif_backward.restype = None
        _lib, _lib_path = lib, path
    except Exception as exc:  # no compiler, read-only cache, ...: the torch loop runs instead
        _why = f"not built: {exc}"
    return _lib


def status() -> str:
    """Which FusedALIF time loop runs here, in words."""
    lib = _load()
    return f"C kernel ({_lib_path})" if lib else f"pure torch ({_why})"


def available() -> bool:
    """Whether the C kernel is loaded (builds it on first call)."""
    return _load() is not None


def _split(n: int, fn) -> None:
    """``fn(begin, end)`` over ``[0, n)``, in ``torch.get_num_threads()`` pieces in parallel."""
    global _pool
    k = max(1, min(torch.get_num_threads(), n // MIN_PER_THREAD))
    if k == 1:
        fn(0, n)
        return
    if _pool is None or _pool._max_workers < k:  # noqa: SLF001
        _pool = ThreadPoolExecutor(max_workers=k)
    edges = [n * i // k for i in range(k + 1)]
    for f in [_pool.submit(fn, a, b) for a, b in zip(edges[:-1], edges[1:])]:
        f.result()


def _decay_args(m: int):
    return m / (1 << FRAC), ((1 << FRAC) - m) / (1 << FRAC), int(use_complement(m))


def forward(x: torch.Tensor, const_in: bool, T: int, spikes: torch.Tensor, margin: Optional[torch.Tensor],
            k, out_div: float) -> bool:
    """The float32 time loop of raw input ``x`` (``(T, ...)``, or one frame for every step with
    ``const_in``) into ``spikes`` (and ``margin``) for the constants ``k`` (``fused_alif._Constants``,
    no threshold adaptation); see ``alif_kernel.c``. False: some value left float32's exact range
    (or was not finite) and the outputs are to be computed another way."""
    lib = _load()
    n = spikes[0].numel()
    xs = 0 if const_in else x.stride(0)
    big = float(1 << 24)
    args = (float(k.s_scale), *_decay_args(k.m_c), *_decay_args(k.m_v), *_decay_args(k.m_r),
            big / decay_cost(k.m_c), big / decay_cost(k.m_v), big / decay_cost(k.m_r),
            float(k.th0), float(2 * k.th0), int(k.graded), float(k.s_scale * out_div), float(1.0 / k.s_scale))
    xp, sp, ts = x.data_ptr(), spikes.data_ptr(), spikes.stride(0)
    mp = margin.data_ptr() if margin is not None else None
    bad = []
    _split(n, lambda a, b: bad.append(lib.alif_forward(xp, xs, T, a, b, ts, sp, mp, *args)))
    return not any(bad)


def backward(g: torch.Tensor, out: torch.Tensor, g_v: float, g_c: float) -> None:
    """The gradient recurrences of ``g`` ``(T, ...)`` into ``out`` (same layout)."""
    lib = _load()
    n, T = g[0].numel(), g.shape[0]
    gp, op, ts = g.data_ptr(), out.data_ptr(), g.stride(0)
    _split(n, lambda a, b: lib.alif_backward(gp, T, a, b, ts, op, float(g_v), float(g_c)))


def same_dense_frames(*ts: torch.Tensor) -> bool:
    """Whether every ``(T, ...)`` tensor is float32 on the CPU, its frames dense and laid out
    alike (contiguous or channels-last), one frame after another: element ``i`` of frame ``t``
    at ``t * stride(0) + i`` in all of them."""
    ref = ts[0][0]
    for t in ts:
        if t.device.type != "cpu" or t.dtype != torch.float32:
            return False
        f = t[0]
        if f.stride() != ref.stride() or f.shape != ref.shape:
            return False
        if not (f.is_contiguous() or (f.dim() == 5 and f.is_contiguous(memory_format=torch.channels_last_3d))):
            return False
        if t.shape[0] > 1 and t.stride(0) != f.numel():
            return False
    return True
