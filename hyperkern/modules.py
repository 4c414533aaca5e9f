"""``nn.Module`` front ends of the sparse layer."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from hyperkern.functional import apply
from hyperkern.options import SparseOptions, check_sizes
from hyperkern.reference import transform_means, transform_sigmas
from hyperkern.seeds import check_generator, seed_tensor
from hyperkern.template import check_template

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


class _SparseModule(nn.Module):
    """Shapes, options (:class:`hyperkern.options.SparseOptions`) and the optional generator
    shared by the sparse modules. Extra keyword arguments are the options' fields."""

    def __init__(
        self,
        in_shape: Sequence[int] | int,
        out_shape: Sequence[int] | int,
        k: int,
        generator: torch.Generator | None = None,
        template: torch.Tensor | None = None,
        learn: Sequence[int] | None = None,
        **options: object,
    ) -> None:
        super().__init__()
        self.in_shape = check_sizes("in_shape", in_shape, free=True)
        self.out_shape = check_sizes("out_shape", out_shape)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        self.k = k
        self.learn = check_template(template, learn, k, self.dims)
        self.register_buffer("template", None if template is None else template.clone())
        self.options = SparseOptions(**options)  # type: ignore[arg-type]
        self.options.check_region(self.dims)
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
        """Columns of the means: W's rank, or the learned columns of a template."""
        return len(self.dims) if self.learn is None else len(self.learn)

    @property
    def learned_dims(self) -> tuple[int, ...]:
        """Sizes of the columns the means live in."""
        dims = self.dims if self.learn is None else tuple(self.dims[c] for c in self.learn)
        if None in dims:
            raise ValueError(
                f"in_shape {self.in_shape} has free sizes (None): index-space means need an "
                "input size; call the layer, or use a fixed in_shape"
            )
        return dims

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        given = tuple(x.shape[1:])
        fixed = len(given) == len(self.in_shape) and all(
            s is None or s == g for s, g in zip(self.in_shape, given, strict=True)
        )
        if x.dim() != 1 + len(self.in_shape) or not fixed or 0 in given:
            raise ValueError(
                f"x must have shape (b, *in_shape) = (b, {', '.join(map(str, self.in_shape))}), "
                f"got {tuple(x.shape)}"
            )

    def _apply_layer(self, x, means, sigmas, values, generator) -> torch.Tensor:
        self._check_input(x)
        check_generator(generator)
        if generator is None and self.seed_source is not None and self.training:
            (generator,) = _draw_seed(self.seed_source, x)
        return apply(
            x, means, sigmas, values, self.out_shape, self.options, generator, self.training,
            self.template, self.learn,
        )  # fmt: skip

    def extra_repr(self) -> str:
        opts = self.options.describe()
        learn = "" if self.learn is None else f", learn={self.learn}"
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}, k={self.k}{learn}" + (
            f", {opts}" if opts else ""
        )


