"""Slice-context classifiers: a 2D encoder per slice and a sequence model over the slices of a volume.

Ramananda & Sundaresan 2023 fine-tune a slice classifier (ResNet-101) with an LSTM over contiguous slices so
that its features learn the dependencies across slices, then remove the LSTM and take class activation maps of
the fine-tuned CNN with its fully connected layer. :class:`SliceSequenceNet` is that network on any registered
backbone (registry names ``seq_<backbone>``), with a bidirectional LSTM (the paper) or a small transformer
encoder over the slices:

* ``encoder``: the registered 2D classifier (any backbone, any number of input channels: a 2.5D stack of
  adjacent slices x CT windows per slice), whose final Linear is the **slice head**;
* ``context``: ``nn.LSTM`` (bidirectional) or ``nn.TransformerEncoder`` (with sinusoidal slice positions) over
  the encoder's pooled features of the slices in order;
* ``head``: a Linear from the context features to the per-slice logits.

``forward`` takes either

* ``(B, S, C, H, W)``: ``B`` sequences of ``S`` consecutive slices, returns the **sequence logits**
  ``(B * S, K)`` (flattened slice-major, so the losses, metrics and prediction writers of a slice classifier
  apply unchanged; :func:`hemwsl.data.dataset.collate_sequences` flattens the labels alike); or
* ``(B, C, H, W)``: independent slices, returns the **slice head's** logits ``(B, K)``: the fine-tuned encoder
  with its Linear, Ramananda & Sundaresan's CNN after the LSTM is removed. The CAM engine explains this path,
  at the encoder's target layers (``encoder.<layer>``), with the closed-form CAM of the encoder's GAP + Linear.

Training (:class:`SequenceLoss`) supervises both: the sequence logits and the slice head's logits of the same
forward, so the slice head stays a classifier whose CAMs mean something.

References:
    Ramananda & Sundaresan 2023, Class activation map-based weakly supervised hemorrhage segmentation using
    ResNet-LSTM in non-contrast computed tomography images.
    Hochreiter & Schmidhuber 1997 (LSTM); Vaswani et al. 2017 (transformer encoder).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn

from hemwsl.errors import HemwslInputError, check_choice

__all__ = ["SEQ_PREFIX", "CONTEXTS", "SliceSequenceNet", "SequenceLoss", "is_sequence_network", "is_whole_checkpoint"]

logger = logging.getLogger(__name__)

#: Prefix of the registry names of the slice-context classifiers: ``seq_<backbone>``.
SEQ_PREFIX = "seq_"

#: Sequence models over the slices.
CONTEXTS: tuple[str, ...] = ("lstm", "transformer")


def is_sequence_network(network: nn.Module) -> bool:
    """Whether ``network`` is a :class:`SliceSequenceNet` (its forward takes ``(B, S, C, H, W)`` sequences)."""
    return isinstance(getattr(network, "module", network), SliceSequenceNet)


def _sinusoidal(positions: int, dim: int, device: torch.device) -> Tensor:
    """Sinusoidal position encodings ``(positions, dim)`` (Vaswani et al. 2017)."""
    pos = torch.arange(positions, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(positions, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class SliceSequenceNet(nn.Module):
    """A 2D slice classifier with a sequence model over the slices (Ramananda & Sundaresan 2023).

    Build it with ``hemwsl.networks.build_network("seq_<backbone>", ...)``, which builds the registered backbone
    as the encoder (and loads ``pretrained_path``: the backbone's weights into the encoder, or a whole
    slice-sequence checkpoint).

    Args:
        encoder: the 2D classifier applied to every slice; its final Linear is the slice head.
        linear_path: module path of that Linear in ``encoder`` (its input is the slice's pooled features).
        num_classes: 1 ("any") or 6 (any + five subtypes).
        context: ``"lstm"`` (bidirectional, the paper) or ``"transformer"``.
        hidden: LSTM hidden size per direction, or the transformer's width.
        context_layers: LSTM or transformer layers.
        heads: attention heads of the transformer.
        dropout: dropout on the context model's input and output features (and inside the transformer).
        backbone: the encoder's registry name (recorded).
    """

    def __init__(self, encoder: nn.Module, linear_path: str, num_classes: int = 1, context: str = "lstm",
                 hidden: int = 128, context_layers: int = 1, heads: int = 4, dropout: float = 0.0,
                 backbone: str = "") -> None:
        super().__init__()
        check_choice("sequence context", context, CONTEXTS)
        for name, value in (("hidden", hidden), ("context_layers", context_layers), ("heads", heads)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise HemwslInputError(f"{name} must be a positive integer, got {value!r}")
        if context == "transformer" and hidden % (2 * heads):
            raise HemwslInputError(f"hidden ({hidden}) must be a multiple of 2 x heads ({heads}) for the transformer")
        self.backbone, self.context_kind = backbone, context
        self.num_classes = int(num_classes)
        self.encoder = encoder
        linear = self.encoder.get_submodule(linear_path)
        if not isinstance(linear, nn.Linear):
            raise HemwslInputError(f"{linear_path!r} of the encoder is a {type(linear).__name__}, not its final Linear")
        self.features = int(linear.in_features)
        self.drop = nn.Dropout(float(dropout)) if dropout else nn.Identity()
        if context == "lstm":
            self.context = nn.LSTM(self.features, hidden, num_layers=context_layers, batch_first=True,
                                   bidirectional=True)
            out = 2 * hidden
            self.project = nn.Identity()
        else:
            self.project = nn.Linear(self.features, hidden)
            layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=float(dropout),
                                               batch_first=True, norm_first=True)
            self.context = nn.TransformerEncoder(layer, context_layers, enable_nested_tensor=False)
            out = hidden
        self.head = nn.Linear(out, num_classes)
        self._captured: Tensor | None = None
        linear.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple) -> None:
        self._captured = args[0]

    def slice_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(slice head logits (N, K), pooled encoder features (N, F))`` of ``N`` slices ``(N, C, H, W)``."""
        logits = self.encoder(x)
        feats, self._captured = self._captured, None
        if feats is None:
            raise RuntimeError("the encoder's classifier head did not run")
        return logits, feats

    def sequence_logits(self, feats: Tensor) -> Tensor:
        """Per-slice logits ``(B, S, K)`` of the context model on pooled features ``(B, S, F)``."""
        h = self.project(self.drop(feats))
        if self.context_kind == "lstm":
            h, _ = self.context(h)
        else:
            h = self.context(h + _sinusoidal(h.shape[1], h.shape[2], h.device).to(h.dtype))
        return self.head(self.drop(h))

    def forward(self, x: Tensor, heads: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``(B, S, C, H, W)`` -> sequence logits ``(B * S, K)`` (with ``heads=True``: and the slice head's
        ``(B * S, K)``); ``(B, C, H, W)`` -> the slice head's logits ``(B, K)``."""
        if x.ndim == 4:
            logits = self.encoder(x)
            self._captured = None
            return (logits, logits) if heads else logits
        if x.ndim != 5:
            raise HemwslInputError(f"a slice-sequence network takes (B, S, C, H, W) or (B, C, H, W), got {tuple(x.shape)}")
        b, s = x.shape[:2]
        slice_logits, feats = self.slice_features(x.reshape(b * s, *x.shape[2:]))
        seq = self.sequence_logits(feats.reshape(b, s, -1)).reshape(b * s, -1)
        return (seq, slice_logits) if heads else seq


def is_whole_checkpoint(state: dict) -> bool:
    """Whether a state dict holds a whole slice-sequence network (its context model), not only a backbone."""
    return any(k.startswith(("context.", "head.")) for k in state)


class SequenceLoss(nn.Module):
    """BCE of the sequence logits plus ``slice_weight`` x BCE of the slice head's logits (same targets).

    The second term keeps the slice head (the encoder's own Linear, the path the CAM engine explains) a
    classifier while the encoder learns from the slices' context. Input ``(sequence, slice)`` logits as
    :class:`SliceSequenceNet` returns them with ``heads=True``, each ``(N, K)``; target ``(N, K)``.
    """

    def __init__(self, pos_weight: Tensor | None = None, slice_weight: float = 0.5) -> None:
        super().__init__()
        if not slice_weight >= 0:
            raise HemwslInputError(f"seq_slice_weight must be >= 0, got {slice_weight!r}")
        self.bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        self.slice_weight = float(slice_weight)

    def forward(self, outputs: Tensor | tuple[Tensor, Tensor], target: Tensor) -> Tensor:
        if isinstance(outputs, Tensor):
            return self.bce(outputs, target)
        seq, slc = outputs
        loss = self.bce(seq, target)
        if self.slice_weight:
            loss = loss + self.slice_weight * self.bce(slc, target)
        return loss
