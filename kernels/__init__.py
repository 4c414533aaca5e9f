"""Triton kernels, one file per kernel family: kernels and launchers together.

Each launcher has the signature of its plain-torch counterpart in :mod:`hyperkern.reference`;
:mod:`hyperkern.library` registers both as the implementations of one ``torch.library`` op.
"""

from .contract import contract_dvprime, contract_forward, contract_rows, contract_rows_dot
from .keys import duplicate_mask_from_keys, tuple_keys
from .proportions import proportions_backward, proportions_forward
from .sampling import sample

__all__ = [
    "contract_dvprime",
    "contract_forward",
    "contract_rows",
    "contract_rows_dot",
    "duplicate_mask_from_keys",
    "proportions_backward",
    "proportions_forward",
    "sample",
    "tuple_keys",
]
