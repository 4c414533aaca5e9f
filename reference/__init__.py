"""Plain-torch reference ops: the oracle for every kernel and the CPU path.

The launchers :func:`sample`, :func:`duplicate_mask_from_keys`, :func:`proportions_forward`,
:func:`proportions_backward`, :func:`contract` and :func:`contract_dvprime` have the signatures
of their counterparts in :mod:`hyperkern.kernels`; :mod:`hyperkern.library` registers both as
the implementations of one ``torch.library`` op each.
"""

from .contexts import context_count, from_contexts, to_contexts
from .contract import (
    contract,
    contract_dvprime,
    contract_forward,
    contract_rows,
    contract_rows_dot,
    flatten_tuples,
    row_major_index,
)
from .keys import (
    cantor_fits,
    cantor_keys,
    duplicate_mask,
    duplicate_mask_from_keys,
    linear_fits,
    linear_keys,
    mark_sorted_duplicates,
    resolve_key_kind,
    tuple_keys,
)
from .params import (
    MEANS_TRANSFORMS,
    dims_tensor,
    transform_means,
    transform_means_grad,
    transform_sigmas,
)
from .proportions import (
    log_densities,
    point_values,
    proportions,
    proportions_backward,
    proportions_forward,
)
from .random import philox_word0
from .sampling import default_region, round_means, sample, sample_tuples, samples_per_mean

__all__ = [
    "cantor_fits",
    "cantor_keys",
    "context_count",
    "contract",
    "contract_dvprime",
    "contract_forward",
    "contract_rows",
    "contract_rows_dot",
    "default_region",
    "dims_tensor",
    "duplicate_mask",
    "duplicate_mask_from_keys",
    "flatten_tuples",
    "from_contexts",
    "linear_fits",
    "linear_keys",
    "log_densities",
    "mark_sorted_duplicates",
    "philox_word0",
    "point_values",
    "proportions",
    "proportions_backward",
    "proportions_forward",
    "resolve_key_kind",
    "round_means",
    "row_major_index",
    "sample",
    "sample_tuples",
    "samples_per_mean",
    "to_contexts",
    "transform_means",
    "transform_means_grad",
    "MEANS_TRANSFORMS",
    "transform_sigmas",
    "tuple_keys",
]
