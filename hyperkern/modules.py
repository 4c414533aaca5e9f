"""``nn.Module`` front ends of the sparse layer."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from hyperkern.functional import sparse_layer
from hyperkern.reference import transform_means, transform_sigmas
from hyperkern.seeds import check_generator, seed_tensor
from hyperkern.validation import check_count, check_positive_shape

try:  # runs eager Python inside a compiled graph (torch >= 2.10)
    from torch._dynamo.decorators import leaf_function
except ImportError:  # pragma: no cover - older torch: module generators work in eager only
    leaf_function = None


class _GeneratorSource(nn.Module):
    """Holds a module's ``torch.Generator`` so that seeds are drawn from it at run time, also
    inside a compiled graph (dynamo cannot trace a generator object itself)."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.generator = generator


def _draw_seed(source: _GeneratorSource, like: torch.Tensor) -> tuple[torch.Tensor]:
    return (seed_tensor(source.generator, like.device),)


if leaf_function is not None:
    _draw_seed = leaf_function(_draw_seed)

    @_draw_seed.register_fake
    def _(source: _GeneratorSource, like: torch.Tensor) -> tuple[torch.Tensor]:
        return (like.new_empty((), dtype=torch.int64),)


class _SparseOptions(nn.Module):
    """Shapes and sampling options shared by the sparse modules."""

    def __init__(
        self,
        in_shape: Sequence[int] | int,
        out_shape: Sequence[int] | int,
        k: int,
        n_local: int = 2,
        n_global: int = 2,
        region: Sequence[int] | None = None,
        sigma_scale: float = 0.1,
        min_sigma: float = 0.0,
        context_size: int | None = None,
        chunk_size: int | None = None,
        backend: str = "auto",
        deterministic: bool | None = None,
        validate: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_shape = check_positive_shape("in_shape", in_shape)
        self.out_shape = check_positive_shape("out_shape", out_shape)
        check_count("k", k, minimum=1)
        self.k = k
        self.options = dict(
            n_local=n_local, n_global=n_global, region=None if region is None else tuple(region),
            sigma_scale=sigma_scale, min_sigma=min_sigma, context_size=context_size,
            chunk_size=chunk_size, backend=backend, deterministic=deterministic, validate=validate,
        )  # fmt: skip
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                "generator (of the module) must be a torch.Generator, "
                f"got {type(generator).__name__}"
            )
        self.seed_source = None if generator is None else _GeneratorSource(generator)

    @property
    def dims(self) -> tuple[int, ...]:
        """Shape of W: ``out_shape + in_shape``."""
        return self.out_shape + self.in_shape

    @property
    def rank(self) -> int:
        return len(self.dims)

    def _apply_layer(self, x, means, sigmas, values, generator) -> torch.Tensor:
        check_generator(generator)
        if generator is None and self.seed_source is not None and self.training:
            (generator,) = _draw_seed(self.seed_source, x)
        return sparse_layer(
            x, means, sigmas, values, self.out_shape, generator=generator,
            training=self.training, **self.options,
        )  # fmt: skip

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items() if v is not None)
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}, k={self.k}, {opts}"


class SparseLayer(_SparseOptions):
    """A sparse W with free parameters, shared by the whole batch.

    Parameters: ``means (k, r)`` and ``sigmas (k,)`` raw (see SPEC §1), ``values (k,)``.
    ``forward(x (b, *in_shape), generator=None) -> (b, *out_shape)``. In ``eval()`` mode the
    means are rounded and carry their full value (no sampling).
    """

    def __init__(self, in_shape, out_shape, k: int, **options) -> None:
        super().__init__(in_shape, out_shape, k, **options)
        self.means = nn.Parameter(torch.empty(k, self.rank))
        self.sigmas = nn.Parameter(torch.empty(k))
        self.values = nn.Parameter(torch.empty(k))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Means uniform over W (raw ``logit(U(0.02, 0.98))``), raw sigmas 0, values ``N(0, 1)``.

        Uniform spread covers W evenly; ``sigmoid(N(0, 1))`` would crowd means into its centre.
        """
        with torch.no_grad():
            self.means.uniform_(0.02, 0.98, generator=generator)
            self.means.copy_(torch.logit(self.means))
            self.sigmas.zero_()
            self.values.normal_(generator=generator)

    def index_means(self) -> torch.Tensor:
        """Means in index space, ``(k, r)``."""
        return transform_means(self.means, self.dims)

    def index_sigmas(self) -> torch.Tensor:
        """Per-column variances in index space, ``(k, r)``."""
        opts = self.options
        return transform_sigmas(self.sigmas, self.dims, opts["sigma_scale"], opts["min_sigma"])

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | int | None = None
    ) -> torch.Tensor:
        return self._apply_layer(x, self.means, self.sigmas, self.values, generator)


class SparseHyperLayer(_SparseOptions):
    """An adaptive sparse layer: ``source(x)`` gives W's parameters per instance.

    ``source`` maps ``x (b, *in_shape)`` to ``(means (b, k, r), sigmas (b, k), values (b, k))``
    (raw, as in SPEC §1). ``forward(x, generator=None) -> (b, *out_shape)``.
    """

    def __init__(self, in_shape, out_shape, k: int, source: Callable, **options) -> None:
        super().__init__(in_shape, out_shape, k, **options)
        if not callable(source):
            raise TypeError(f"source must be callable (an nn.Module), got {type(source).__name__}")
        self.source = source

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | int | None = None
    ) -> torch.Tensor:
        params = self.source(x)
        if not (isinstance(params, (tuple, list)) and len(params) == 3):
            raise TypeError("source(x) must return (means (b, k, r), sigmas (b, k), values (b, k))")
        return self._apply_layer(x, *params, generator)


class SparseLinear(SparseLayer):
    """Drop-in for ``nn.Linear`` whose weight is a learned sparse matrix of ``k`` entries.

    ``forward(x (*, in_features)) -> (*, out_features)``; ``bias`` as in ``nn.Linear``.
    """

    def __init__(
        self, in_features: int, out_features: int, k: int, bias: bool = True, **options
    ) -> None:
        super().__init__((in_features,), (out_features,), k, **options)
        self.in_features = in_features
        self.out_features = out_features
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_bias()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Means uniform over W, raw sigmas 0, values ``U(-a, a)``, ``a = 1/sqrt(k / out)``."""
        super().reset_parameters(generator)
        bound = 1 / math.sqrt(max(self.k / self.out_shape[0], 1.0))
        with torch.no_grad():
            self.values.uniform_(-bound, bound, generator=generator)

    def reset_bias(self) -> None:
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            with torch.no_grad():
                self.bias.uniform_(-bound, bound)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | int | None = None
    ) -> torch.Tensor:
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"x must have shape (*, in_features={self.in_features}), got {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        y = super().forward(x.reshape(-1, self.in_features), generator)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, k={self.k}, "
            f"bias={self.bias is not None}"
        )
