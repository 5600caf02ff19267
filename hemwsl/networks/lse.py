"""The U-shaped LSE heatmap network of Chen & Kuo 2026 on any registered backbone.

Chen & Kuo 2026 build a decoder on the encoder of a trained slice classifier, replace the global
average pooling by Log-Sum-Exp (LSE) pooling at every decoder level, supervise every level with the
slice label and tie the levels together with a heatmap consistency loss; the heatmap is the
highest-resolution score map, at 1/4 of the input size (128 x 128 at 512 px, 32 x 32 at 128 px).

Layout of :class:`LSEHeatmapNet` (module paths, usable with ``model.get_submodule``):

* ``encoder``: the registered backbone (:func:`hemwsl.networks.build_network`) with its final Linear
  replaced by ``nn.Identity``; it runs as a plain sequence of its modules (:data:`ENCODER_PLANS`) and
  hands the decoder four stage outputs at strides 4, 8, 16 and 32 (``E_1 .. E_4``).
* ``levels.3`` .. ``levels.0`` (coarse to fine, strides 32 .. 4), each an :class:`LSELevel`:

  - ``levels.i.conv``: the convolution block: 1x1 conv of the concatenated skip ``E_{i+1}`` and the
    upsampled features of the coarser level (level 3: ``E_4`` alone) -> channel LayerNorm -> ReLU ->
    squeeze-and-excitation (MONAI's ``ChannelSELayer``). Its output is the level's feature map, and the
    CAM target layer of the level (GradCAM and friends run there as on any layer).
  - ``levels.i.classifier``: 1x1 conv to ``num_classes`` score maps ``f_i`` (any + five subtypes, or any).
  - ``levels.i.pool``: :class:`LSEPool`, ``l_i = LSE_r(f_i)`` per class, the level's logits.
  - ``levels.i.up`` (levels 3..1): the upsampling block: 1x1 conv to the next finer level's width ->
    3x3 conv to 4x that width -> depth-to-space (``nn.PixelShuffle(2)``) -> channel LayerNorm.

``forward(x)`` returns the finest level's logits ``l_0`` ``(B, K)`` like every registered classifier, so
training, evaluation, TTA and the CAM engine use it unchanged; ``forward(x, levels=True)`` returns
``(maps [f_0..f_3], logits [l_0..l_3])`` for :class:`LSEHeatmapLoss`. The heatmap of a level is its
score map: :meth:`LSEHeatmapNet.score_maps` and the CAM method ``lse_heatmap``
(:mod:`hemwsl.cam.methods.lseheatmap`).

Reference:
    Chen & Kuo 2026, a U-shaped network with Log-Sum-Exp pooling for weakly supervised ICH heatmaps
    and subtype masks (section 3: architecture, loss, Algorithm 1).
    Pinheiro & Collobert, "From Image-level to Pixel-level Labeling with Convolutional Networks", CVPR
    2015 (LSE pooling).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import ChannelSELayer
from torch import Tensor, nn

from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.networks.registry import (
    LSE_PREFIX,
    NETWORKS,
    NetworkSpec,
    _read_state_dict,
    build_network,
    classifier_head,
    get_network_spec,
    load_pretrained_weights,
    register_network,
    resolve_pretrained_path,
)

__all__ = [
    "ENCODER_PLANS",
    "LSE_LEVEL_LAYERS",
    "LSE_FORMS",
    "LSEPool",
    "lse_pool",
    "pixel_self_training_loss",
    "LayerNorm2d",
    "LSELevel",
    "LSEHeatmapNet",
    "LSEHeatmapLoss",
    "encoder_plan",
    "build_lse_heatmap_net",
    "REF_LSE",
    "lse_subtype_masks",
    "subtype_volumes_ml",
]

logger = logging.getLogger(__name__)

#: CAM target layers of every LSE heatmap network, coarse (stride 32) to fine (stride 4, the heatmap).
LSE_LEVEL_LAYERS: tuple[str, ...] = ("levels.3.conv", "levels.2.conv", "levels.1.conv", "levels.0.conv")


def _timm_effnet_seq(model: nn.Module) -> list[str]:
    return ["conv_stem", "bn1"] + [f"blocks.{i}" for i in range(len(model.blocks))] + ["conv_head", "bn2"]


def _tv_effnet_seq(model: nn.Module) -> list[str]:
    return [f"features.{i}" for i in range(len(model.features))]


def _resnet_seq(model: nn.Module) -> list[str]:
    return ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]


def _densenet_seq(model: nn.Module) -> list[str]:
    return [f"features.{name}" for name, _ in model.features.named_children()]


#: family/implementation -> function(model) -> the module paths that, run one after the other, give the
#: backbone's final feature map (the input of its global pooling).
ENCODER_PLANS = {
    "efficientnet_v2/timm": _timm_effnet_seq,
    "efficientnet_lite/timm": _timm_effnet_seq,
    "efficientnet_v2/torchvision": _tv_effnet_seq,
    "resnet/torchvision": _resnet_seq,
    "densenet/torchvision": _densenet_seq,
}


@torch.no_grad()
def encoder_plan(backbone: str, model: nn.Module, in_channels: int) -> tuple[list[str], list[str], list[int]]:
    """``(sequence, stages, widths)`` of a registered backbone: the module paths that, run one after the
    other, give its final feature map; the last of them at strides 4, 8 and 16 and the final one (stride
    32), found by running a 64 x 64 probe through the sequence; and those four outputs' channels.
    (ResNet: ``layer1..4``; DenseNet: ``denseblock1..3``, ``relu5``; EfficientNetV2-S: ``features.2, .3,
    .5, .7``; timm EfficientNetV2-B0 / Lite: ``blocks.1, .2, .4``, ``bn2``.)"""
    spec = get_network_spec(backbone)
    key = f"{spec.family}/{spec.implementation}"
    if key not in ENCODER_PLANS:
        raise HemwslInputError(f"backbone {backbone!r} ({key}) has no encoder plan for the LSE heatmap network")
    seq = ENCODER_PLANS[key](model)
    was = model.training
    model.eval()
    try:
        param = next(model.parameters())
        if param.is_meta:
            raise HemwslInputError("an LSE heatmap network cannot be built on the meta device")
        x = torch.zeros(1, in_channels, 64, 64, device=param.device, dtype=param.dtype)
        last: dict[int, tuple[str, int]] = {}
        for path in seq:
            x = model.get_submodule(path)(x)
            last[64 // int(x.shape[-1])] = (path, int(x.shape[1]))
    finally:
        model.train(was)
    if int(x.shape[-1]) != 2 or any(s not in last for s in (4, 8, 16)):
        raise HemwslInputError(f"backbone {backbone!r}: the encoder sequence does not reach strides 4, 8, 16 and 32")
    picked = [last[4], last[8], last[16], (seq[-1], int(x.shape[1]))]
    return seq, [p for p, _ in picked], [c for _, c in picked]


#: The two forms of LSE pooling: ``mean`` (normalised, the default) and ``sum`` (Chen & Kuo's eq. 4).
LSE_FORMS: tuple[str, ...] = ("mean", "sum")


def _check_r(r: Any) -> float:
    try:
        r = float(r)
    except (TypeError, ValueError):
        raise HemwslInputError(f"lse_r must be a positive number, got {r!r}") from None
    if not (r > 0 and math.isfinite(r)):
        raise HemwslInputError(f"lse_r must be a positive number, got {r!r}")
    return r


def lse_pool(x: Tensor, r: float = 3.0, form: str = "mean") -> Tensor:
    """Log-Sum-Exp pooling over the last two dimensions.

    * ``form="mean"`` (default): ``(1/r) log(mean_ij exp(r x_ij))``, the normalised form of Pinheiro &
      Collobert 2015. The logit lies between the mean (``r -> 0``) and the maximum (``r -> inf``) of the
      map whatever its size, so the four levels' logits share one scale, and ``r`` says how max-like the
      pooling is relative to the score map itself.
    * ``form="sum"``: ``log(sum_ij exp(r x_ij))``, Chen & Kuo 2026's eq. 4 as printed. It equals
      ``r * mean-form + log(n)``: the logit is ``r`` times larger and grows with the map's size ``n``.
      Because the score maps are learned, its ``r`` mostly rescales them (eq. 4 at ``r`` is the ``mean``
      form at ``r = 1`` on maps scaled by ``r``, plus ``log n``); the consistency loss (eq. 7) sees maps
      of that scale.

    In both forms the gradient is proportional to the softmax ``exp(r x_j) / sum_i exp(r x_i)`` (eq. 5;
    exactly it for ``mean``, ``r`` times it for ``sum``): each position's weight grows with the
    exponential of its score.

    Args:
        x: ``(..., h, w)`` score maps.
        r: sharpness (> 0).
        form: ``"mean"`` or ``"sum"``.

    Returns:
        ``(...)`` pooled values.
    """
    r = _check_r(r)
    check_choice("LSE form", form, LSE_FORMS)
    flat = x.flatten(-2)
    if form == "sum":
        return torch.logsumexp(r * flat, dim=-1)
    return (torch.logsumexp(r * flat, dim=-1) - math.log(flat.shape[-1])) / r


class LSEPool(nn.Module):
    """:func:`lse_pool` as a module: ``(B, K, h, w) -> (B, K)``.

    Args:
        r: sharpness (> 0); Chen & Kuo 2026 use 3 (with ``form="sum"``).
        form: ``"mean"`` (normalised, default) or ``"sum"`` (eq. 4).
    """

    def __init__(self, r: float = 3.0, form: str = "mean") -> None:
        super().__init__()
        self.r = _check_r(r)
        check_choice("LSE form", form, LSE_FORMS)
        self.form = form

    def forward(self, x: Tensor) -> Tensor:
        return lse_pool(x, self.r, self.form)

    def extra_repr(self) -> str:
        return f"r={self.r}, form={self.form!r}"


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each position of a ``(B, C, H, W)`` map (as in ConvNeXt)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, channels: int, se_reduction: int, se_gate: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 1), LayerNorm2d(channels), nn.ReLU()]
        if se_gate:
            layers.append(ChannelSELayer(2, channels, r=max(1, min(se_reduction, channels))))
        super().__init__(*layers)


class _UpBlock(nn.Sequential):
    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, channels, 1),
            nn.Conv2d(channels, 4 * channels, 3, padding=1),
            nn.PixelShuffle(2),
            LayerNorm2d(channels),
        )


class LSELevel(nn.Module):
    """One decoder level: convolution block, classification layer, LSE pooling, upsampling block.

    Args:
        in_channels: channels of the concatenated skip and upsampled features.
        channels: the level's width.
        num_classes: score maps per level.
        up_channels: width of the next finer level (``None`` at level 0: no upsampling block).
        r: LSE sharpness.
        se_reduction: squeeze-and-excitation reduction ratio.
        form: LSE form (:func:`lse_pool`).
        se_gate: whether the convolution block ends with the squeeze-and-excitation gate (Chen & Kuo: yes).
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, up_channels: int | None,
                 r: float = 3.0, se_reduction: int = 4, form: str = "mean", se_gate: bool = True) -> None:
        super().__init__()
        self.conv = _ConvBlock(in_channels, channels, se_reduction, se_gate)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.pool = LSEPool(r, form)
        self.up = _UpBlock(channels, up_channels) if up_channels is not None else None


