"""Ignite handlers for slice-classifier workflows.

:class:`PredictionCollector` gathers per-slice probabilities, labels and ids during an evaluator run;
:class:`ClassificationHistory` appends per-epoch validation metrics to a JSON history (written
atomically after every epoch, so a killed run keeps what it finished); :class:`ClassificationReportWriter`
writes per-slice predictions (CSV), the metric report (JSON) and ROC/PR curves (PNG);
:class:`EMAHandler` keeps an exponential moving average of a trained network's weights.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from typing import Any
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from hemwsl.constants import LABEL, PATIENT, SLICE_INDEX
from hemwsl.data.io import atomic_write_text
from hemwsl.engines.runs import read_predictions_csv  # noqa: F401  (re-exported)

__all__ = [
    "PredictionCollector",
    "ClassificationHistory",
    "ClassificationReportWriter",
    "read_predictions_csv",
    "any_output",
    "EMAHandler",
    "unwrap_network",
    "attached",
]

logger = logging.getLogger(__name__)


def _as_list(x) -> list:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().tolist()
    return list(x)


def _batch_items(batch, key: str) -> list:
    """Values of ``key`` for every sample of a (collated dict or decollated list) batch."""
    if isinstance(batch, dict):
        v = batch.get(key)
        return [] if v is None else _as_list(v)
    return [b.get(key) if not isinstance(b.get(key), torch.Tensor) else b.get(key).item() for b in batch]


class PredictionCollector:
    """Collect sigmoid probabilities, labels, patients and slice indices of every evaluated slice.

    Args:
        pred_key: key of the network output (logits) in ``engine.state.output``.
        label_key: key of the targets.
        activation: ``"sigmoid"`` (binary / multi-label logits) or ``None`` (already probabilities).
    """

    def __init__(self, pred_key: str = "pred", label_key: str = LABEL, activation: str | None = "sigmoid") -> None:
        self.pred_key = pred_key
        self.label_key = label_key
        self.activation = activation
        self.reset()

    def reset(self, engine: Engine | None = None) -> None:
        self.probs: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.patients: list[str] = []
        self.slices: list[int] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        if isinstance(out, dict):
            pred, label = out[self.pred_key], out[self.label_key]
        else:
            pred = torch.stack([torch.as_tensor(o[self.pred_key]) for o in out])
            label = torch.stack([torch.as_tensor(o[self.label_key]) for o in out])
        pred = pred.detach().float()
        if self.activation == "sigmoid":
            pred = torch.sigmoid(pred)
        self.probs.append(pred.reshape(pred.shape[0], -1).cpu().numpy())
        self.labels.append(label.detach().float().reshape(label.shape[0], -1).cpu().numpy())
        self.patients += [str(p) for p in _batch_items(engine.state.batch, PATIENT)]
        self.slices += [int(s) for s in _batch_items(engine.state.batch, SLICE_INDEX)]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities (N, C), labels (N, C))``."""
        if not self.probs:
            return np.zeros((0, 1)), np.zeros((0, 1))
        return np.concatenate(self.probs), np.concatenate(self.labels)

    def to_csv(self, path: str | os.PathLike, names: Sequence[str] | None = None) -> Path:
        """Write one row per slice: patient, slice, label and probability per output."""
        probs, labels = self.arrays()
        names = list(names) if names else (["any"] + [f"out{i}" for i in range(1, probs.shape[1])])
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["patient", "slice"] + [f"label_{n}" for n in names] + [f"prob_{n}" for n in names])
        pats = self.patients or [""] * len(probs)
        sls = self.slices or [-1] * len(probs)
        for p, s, lab, pr in zip(pats, sls, labels, probs):
            w.writerow([p, s] + [int(v) for v in lab] + [f"{v:.6f}" for v in pr])
        atomic_write_text(path, buf.getvalue())
        return Path(path)




