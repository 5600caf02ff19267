"""2D slice-classifier backbones (EfficientNetV2, ResNet, DenseNet) with named CAM target layers.

Use :func:`build_network` with a name from :func:`list_networks`; see :mod:`hemwsl.networks.registry`
for the target layers and classifier heads of each family.
"""

from __future__ import annotations

from hemwsl.networks.registry import (
    FAMILIES,
    NETWORKS,
    NetworkSpec,
    PretrainedReport,
    build_network,
    classifier_head,
    get_network_spec,
    get_target_layers,
    list_networks,
    load_pretrained_weights,
    target_layer_names,
)
from hemwsl.networks.utils import adapt_stem_weight
from hemwsl.networks import lse as _lse  # noqa: F401,E402  (registers the lse_<backbone> networks)

__all__ = [
    "FAMILIES",
    "NETWORKS",
    "NetworkSpec",
    "PretrainedReport",
    "adapt_stem_weight",
    "build_network",
    "classifier_head",
    "get_network_spec",
    "get_target_layers",
    "list_networks",
    "load_pretrained_weights",
    "target_layer_names",
]
