"""Plain-torch reference ops: the oracle for every kernel and the CPU path.

Each function has the same signature as its counterpart in :mod:`hyperkern.kernels`.
"""

from .contexts import context_count, from_contexts, to_contexts
from .contract import contract, flatten_tuples, row_major_index
from .keys import (
    cantor_fits,
    cantor_keys,
    duplicate_mask,
    linear_fits,
    linear_keys,
    mark_sorted_duplicates,
    resolve_key_kind,
    tuple_keys,
)
from .params import transform_means, transform_sigmas
from .proportions import log_densities, point_values, proportions
from .sampling import default_region, round_means, sample_tuples, samples_per_mean

__all__ = [
    "cantor_fits",
    "cantor_keys",
    "context_count",
    "contract",
    "default_region",
    "duplicate_mask",
    "flatten_tuples",
    "from_contexts",
    "linear_fits",
    "linear_keys",
    "log_densities",
    "mark_sorted_duplicates",
    "point_values",
    "resolve_key_kind",
    "proportions",
    "round_means",
    "row_major_index",
    "sample_tuples",
    "samples_per_mean",
    "to_contexts",
    "transform_means",
    "transform_sigmas",
    "tuple_keys",
]