class ClassificationHistory:
    """After each validation run, append AUROC, AP and F1@0.5 of output 0 ("any") to ``history.json``.

    Attach to the evaluator (run by MONAI's ``ValidationHandler``, its epoch is the trainer's epoch). ``history.json`` holds a list of
    ``{"epoch", "auroc", "ap", "f1", "precision", "recall"}`` plus the "top-5 epochs F1 mean +- sd"
    summary that seed paper 000 reports; it is rewritten atomically after every epoch.
    """

    def __init__(self, collector: PredictionCollector, output_dir: str | os.PathLike, top_k: int = 5) -> None:
        self.collector = collector
        self.path = Path(output_dir) / "history.json"
        self.top_k = top_k
        self.history: list[dict] = []
        if self.path.exists():  # resumed run: keep earlier epochs
            try:
                self.history = json.loads(self.path.read_text()).get("epochs", [])
            except (json.JSONDecodeError, OSError):
                logger.warning("%s: unreadable history, starting a new one", self.path)

    def attach(self, engine: Engine) -> None:
        self.collector.attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from hemwsl.metrics.classification import compute_auroc, compute_average_precision, compute_prf, topk_mean_sd

        probs, labels = self.collector.arrays()
        if len(probs) == 0:
            return
        y, p = labels[:, 0], probs[:, 0]
        prf = compute_prf(y, p, 0.5)
        epoch = engine.state.epoch
        row = {
            "epoch": int(epoch),
            "auroc": float(compute_auroc(y, p)),
            "ap": float(compute_average_precision(y, p)),
            "f1": float(prf["f1"]),
            "precision": float(prf["precision"]),
            "recall": float(prf["recall"]),
        }
        self.history = [h for h in self.history if h["epoch"] != row["epoch"]] + [row]
        mean, sd = topk_mean_sd([h["f1"] for h in self.history], k=self.top_k)
        summary = {"top_k": self.top_k, "f1_topk_mean": float(mean), "f1_topk_sd": float(sd),
                   "best_auroc": max(h["auroc"] for h in self.history)}
        atomic_write_text(self.path, json.dumps({"epochs": self.history, "summary": summary}, indent=2))
        metrics = getattr(engine.state, "metrics", None)
        if isinstance(metrics, dict):  # beside AUROC in TensorBoard (its stats handler logs the evaluator's metrics)
            metrics.update({f"val_{k}": row[k] for k in ("ap", "f1", "precision", "recall")})
        logger.info("epoch %d validation: AUROC %.4f AP %.4f F1@0.5 %.4f", row["epoch"], row["auroc"], row["ap"], row["f1"])