class SparseLayer(_SparseModule):
    """A sparse W with free parameters, shared by the whole batch.

    Parameters: ``means (k, r)`` and ``sigmas (k,)`` raw (docs/algorithm.md §1), ``values (k,)``.
    ``forward(x (b, *in_shape), generator=None) -> (b, *out_shape)``. In ``eval()`` mode it
    computes what ``eval_mode`` says (default ``"round"``, the paper's evaluation: means
    rounded, full values); :meth:`dense_weight` shows that W.

    Args (besides the options of :class:`hyperkern.options.SparseOptions`, ``generator``,
    ``template`` and ``learn``):
        fix_values: hold every value at 1 (a buffer, not learned), as the original's ``-F``.
        per_instance: draw one W per instance of the batch instead of one per batch (the
            original code's semantics; the contraction then runs per instance).
        bias: ``"none"`` / ``False``, ``"dense"`` / ``True`` (one learned value per output, zero
            at start) or ``"sparse"`` (a sparse vector of ``bias_k`` learned positions over the
            output, itself a :class:`SparseLayer` on a constant input).
        bias_k: means of the sparse bias (default ``max(1, k // 8)``).
    """

    def __init__(
        self,
        in_shape,
        out_shape,
        k: int,
        fix_values: bool = False,
        per_instance: bool = False,
        bias: str | bool = "none",
        bias_k: int | None = None,
        **options,
    ) -> None:
        super().__init__(in_shape, out_shape, k, **options)
        self.means = nn.Parameter(torch.empty(k, self.rank))
        self.sigmas = nn.Parameter(torch.empty(k))
        if fix_values:
            self.register_buffer("values", torch.ones(k))
        else:
            self.values = nn.Parameter(torch.empty(k))
        self.fix_values, self.per_instance = bool(fix_values), bool(per_instance)
        self.bias, self.sparse_bias = _make_bias(bias, bias_k, k, self.out_shape, self.options)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Means uniform over W (raw ``logit(U(0.02, 0.98))`` for the sigmoid transform,
        ``U(0, d - 1)`` for the others), raw sigmas 0, values ``N(0, 1)`` (unless fixed).

        Uniform spread covers W evenly; ``sigmoid(N(0, 1))`` would crowd means into its centre.
        """
        with torch.no_grad():
            self.means.uniform_(0.02, 0.98, generator=generator)
            if self.options.means_transform == "sigmoid":  # scale-free: any input size
                self.means.copy_(torch.logit(self.means))
            else:
                upper = torch.tensor([d - 1 for d in self.learned_dims], dtype=self.means.dtype)
                self.means.mul_(upper.to(self.means.device))
            self.sigmas.zero_()
            if not self.fix_values:
                self.values.normal_(generator=generator)

    def index_means(self) -> torch.Tensor:
        """Means in index space, ``(k, r)`` (the learned columns only, with a template)."""
        return transform_means(self.means, self.learned_dims, self.options.means_transform)

    def index_sigmas(self) -> torch.Tensor:
        """Per-column variances in index space, ``(k, r)``."""
        opts = self.options
        return transform_sigmas(self.sigmas, self.learned_dims, opts.sigma_scale, opts.min_sigma)

    @torch.no_grad()
    def dense_weight(
        self, eval_mode: str | None = None, in_shape: Sequence[int] | None = None
    ) -> torch.Tensor:
        """The dense W ``(*out_shape, *in_shape)`` that ``eval()`` applies (``eval_mode``:
        ``"round"``, ``"expected"`` or ``"sample"``; default the module's) to inputs of
        ``in_shape`` (default the module's; needed where it has free sizes). Builds W column by
        column from the identity, so it costs one eval call on ``prod(in_shape)`` inputs."""
        options = dataclasses.replace(self.options, eval_mode=eval_mode or self.options.eval_mode)
        in_shape = tuple(in_shape or self.in_shape)
        if None in in_shape:
            raise ValueError(f"in_shape {in_shape} has free sizes: pass dense_weight(in_shape=...)")
        n_in = math.prod(in_shape)
        eye = torch.eye(n_in, dtype=self.means.dtype, device=self.means.device)
        y = apply(
            eye.reshape(n_in, *in_shape),
            self.means,
            self.sigmas,
            self.values,
            self.out_shape,
            options,
            training=False,
            template=self.template,
            learn=self.learn,
        )
        return y.reshape(n_in, -1).T.reshape(*self.out_shape, *in_shape)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | int | None = None
    ) -> torch.Tensor:
        params = (self.means, self.sigmas, self.values)
        if self.per_instance and self.training:  # one W per instance: the batched path
            params = tuple(p.expand(x.shape[0], *p.shape) for p in params)
        y = self._apply_layer(x, *params, generator)
        if self.bias is not None:
            y = y + self.bias
        if self.sparse_bias is not None:
            y = y + self.sparse_bias(x.new_ones(x.shape[0], 1), generator)
        return y


def _make_bias(bias, bias_k, k, out_shape, options):
    """``(dense bias parameter or None, sparse bias module or None)`` of a layer."""
    kind = {True: "dense", False: "none"}.get(bias, bias) if isinstance(bias, bool) else bias
    if kind not in ("none", "dense", "sparse"):
        raise ValueError(f"bias must be 'none', 'dense', 'sparse' or a bool, got {bias!r}")
    if kind == "dense":
        return nn.Parameter(torch.zeros(out_shape)), None
    if kind == "sparse":
        fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        fields.update(region=None, context_size=None, chunk_size=None, normalize=None)
        return None, SparseLayer((1,), out_shape, bias_k or max(1, k // 8), **fields)
    return None, None


class SparseHyperLayer(_SparseModule):
    """An adaptive sparse layer: ``source(x)`` gives W's parameters per instance.

    ``source`` maps ``x (b, *in_shape)`` to ``(means (b, k, r), sigmas (b, k), values (b, k))``
    (raw, docs/algorithm.md §1). ``forward(x, generator=None) -> (b, *out_shape)``.
    """

    def __init__(self, in_shape, out_shape, k: int, source: Callable, **options) -> None:
        super().__init__(in_shape, out_shape, k, **options)
        if not callable(source):
            raise TypeError(f"source must be callable (an nn.Module), got {type(source).__name__}")
        self.source = source

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | int | None = None
    ) -> torch.Tensor:
        self._check_input(x)
        params = self.source(x)
        if not (isinstance(params, (tuple, list)) and len(params) == 3):
            raise TypeError("source(x) must return (means (b, k, r), sigmas (b, k), values (b, k))")
        b = x.shape[0]
        expected = ((b, self.k, self.rank), (b, self.k), (b, self.k))
        for name, t, shape in zip(("means", "sigmas", "values"), params, expected, strict=True):
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(
                    f"source(x) must return {name} of shape {shape} (b, k={self.k}, r={self.rank}"
                    f"), got {got}"
                )
        return self._apply_layer(x, *params, generator)


class SparseLinear(SparseLayer):
    """Drop-in for ``nn.Linear`` whose weight is a learned sparse matrix of ``k`` entries.

    ``forward(x (*, in_features)) -> (*, out_features)``; ``bias`` as in ``nn.Linear``.

    Defaults differ from :class:`SparseLayer` where a drop-in needs it:

    - ``eval_mode="expected"``: ``eval()`` applies the average of ``eval_samples`` (8) draws
      with fixed seeds, a deterministic estimate of the W that training saw, so validation
      error tracks training error (rounding the means, the paper's evaluation, is one option
      away: ``eval_mode="round"``);
    - ``context_size=128``: duplicates and normalisers are per context of 128 means, so a step
      costs O(k) instead of O(k^2); each mean then spreads its value over its own context's
      samples only. ``context_size=None`` restores the paper's all-means normalisation.
    """

    def __init__(
        self, in_features: int, out_features: int, k: int, bias: bool = True, **options
    ) -> None:
        options.setdefault("eval_mode", "expected")
        options.setdefault("context_size", 128)
        super().__init__((in_features,), (out_features,), k, bias=bias, **options)
        self.in_features = in_features
        self.out_features = out_features
        self.reset_bias()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Means uniform over W, raw sigmas 0, values ``U(-a, a)``, ``a = 1/sqrt(k / out)``."""
        super().reset_parameters(generator)
        bound = 1 / math.sqrt(max(self.k / self.out_shape[0], 1.0))
        if not self.fix_values:
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
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, k={self.k}, "
            f"bias={self.bias is not None or self.sparse_bias is not None}"
        )
