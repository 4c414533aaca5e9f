"""Hypernetworks: target-network plumbing, full / chunked / scaling / per-sample hypernetworks,
Ha et al.'s static (CNN) and dynamic (HyperLSTM) hypernetworks, hyperfan init and a
gradient-flow check."""

from .chunked import ChunkedHypernetwork
from .full import FullHypernetwork
from .gradflow import GradientFlowReport, check_gradient_flow
from .ha_static import StaticHyperCNN, StaticHyperConvGenerator
from .hyperlstm import HyperLSTM, HyperLSTMCell
from .init import hyperfan_head_, seeded_generator, target_fans, target_variances
from .per_sample import PATHS, PerSampleMLPHypernetwork, per_sample_linear
from .scaling import ScalingHypernetwork
from .target import (
    ParamSpec,
    TargetHolder,
    count_params,
    flatten_params,
    functional_forward,
    param_specs,
    per_sample_forward,
    unflatten_params,
)

__all__ = [
    "PATHS",
    "ChunkedHypernetwork",
    "FullHypernetwork",
    "GradientFlowReport",
    "HyperLSTM",
    "HyperLSTMCell",
    "ParamSpec",
    "PerSampleMLPHypernetwork",
    "ScalingHypernetwork",
    "StaticHyperCNN",
    "StaticHyperConvGenerator",
    "TargetHolder",
    "check_gradient_flow",
    "count_params",
    "flatten_params",
    "functional_forward",
    "hyperfan_head_",
    "param_specs",
    "per_sample_forward",
    "per_sample_linear",
    "seeded_generator",
    "target_fans",
    "target_variances",
    "unflatten_params",
]
