"""Triton kernels, one file per kernel family (kernel, launcher and autograd glue together).

Each public op here has the signature of its counterpart in :mod:`hyperkern.reference`.
"""
