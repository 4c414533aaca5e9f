"""Triton kernels, one file per kernel family (kernel, launcher and autograd glue together).

Each public op here has the signature of its counterpart in :mod:`hyperkern.reference`.
Import as ``hyperkern.kernels`` only: the modules register ``hyperkern::`` custom ops.
"""

from .contract import contract
from .keys import cantor_keys, duplicate_mask, linear_keys
from .proportions import proportions

__all__ = ["cantor_keys", "contract", "duplicate_mask", "linear_keys", "proportions"]