class ClassificationReportWriter:
    """On completion of an evaluator run, write ``predictions_<name>.csv``, ``report_<name>.json`` and
    ROC/PR curve PNGs for output 0 into ``output_dir``.

    When ``val_csv`` names a predictions CSV from a validation run, the F1-max and Youden thresholds
    are chosen on it and applied unchanged to this run's predictions (never tuned on test).
    """

    def __init__(self, output_dir: str | os.PathLike, name: str = "test", val_csv: str | os.PathLike | None = None,
                 output_names: Sequence[str] | None = None, thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> None:
        self.output_dir = Path(output_dir)
        self.name = name
        self.val_csv = val_csv
        self.output_names = list(output_names) if output_names else None
        self.thresholds = tuple(thresholds)
        self.collector = PredictionCollector()

    def attach(self, engine: Engine) -> None:
        self.collector.attach(engine)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from hemwsl.engines.classifier import write_classification_report

        probs, labels = self.collector.arrays()
        csv_path = self.collector.to_csv(self.output_dir / f"predictions_{self.name}.csv", self.output_names)
        write_classification_report(csv_path, self.output_dir, name=self.name, val_csv=self.val_csv,
                                    thresholds=self.thresholds)


def any_output(output) -> tuple[torch.Tensor, torch.Tensor]:
    """``output_transform`` selecting the first output ("any hemorrhage") of a batch's predictions and
    labels, so that model selection uses the primary target for binary and multi-label heads alike
    (subtype columns without positives in a small validation part would make a macro AUROC NaN)."""
    if isinstance(output, dict):
        pred, label = output["pred"], output[LABEL]
    else:
        pred = torch.stack([torch.as_tensor(o["pred"]) for o in output])
        label = torch.stack([torch.as_tensor(o[LABEL]) for o in output])
    return pred.reshape(pred.shape[0], -1)[:, :1], label.reshape(label.shape[0], -1)[:, :1]


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (``network`` itself otherwise)."""
    while isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        network = network.module
    return network


class EMAHandler:
    """Exponential moving average of a network's weights, updated after every training iteration.

    After each optimiser step (``ITERATION_COMPLETED`` of the trainer it is attached to)::

        ema = decay * ema + (1 - decay) * live        # every parameter
        ema_buffer = live_buffer                      # every buffer (BatchNorm running stats) is copied

    The EMA copy starts equal to the network at construction (after any pretrained weights were loaded).
    Buffers are copied from the live network rather than averaged (as ``ignite.handlers.EMAHandler``'s
    default ``handle_buffers="copy"``): BatchNorm statistics are already running averages, so the EMA
    network is evaluated with the live network's statistics.
    A ``DistributedDataParallel``/``DataParallel`` network is unwrapped: the EMA tracks the inner module
    and :attr:`ema_model` is a plain module (each rank of a DDP run keeps an identical copy).

    ``decay == 0`` switches the EMA off: nothing is copied or attached, and :attr:`eval_network` is the
    network as given, so a workflow wired through this handler behaves exactly as without it.

    Args:
        network: the trained (live) network.
        decay: EMA decay in ``[0, 1)``; 0 = off. The weight of the initial network after ``n`` updates is
            ``decay ** n`` (0.99 over 480 iterations: 0.008).
        every: update every ``every`` iterations.
    """

    def __init__(self, network: torch.nn.Module, decay: float = 0.0, every: int = 1) -> None:
        from hemwsl.errors import HemwslInputError

        decay = float(decay)
        if not 0.0 <= decay < 1.0:
            raise HemwslInputError(f"ema_decay must be in [0, 1) (0 = off), got {decay}")
        if every < 1:
            raise HemwslInputError(f"EMA update interval must be >= 1, got {every}")
        self.decay, self.every = decay, int(every)
        self.network = network
        self.model = unwrap_network(network)
        self.num_updates = 0
        self.ema_model: torch.nn.Module | None = None
        if self.enabled:
            self.ema_model = copy.deepcopy(self.model)
            self.ema_model.requires_grad_(False)
            self.ema_model.eval()

    @property
    def enabled(self) -> bool:
        return self.decay > 0

    @property
    def eval_network(self) -> torch.nn.Module:
        """The network to validate and checkpoint: the EMA copy when on, else the network as given."""
        return self.ema_model if self.ema_model is not None else self.network

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self)

    def __call__(self, engine: Engine | None = None) -> None:
        self.update()

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step from the live network's current weights (no-op when off)."""
        if self.ema_model is None:
            return
        for ema_p, p in zip(self.ema_model.parameters(), self.model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach().to(ema_p.dtype), alpha=1.0 - self.decay)
        for ema_b, b in zip(self.ema_model.buffers(), self.model.buffers()):
            ema_b.copy_(b)
        self.num_updates += 1


def attached(handler: Any) -> Any:
    """``handler`` itself: lets a bundle's handler list name a handler defined elsewhere in the config as a
    component (``{_target_: hemwsl.engines.handlers.attached, handler: '@ema'}``) instead of a bare ``'@ema'``
    reference, which MONAI's ``ConfigWorkflow.check_properties()`` cannot read (it expects every train handler to
    be a dict with a ``_target_``)."""
    return handler
