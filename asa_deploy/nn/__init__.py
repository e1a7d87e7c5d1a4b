"""Neurons (LIF as in the paper, IAF as on chip), attention (none, SA, ASA) and the spec-driven builder."""

from asa_deploy.nn.attention import AdvancedSpatialAttention, SpatialAttention, make_attention
from asa_deploy.nn.network import (
    ATTENTION_KINDS,
    RECIPES,
    ModelSpec,
    SpikingNetwork,
    apply_recipe,
    build_network,
    list_models,
    load_model_spec,
    models_dir,
)
from asa_deploy.nn.neurons import Rectangular, make_neuron

__all__ = [
    "ATTENTION_KINDS", "AdvancedSpatialAttention", "ModelSpec", "RECIPES", "Rectangular",
    "SpatialAttention", "SpikingNetwork", "apply_recipe", "build_network", "list_models", "load_model_spec", "make_attention",
    "make_neuron", "models_dir",
]
