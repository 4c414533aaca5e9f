"""A 2D convolution whose kernel is a learned sparse tensor (a :class:`SparseLayer` per patch)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperkern.modules import SparseLayer
from hyperkern.validation import check_tensor


def _channels(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _kernel_size(value: object) -> tuple[int, int]:
    """``kernel_size`` as ``(kh, kw)``: an int or a pair of odd positive ints."""
    pair = (value, value) if isinstance(value, int) else value
    if not isinstance(pair, Sequence) or len(pair) != 2:
        raise TypeError(f"kernel_size must be an int or a pair of ints, got {value!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in pair):
        raise TypeError(f"kernel_size must be an int or a pair of ints, got {value!r}")
    if not all(s >= 1 and s % 2 == 1 for s in pair):
        raise ValueError(
            f"kernel_size must be odd and >= 1 (stride 1, 'same' padding), got {value!r}"
        )
    return pair[0], pair[1]


class SparseConv2d(SparseLayer):
    """A stride-1, "same"-padded 2D convolution whose kernel is a sparse W of ``k`` entries.

    W has the shape of a ``nn.Conv2d`` weight, ``(out_channels, in_channels, kh, kw)``: each of
    the ``k`` means is a continuous index tuple ``(output channel, input channel, kernel row,
    kernel column)``, so the layer learns which connections inside the kernel window exist. One
    W is shared by every position: the convolution is a :class:`SparseLayer` with
    ``in_shape = (in_channels, kh, kw)`` and ``out_shape = (out_channels,)`` applied to every
    zero-padded ``kh x kw`` patch (``F.unfold``), plus a dense per-output-channel bias. Sampling,
    proportions and the contraction run on the library's ops (Triton on CUDA tensors, the torch
    reference elsewhere; ``backend=`` forces one).

    Shapes: ``forward(x (b, in_channels, H, W), generator=None) -> (b, out_channels, H, W)``.
    Parameters: ``means (k, 4)``, ``sigmas (k,)``, ``values (k,)`` (raw, docs/algorithm.md §1)
    and ``bias (out_channels,)``: ``6 k + out_channels`` in all. :meth:`dense_weight` returns
    the ``(out_channels, in_channels, kh, kw)`` weight that ``eval()`` applies, so that
    ``F.conv2d(x, layer.dense_weight(), layer.bias, padding=(kh // 2, kw // 2))`` equals
    ``layer.eval()(x)``.

    Memory: ``F.unfold`` materialises the patches, ``(b, in_channels * kh * kw, H * W)``
    (``kh * kw`` times the input), and the contraction treats each of the ``b * H * W`` patches
    as one instance of the shared W.

    Args:
        in_channels, out_channels: channels of the input and the output.
        kernel_size: an odd int or a pair of odd ints ``(kh, kw)``.
        k: number of means (nonzeros of W before sampling).
        bias: add a learned bias per output channel (initialised as ``nn.Conv2d`` does).
        generator: a ``torch.Generator`` the module draws its seeds from in training.
        **options: the options of :class:`SparseLayer` (``n_local``, ``n_global``, ``region``,
            ``context_size``, ``backend``, ``eval_mode``, ... see
            :class:`hyperkern.options.SparseOptions`); defaults as there, ``eval_mode="round"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        k: int,
        bias: bool = True,
        generator: torch.Generator | None = None,
        **options,
    ) -> None:
        in_channels = _channels("in_channels", in_channels)
        out_channels = _channels("out_channels", out_channels)
        kh, kw = _kernel_size(kernel_size)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        super().__init__((in_channels, kh, kw), (out_channels,), k, generator=generator, **options)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()  # again, now with the bias

    @property
    def padding(self) -> tuple[int, int]:
        return self.kernel_size[0] // 2, self.kernel_size[1] // 2

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Means uniform over W and raw sigmas 0 (as :class:`SparseLayer`), values ``U(-a, a)``
        with ``a = 1 / sqrt(max(k / out_channels, 1))`` (as :class:`SparseLinear`: about
        ``k / out_channels`` entries per output channel keep the output's scale near the
        input's) and the bias ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` as ``nn.Conv2d`` draws it,
        ``fan_in = in_channels * kh * kw``."""
        super().reset_parameters(generator)
        value_bound = 1 / math.sqrt(max(self.k / self.out_shape[0], 1.0))
        bias = getattr(self, "bias", None)  # not there yet during SparseLayer.__init__
        with torch.no_grad():
            if isinstance(self.values, nn.Parameter):  # not when the values are held fixed
                self.values.uniform_(-value_bound, value_bound, generator=generator)
            if bias is not None:
                bias_bound = 1 / math.sqrt(math.prod(self.in_shape))
                bias.uniform_(-bias_bound, bias_bound, generator=generator)

    def _check_image(self, x: object) -> None:
        check_tensor("x", x, (4,))  # (b, in_channels, H, W), floating
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have in_channels={self.in_channels} channels (dimension 1), got shape "
                f"{tuple(x.shape)}"
            )
        if not all(s > 0 for s in x.shape):
            raise ValueError(f"x must have b, H and W > 0, got shape {tuple(x.shape)}")

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | int | None = None
    ) -> torch.Tensor:
        self._check_image(x)
        b, _, height, width = x.shape
        patches = F.unfold(x, self.kernel_size, padding=self.padding)  # (b, c_in kh kw, H W)
        patches = patches.transpose(1, 2).reshape(b * height * width, *self.in_shape)
        # SparseLayer's contraction of its shared W, (b H W, c_out); the bias is added below
        y = self._apply_layer(patches, self.means, self.sigmas, self.values, generator)
        y = y.reshape(b, height * width, self.out_channels).transpose(1, 2)
        y = y.reshape(b, self.out_channels, height, width)
        if self.bias is not None:
            y = y + self.bias.view(-1, 1, 1)
        return y

    def extra_repr(self) -> str:
        opts = self.options.describe()
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"k={self.k}, bias={self.bias is not None}" + (f", {opts}" if opts else "")
        )
