"""hyperkern: adaptive sparse hyperlayers and hypernetworks, Triton kernels + torch reference.

>>> from hyperkern import sparse_layer, SparseLayer, SparseHyperLayer, SparseLinear
"""

from hyperkern import ops
from hyperkern.attention import SparseSelfAttention
from hyperkern.conv import SparseConv2d
from hyperkern.functional import sparse_layer
from hyperkern.modules import SparseHyperLayer, SparseLayer, SparseLinear

__version__ = "0.1.0"

__all__ = [
    "SparseSelfAttention",
    "SparseConv2d",
    "SparseHyperLayer",
    "SparseLayer",
    "SparseLinear",
    "ops",
    "sparse_layer",
]
