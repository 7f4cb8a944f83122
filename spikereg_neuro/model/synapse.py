"""3D convolution synapse in SLAYER's conventions.

SLAYER's own ``synapse.Conv`` is 2D-spatial + time (a ``Conv3d`` over H, W, T). Volumes need
a true 3D spatial kernel applied independently at every time step; this class keeps SLAYER's
synapse API: ``pre_hook_fx`` (weight quantization hook, called as ``fx(weight)`` in the forward
pass and ``fx(weight, descale=True)`` on export), ``weight_scale`` at initialisation,
optional weight normalisation, and a ``shape`` property.

Tensors are SLAYER's layout with time last: ``(N, C, D, H, W, T)``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F

_Triple = Union[int, Sequence[int]]
_CL = torch.channels_last_3d


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, D, H, W, T)`` -> time-major frames ``(T * N, C, D, H, W)`` (a view when time
    is outermost in memory, as in every tensor the network makes)."""
    n, c, d, h, w, t = x.shape
    return x.permute(5, 0, 1, 2, 3, 4).reshape(t * n, c, d, h, w)


def from_frames(f: torch.Tensor, t: int) -> torch.Tensor:
    """Time-major frames ``(T * N, C, D, H, W)`` -> a ``(N, C, D, H, W, T)`` view."""
    return f.reshape(t, f.shape[0] // t, *f.shape[1:]).permute(1, 2, 3, 4, 5, 0)


def upsample_spikes(s: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 upsampling of ``(N, C, D, H, W, T)`` spikes (binary stays binary).

    Channels-last frames are repeated in one copy (an expand of the voxel grid), which keeps
    them channels-last; other layouts go through ``F.interpolate``."""
    f = to_frames(s)
    if f.is_contiguous(memory_format=_CL):
        b, c, d, h, w = f.shape
        g = f.permute(0, 2, 3, 4, 1)[:, :, None, :, None, :, None, :]
        g = g.expand(b, d, 2, h, 2, w, 2, c).reshape(b, 2 * d, 2 * h, 2 * w, c)
        up = g.permute(0, 4, 1, 2, 3)
    else:
        up = F.interpolate(f, scale_factor=2, mode="nearest")
    return from_frames(up, s.shape[-1])


class Upsampled(NamedTuple):
    """A synapse input part that the synapse reads x2 nearest-upsampled (a U-Net decoder's
    coarser source): ``Conv3dSynapse`` convolves it without making the upsampled tensor."""

    spikes: torch.Tensor


class Impulse(NamedTuple):
    """A synapse input part present only at the first of ``steps`` time steps (zero after):
    the image input sent once per patch (``model.input_once``). ``value`` is ``(N, C, D, H, W)``;
    the synapse convolves it once and its output is zero at steps ``1 .. steps - 1``."""

    value: torch.Tensor
    steps: int


def _part_size(p) -> tuple:
    """``(N, D, H, W, T)`` a part stands for (at the synapse's input resolution)."""
    if isinstance(p, Upsampled):
        s = p.spikes.shape
        return (s[0], *(2 * n for n in s[2:5]), s[5])
    if isinstance(p, Impulse):
        return (p.value.shape[0], *p.value.shape[2:], int(p.steps))
    return (p.shape[0], *p.shape[2:])


def _part_tensor(p) -> torch.Tensor:
    """A part's tensor as 6D (an impulse's value with a one-step time axis)."""
    if isinstance(p, Upsampled):
        return p.spikes
    if isinstance(p, Impulse):
        return p.value.unsqueeze(-1)
    return p


#: 1D folding of a 3-tap kernel over x2 nearest upsampling into the 4 taps of a stride-2
#: transposed convolution (padding 1): rows are transposed taps, columns the kernel's taps
_UP2_FOLD = ((0, 0, 1), (0, 1, 1), (1, 1, 0), (1, 0, 0))


def fold_up2(weight: torch.Tensor) -> torch.Tensor:
    """``conv3d(up2(x), weight, padding=1) == conv_transpose3d(x, fold_up2(weight), stride=2,
    padding=1)``: each output phase sums the taps that read the same coarse voxel (8 taps per
    output instead of 27). ``weight`` ``(O, I, 3, 3, 3)`` -> ``(I, O, 4, 4, 4)``."""
    m = torch.tensor(_UP2_FOLD, dtype=weight.dtype, device=weight.device)
    return torch.einsum("ap,bq,cr,oipqr->ioabc", m, m, m, weight)


def sum_steps(s: torch.Tensor) -> torch.Tensor:
    """``(N, C, D, H, W, T)`` -> the sum over time ``(N, C, D, H, W, 1)``, added frame by frame."""
    t, n = s.shape[-1], s.shape[0]
    f = to_frames(s)
    acc = f[:n].clone()
    for k in range(1, t):
        acc = acc + f[k * n:(k + 1) * n]
    return from_frames(acc, 1)


def _triple(v: _Triple) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    v = tuple(int(x) for x in v)
    if len(v) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v}")
    return v  # type: ignore[return-value]


class Conv3dSynapse(torch.nn.Conv3d):
    """3D spatial convolution applied at each time step of a ``(N, C, D, H, W, T)`` tensor.

    Parameters mirror ``lava.lib.dl.slayer.synapse.Conv``; there is no bias (SLAYER synapses
    have none; Loihi biases live in the neuron).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _Triple = 3,
        stride: _Triple = 1,
        padding: Optional[_Triple] = None,
        dilation: _Triple = 1,
        groups: int = 1,
        weight_scale: float = 1.0,
        weight_norm: bool = False,
        pre_hook_fx: Optional[Callable[..., torch.Tensor]] = None,
    ) -> None:
        kernel_size = _triple(kernel_size)
        if padding is None:
            padding = tuple(k // 2 for k in kernel_size)
        super().__init__(
            in_channels, out_channels, kernel_size, stride=_triple(stride),
            padding=_triple(padding), dilation=_triple(dilation), groups=groups, bias=False,
        )
        if weight_scale != 1:
            self.weight = torch.nn.Parameter(weight_scale * self.weight.data)
        self._pre_hook_fx = pre_hook_fx
        self.weight_norm_enabled = False
        if weight_norm:
            self.enable_weight_norm()

    # -- SLAYER GenericLayer API ------------------------------------------------------------
    @property
    def pre_hook_fx(self) -> Optional[Callable[..., torch.Tensor]]:
        """Weight pre-hook (typically the quantizer)."""
        return self._pre_hook_fx

    @pre_hook_fx.setter
    def pre_hook_fx(self, fx: Optional[Callable[..., torch.Tensor]]) -> None:
        self._pre_hook_fx = fx

    def enable_weight_norm(self) -> None:
        torch.nn.utils.weight_norm(self, name="weight")
        self.weight_norm_enabled = True

    def disable_weight_norm(self) -> None:
        torch.nn.utils.remove_weight_norm(self, name="weight")
        self.weight_norm_enabled = False

    @property
    def shape(self) -> torch.Size:
        return self.weight.shape

    def effective_weight(self) -> torch.Tensor:
        """The weight the forward pass uses (after ``pre_hook_fx``)."""
        return self.weight if self._pre_hook_fx is None else self._pre_hook_fx(self.weight)

    def output_shape(self, in_shape: Sequence[int]) -> tuple[int, int, int]:
        """Spatial output shape for a spatial input shape ``(D, H, W)``."""
        out = []
        for n, k, s, p, d in zip(in_shape, self.kernel_size, self.stride, self.padding, self.dilation):
            out.append((n + 2 * p - d * (k - 1) - 1) // s + 1)
        return tuple(out)  # type: ignore[return-value]

    def forward(self, x: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:  # noqa: D401
        """``(N, C, D, H, W, T) -> (N, C_out, D', H', W', T)``.

        ``x`` may be a list of parts whose channels are the input's channels in order (the
        concatenation the synapse reads, e.g. an upsampled source and a skip): each part is
        convolved with its slice of the weight and the results are added, the same sums as
        convolving the concatenation (up to float rounding), without making it. An
        :class:`Upsampled` part is read x2 nearest-upsampled, by a polyphase convolution at its
        own resolution.

        The frames are convolved in time-major order, channels-last (2-3x faster on a CPU for
        these narrow layers), and the result is a view of that time-major tensor, which the
        fused neuron reads without a copy. An input constant over time (a stride-0 time axis,
        like the graded image input) is convolved once and expanded: the same numbers as
        convolving every frame. An :class:`Impulse` part (the image input sent once) is
        convolved once and is zero at the later steps.
        """
        parts = [x] if isinstance(x, (torch.Tensor, Impulse)) else list(x)
        sizes = {_part_size(p) for p in parts}
        tensors = [_part_tensor(p) for p in parts]
        if any(p.dim() != 6 for p in tensors) or len(sizes) != 1:
            raise ValueError("Conv3dSynapse expects (N, C, D, H, W, T) inputs of one shape (Upsampled "
                             f"parts at half size), got {[tuple(p.shape) for p in tensors]}")
        if sum(p.shape[1] for p in tensors) != self.in_channels:
            raise ValueError(f"Conv3dSynapse expects {self.in_channels} input channels, got "
                             f"{sum(p.shape[1] for p in tensors)}")
        w = self.effective_weight()
        t = next(iter(sizes))[-1]
        y, c0 = None, 0
        for p, src in zip(parts, tensors):
            wp = w[:, c0:c0 + src.shape[1]]
            c0 += src.shape[1]
            if isinstance(p, Upsampled):
                yp = from_frames(self.conv_up2_frames(to_frames(src), wp), t)
            elif isinstance(p, Impulse):          # at step 0 only: once, zeros after
                first = self.conv_frames(p.value, wp)
                frames = torch.empty((t * first.shape[0], *first.shape[1:]), dtype=first.dtype,
                                     device=first.device, memory_format=_CL).zero_()
                frames[:first.shape[0]] = first
                yp = from_frames(frames, t)
            elif t > 1 and p.stride(-1) == 0:    # constant over time: once, expanded
                yp = self.conv_frames(p[..., 0], wp).unsqueeze(-1).expand(-1, -1, -1, -1, -1, t)
            else:
                yp = from_frames(self.conv_frames(to_frames(p), wp), t)
            y = yp if y is None else y + yp
        return y

    def conv_up2_frames(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The convolution of x2 nearest-upsampled frames, polyphase (:func:`fold_up2`) when the
        geometry is the decoder's (3^3, stride 1, padding 1), else by upsampling first."""
        plain = (tuple(self.kernel_size) == (3, 3, 3) and tuple(self.stride) == (1, 1, 1)
                 and tuple(self.padding) == (1, 1, 1) and tuple(self.dilation) == (1, 1, 1)
                 and self.groups == 1)
        if not plain:
            return self.conv_frames(F.interpolate(x, scale_factor=2, mode="nearest"), weight)
        return F.conv_transpose3d(x.contiguous(memory_format=_CL),
                                  fold_up2(weight).contiguous(memory_format=_CL), None, 2, 1)

    def conv_frames(self, x: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The convolution of ``(B, C, D, H, W)`` frames (channels-last in and out).

        On a CPU this calls oneDNN directly: ``F.conv3d`` falls back to a 5-10x slower native
        kernel for a single narrow frame (batch 1, ``B * C * D * H <= 20480``), which is what
        the whole-volume first layer and read-out are."""
        w = (self.effective_weight() if weight is None else weight).contiguous(memory_format=_CL)
        x = x.contiguous(memory_format=_CL)
        if x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available():
            return torch.mkldnn_convolution(x, w, None, self.padding, self.stride, self.dilation, self.groups)
        return F.conv3d(x, w, None, self.stride, self.padding, self.dilation, self.groups)