class LSEHeatmapNet(nn.Module):
    """U-shaped LSE heatmap network (Chen & Kuo 2026) on a registered backbone.

    Args:
        backbone: a registry name of :func:`hemwsl.networks.list_networks` (EfficientNetV2, ResNet,
            DenseNet).
        in_channels: input channels (2.5D slices x CT windows).
        num_classes: 1 ("any") or 6 (any + five subtypes).
        r: LSE sharpness of every level (Chen & Kuo: 3).
        decoder_channels: widths of levels 0..3 (fine to coarse); default the encoder's stage widths,
            as in Chen & Kuo, except that level 3 is capped at 512 (hemwsl's choice: the deepest
            EfficientNet stage is 1,280 wide at 1/32 of the input).
        form: LSE pooling form, ``"mean"`` (normalised, default) or ``"sum"`` (Chen & Kuo's eq. 4).
        se_reduction: squeeze-and-excitation reduction ratio.
        se_gate: end each convolution block with the squeeze-and-excitation gate (Chen & Kuo: yes). The
            gate multiplies every position of a level by statistics of the whole slice; ``False`` removes it
            (hemwsl's ablation: each position's score then depends on the slice only through the features).
        dropout: dropout on the encoder's deepest features during training.
        **backbone_kwargs: passed to the backbone's constructor.
    """

    def __init__(self, backbone: str, in_channels: int = 3, num_classes: int = 1, r: float = 3.0,
                 decoder_channels: Sequence[int] | None = None, se_reduction: int = 4, dropout: float = 0.0,
                 form: str = "mean", se_gate: bool = True, **backbone_kwargs: Any) -> None:
        super().__init__()
        if not isinstance(se_gate, bool):
            raise HemwslInputError(f"se_gate must be true or false, got {se_gate!r}")
        self.backbone = backbone
        self.encoder = build_network(backbone, in_channels=in_channels, num_classes=num_classes, **backbone_kwargs)
        self._sequence, self._stages, widths = encoder_plan(backbone, self.encoder, in_channels)
        # the classifier head is not used: drop its parameters (DDP needs every parameter used)
        linear = classifier_head(backbone)[1]
        parent, _, attr = linear.rpartition(".")
        setattr(self.encoder.get_submodule(parent) if parent else self.encoder, attr, nn.Identity())
        if decoder_channels is None:
            decoder_channels = [*widths[:3], min(widths[3], 512)]
        try:
            decoder_channels = [int(c) for c in decoder_channels]
        except (TypeError, ValueError):
            raise HemwslInputError(f"decoder_channels must be 4 positive ints (levels 0..3), got {decoder_channels!r}") from None
        if not isinstance(se_reduction, int) or isinstance(se_reduction, bool) or se_reduction < 1:
            raise HemwslInputError(f"se_reduction must be a positive integer, got {se_reduction!r}")
        if len(decoder_channels) != 4 or min(decoder_channels) < 1:
            raise HemwslInputError(f"decoder_channels must be 4 positive ints (levels 0..3), got {decoder_channels}")
        self.decoder_channels = decoder_channels
        self.num_classes = int(num_classes)
        self.dropout = nn.Dropout2d(float(dropout)) if dropout else nn.Identity()
        levels = []
        for i in range(4):
            in_ch = widths[i] + (decoder_channels[i] if i < 3 else 0)
            up = decoder_channels[i - 1] if i > 0 else None
            levels.append(LSELevel(in_ch, decoder_channels[i], num_classes, up, r=r, se_reduction=se_reduction,
                                   form=form, se_gate=se_gate))
        self.levels = nn.ModuleList(levels)
        self.r = float(r)
        self.form = form
        self.se_gate = se_gate

    def encode(self, x: Tensor) -> list[Tensor]:
        """The encoder's stage outputs ``[E_1, E_2, E_3, E_4]`` at strides 4, 8, 16, 32."""
        feats = []
        stages = set(self._stages)
        for path in self._sequence:
            x = self.encoder.get_submodule(path)(x)
            if path in stages:
                feats.append(x)
        return feats

    def decode(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """``(maps [f_0..f_3], logits [l_0..l_3])`` from the encoder's stage outputs."""
        maps: list[Tensor | None] = [None] * 4
        logits: list[Tensor | None] = [None] * 4
        up: Tensor | None = None
        for i in (3, 2, 1, 0):
            skip = self.dropout(feats[3]) if i == 3 else feats[i]
            if up is not None:
                if up.shape[-2:] != skip.shape[-2:]:
                    up = F.interpolate(up, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                skip = torch.cat([skip, up], dim=1)
            level = self.levels[i]
            h = level.conv(skip)
            maps[i] = level.classifier(h)
            logits[i] = level.pool(maps[i])
            up = level.up(h) if level.up is not None else None
        return maps, logits  # type: ignore[return-value]

    def forward(self, x: Tensor, levels: bool = False) -> Tensor | tuple[list[Tensor], list[Tensor]]:
        """Logits ``l_0`` ``(B, K)``; with ``levels=True`` the score maps and logits of all four levels."""
        maps, logits = self.decode(self.encode(x))
        if levels:
            return maps, logits
        return logits[0]

    def score_maps(self, x: Tensor) -> list[Tensor]:
        """``[f_0, f_1, f_2, f_3]``: the raw score maps (before LSE pooling), finest first."""
        return self.decode(self.encode(x))[0]

    def level_classifier(self, layer: str) -> nn.Conv2d:
        """The 1x1 classification conv that turns the features of target layer ``layer``
        (``levels.i.conv``) into the level's score maps."""
        if layer not in LSE_LEVEL_LAYERS:
            raise HemwslInputError(
                f"{layer!r} is not a level of the LSE heatmap network; accepted: {', '.join(LSE_LEVEL_LAYERS)}"
            )
        return self.levels[int(layer.split(".")[1])].classifier

    def load_encoder_weights(self, path: str | os.PathLike) -> None:
        """Initialise the encoder from a checkpoint of the plain backbone (a classifier trained by
        ``bundles/ich_classifier``, Chen & Kuo's first stage, or other local weights of that backbone);
        its classifier head is ignored."""
        linear = classifier_head(self.backbone)[1]
        report = load_pretrained_weights(self.encoder, path, name=self.backbone, ignore_prefixes=(linear + ".",))
        logger.info("%s: encoder of the LSE heatmap network initialised (%d tensors)", path, len(report.loaded))


def _is_full_checkpoint(path: Path) -> bool:
    """Whether a weights file holds a whole LSE heatmap network (its decoder levels), not only a backbone."""
    return any(k.startswith("levels.") for k in _read_state_dict(path))


def build_lse_heatmap_net(backbone: str, in_channels: int = 3, num_classes: int = 1, dropout: float = 0.0,
                          pretrained_path: str | os.PathLike | None = None, lse_r: float = 3.0,
                          decoder_channels: Sequence[int] | None = None, se_reduction: int = 4,
                          lse_form: str = "mean", se_gate: bool = True, **kwargs: Any) -> LSEHeatmapNet:
    """Build an :class:`LSEHeatmapNet` (the builder behind the ``lse_<backbone>`` registry names).

    Args:
        backbone: the encoder's registry name.
        in_channels, num_classes, dropout: as for every registered network.
        pretrained_path: a checkpoint of the plain backbone (e.g. the same fold's classifier: Chen &
            Kuo's two stages) loaded into the encoder, or a checkpoint of a whole LSE heatmap network.
        lse_r: LSE sharpness (Chen & Kuo: 3).
        lse_form: ``"mean"`` (normalised LSE, default) or ``"sum"`` (Chen & Kuo's eq. 4), see :func:`lse_pool`.
        decoder_channels: decoder widths of levels 0..3 (default: the encoder's stage widths).
        se_reduction: squeeze-and-excitation reduction ratio.
        se_gate: keep the squeeze-and-excitation gate of each decoder block (Chen & Kuo); ``False`` removes it.
        **kwargs: passed to the backbone's constructor.
    """
    net = LSEHeatmapNet(backbone, in_channels=in_channels, num_classes=num_classes, r=lse_r,
                        decoder_channels=decoder_channels, se_reduction=se_reduction, dropout=dropout,
                        form=lse_form, se_gate=se_gate, **kwargs)
    if pretrained_path is not None:
        path = resolve_pretrained_path(backbone, pretrained_path)
        if _is_full_checkpoint(path):
            from hemwsl.networks.checkpoint import load_weights

            device = next(net.parameters()).device
            load_weights(net, path, device=device).train()
        else:
            net.load_encoder_weights(path)
    return net


class LSEHeatmapLoss(nn.Module):
    """Chen & Kuo 2026's loss: deep supervision of every level plus heatmap consistency.

    ``C = sum_i alpha_i BCE(l_i, y)`` (eq. 6) and ``H = sum_i beta_i MSE(AvgPool2(f_i), f_{i+1})``
    (eq. 7); the loss is ``C + consistency_weight * H`` (``consistency_weight = 1``: Chen & Kuo's sum;
    0 turns the consistency loss off for the ablation). BCE is ``BCEWithLogitsLoss`` with ``pos_weight``;
    MSE is the mean over classes and positions; the pooling is a 2x2 average (adaptive when a level is
    not exactly half the size of the finer one).

    Args:
        alpha: weights of levels 0..3 (Chen & Kuo: 2, 0.5, 0.25, 0.125).
        beta: weights of the pairs (0, 1), (1, 2), (2, 3) (Chen & Kuo: 0.5, 0.25, 0.125).
        pos_weight: ``(K,)`` positive-class weights of the BCE, or ``None``.
        consistency_weight: factor of ``H``.
        area_weight: factor of an area penalty that is not in Chen & Kuo (0, the default, leaves their
            loss unchanged): ``A = mean over the positive (sample, class) pairs of mean_hw sigmoid(f_0)``, the
            share of the finest map a positive slice lights up. A network that can reach a high ``l_0`` by
            raising the whole brain a little (see docs/heatmap_network.md) must then raise few positions a
            lot (a size constraint in the spirit of Pathak et al. 2015 and Kervadec et al. 2019).

        pixel_weight: factor of a self-training term that is not in Chen & Kuo either (0, the default: off). The
            target is then ``(y, m)``, ``m`` a ``(B, 1, H, W)`` map of codes at the input size: 0 background,
            1 blood, 2 unknown (:func:`hemwsl.pseudo.selftrain.self_training_targets`: the components the
            network's own validated heatmap recipe chose on slices labelled positive are blood, every pixel of a
            slice labelled negative and every pixel outside the candidate intensities is background, the other
            candidates are unknown). Each level's "any" map ``f_i`` is compared with the share of blood among the
            known pixels of each of its cells (average pooling of the codes to the map's size), by a BCE weighted
            with the share of known pixels; ``P`` is the mean over the four levels.

    Called as ``loss((maps, logits), target)`` with the output of ``LSEHeatmapNet(x, levels=True)``;
    ``last_terms`` then holds the detached ``C`` and ``H`` (and ``P``).
    """

    def __init__(self, alpha: Sequence[float] = (2.0, 0.5, 0.25, 0.125), beta: Sequence[float] = (0.5, 0.25, 0.125),
                 pos_weight: Tensor | None = None, consistency_weight: float = 1.0, area_weight: float = 0.0,
                 pixel_weight: float = 0.0) -> None:
        super().__init__()
        try:
            self.alpha = [float(a) for a in alpha]
            self.beta = [float(b) for b in beta]
            consistency_weight = float(consistency_weight)
            area_weight = float(area_weight)
        except (TypeError, ValueError):
            raise HemwslInputError(f"lse_alpha, lse_beta and lse_consistency must be numbers, got {alpha!r}, {beta!r}, "
                                   f"{consistency_weight!r}") from None
        if len(self.alpha) != 4 or len(self.beta) != 3:
            raise HemwslInputError(f"LSEHeatmapLoss needs 4 alpha and 3 beta weights, got {alpha} and {beta}")
        self.consistency_weight = float(consistency_weight)
        if area_weight < 0:
            raise HemwslInputError(f"lse_area must be >= 0, got {area_weight}")
        self.area_weight = area_weight
        try:
            pixel_weight = float(pixel_weight)
        except (TypeError, ValueError):
            raise HemwslInputError(f"lse_pixel must be a number, got {pixel_weight!r}") from None
        if pixel_weight < 0:
            raise HemwslInputError(f"lse_pixel must be >= 0, got {pixel_weight}")
        self.pixel_weight = pixel_weight
        self.bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        self.last_terms: dict[str, float] = {}

    def forward(self, output: tuple[Sequence[Tensor], Sequence[Tensor]], target: Tensor) -> Tensor:
        if not (isinstance(output, (tuple, list)) and len(output) == 2 and len(output[0]) == 4):
            raise HemwslInputError(
                "LSEHeatmapLoss needs the (maps, logits) of LSEHeatmapNet(x, levels=True); "
                "train with hemwsl.engines.classifier.LevelsInferer"
            )
        maps, logits = output
        codes = None
        if isinstance(target, (tuple, list)):
            if len(target) != 2:
                raise HemwslInputError("LSEHeatmapLoss target must be y or (y, pixel codes)")
            target, codes = target
        if self.pixel_weight > 0 and codes is None:
            raise HemwslInputError("lse_pixel > 0 needs self-training targets: set pseudo_masks (the bundle's "
                                   "PrepareBatch mask_key) or give the loss (y, codes)")
        target = target.to(logits[0].dtype)
        c = sum(a * self.bce(l, target) for a, l in zip(self.alpha, logits))
        h = logits[0].new_zeros(())
        for i, b in enumerate(self.beta):
            coarse = maps[i + 1]
            pooled = F.adaptive_avg_pool2d(maps[i], coarse.shape[-2:])
            h = h + b * F.mse_loss(pooled, coarse)
        total = c + self.consistency_weight * h
        self.last_terms = {"classification": float(c.detach()), "consistency": float(h.detach())}
        if self.area_weight > 0:
            share = torch.sigmoid(maps[0]).mean(dim=(2, 3))  # (B, K)
            area = (share * target).sum() / target.sum().clamp_min(1.0)
            self.last_terms["area"] = float(area.detach())
            total = total + self.area_weight * area
        if self.pixel_weight > 0:
            p = sum(pixel_self_training_loss(f[:, :1], codes) for f in maps) / len(maps)
            self.last_terms["pixel"] = float(p.detach())
            total = total + self.pixel_weight * p
        return total


def pixel_self_training_loss(scores: Tensor, codes: Tensor) -> Tensor:
    """The self-training term of :class:`LSEHeatmapLoss` for one level: ``scores`` ``(B, 1, h, w)`` logits and
    ``codes`` ``(B, 1, H, W)`` (0 background, 1 blood, 2 unknown) at the input size. Per cell of the map, the
    target is the share of blood among its known pixels and the weight the share of known pixels; the loss is
    the weighted mean BCE (0 when no pixel is known)."""
    codes = codes.to(scores.dtype)
    blood = F.adaptive_avg_pool2d((codes == 1).to(scores.dtype), scores.shape[-2:])
    known = F.adaptive_avg_pool2d((codes != 2).to(scores.dtype), scores.shape[-2:])
    target = (blood / known.clamp_min(1e-6)).clamp(0.0, 1.0)
    bce = F.binary_cross_entropy_with_logits(scores, target, reduction="none")
    return (bce * known).sum() / known.sum().clamp_min(1e-6)


@torch.no_grad()
def lse_subtype_masks(net: LSEHeatmapNet, x: Tensor, rule: Any, level: int = 0,
                      brain: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Chen & Kuo 2026's Algorithm 1 on the multi-label head of an LSE heatmap network.

    One forward gives the slice probabilities ``sigmoid(l_0)`` and the score maps ``f_level``; for the
    five subtypes (outputs 1..5 of an any + five subtypes network) a subtype is kept where its
    probability reaches its class threshold (Youden on validation: ``rule.fit``), its heatmap
    ``sigmoid(f_level)``, upsampled bilinearly to the input size, is thresholded at the mask threshold,
    and each pixel takes the present subtype with the largest map (:class:`hemwsl.thresholds.SubtypeRule`).
    Chen & Kuo apply GradCAM at the finest level, ReLU and divide each map by its maximum before their
    mask thresholds (25..200 of 255); here the heatmap is the network's own ``sigmoid(f)`` and the
    normalisation is the rule's (``SubtypeRule(normalisation="max")`` divides by the maximum as they do;
    its default ``"minmax"`` also subtracts the minimum), so their Table 4 thresholds do not carry over:
    choose the mask thresholds on validation data.

    Args:
        net: a trained ``lse_*`` network with 6 outputs (any + :data:`hemwsl.constants.SUBTYPES`).
        x: ``(B, C, H, W)`` slices.
        rule: a fitted :class:`hemwsl.thresholds.SubtypeRule` (5 class thresholds).
        level: the decoder level whose maps are used (0: the finest, 1/4 of the input).
        brain: optional ``(B, H, W)`` brain masks (labels outside are 0).

    Returns:
        ``(labels (B, H, W) int64: 0 background, k + 1 subtype k; probabilities (B, 5))``.
    """
    if not isinstance(net, LSEHeatmapNet) or net.num_classes != 6:
        raise HemwslInputError("Algorithm 1 needs an lse_* network with 6 outputs (any + five subtypes)")
    if isinstance(level, bool) or level not in (0, 1, 2, 3):
        raise HemwslInputError(f"level must be 0, 1, 2 or 3 (0: the finest), got {level!r}")
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise HemwslInputError(f"expected a (B, C, H, W) batch of slices, got {getattr(x, 'shape', type(x).__name__)}")
    was = net.training
    net.eval()
    try:
        maps, logits = net(x, levels=True)
    finally:
        net.train(was)
    probs = torch.sigmoid(logits[0][:, 1:]).float()
    heat = torch.sigmoid(maps[level][:, 1:]).float()
    heat = F.interpolate(heat, size=x.shape[-2:], mode="bilinear", align_corners=False)
    labels = rule(probs.cpu().numpy(), heat.cpu().numpy(), None if brain is None else brain.cpu().numpy())
    return torch.as_tensor(labels), probs.cpu()


def subtype_volumes_ml(labels: Any, spacing: Sequence[float], names: Sequence[str] | None = None) -> dict[str, float]:
    """Volume in mL of each subtype of a label volume (0 background, ``k + 1`` subtype ``k``) with voxel
    ``spacing`` in mm; the union under ``"any"``."""
    import numpy as np

    from hemwsl.constants import SUBTYPES

    names = list(names or SUBTYPES)
    lab = np.asarray(labels)
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    out = {name: float((lab == k + 1).sum()) * voxel_ml for k, name in enumerate(names)}
    out["any"] = float((lab > 0).sum()) * voxel_ml
    return out


REF_LSE = "Chen & Kuo 2026, U-shaped network with Log-Sum-Exp pooling for weakly supervised ICH heatmaps"


def _register() -> None:
    """``lse_<backbone>`` for every plain backbone of the registry (``hemwsl.networks`` imports this module)."""
    for base in [s for s in list(NETWORKS.values()) if s.family not in ("lse_heatmap", "slice_sequence")]:
        if LSE_PREFIX + base.name in NETWORKS:
            continue
        register_network(NetworkSpec(
            name=LSE_PREFIX + base.name,
            family="lse_heatmap",
            builder=partial(build_lse_heatmap_net, base.name),
            target_layers=LSE_LEVEL_LAYERS,
            head=("levels.0.pool", "levels.0.classifier"),
            gap_linear_head=False,
            reference=REF_LSE + "; encoder: " + base.reference,
            stem="encoder." + base.stem,
            implementation=base.implementation,
        ))


_register()
