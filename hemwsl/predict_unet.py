"""The 3D U-Net as a self-describing model: ``hemwsl package --seg-cv-dir`` and ``hemwsl predict`` on it.

A ``hemwsl seg-cv`` run (``bundles/ich_unet3d``, on pseudo-labels or true masks) becomes one folder like the
slice classifier's package (:mod:`hemwsl.predict`): ``hemwsl_model.json`` of kind :data:`SEG_MODEL_KIND`, with the
bundle overrides the run trained with, the settings they resolve to (windows, size, skull stripping,
equalisation, network, patch, sliding window, threshold, resampling, folds), one state dict per fold
(``fold<k>.pt`` with its sha1), each fold's test patients and the versions. Loading needs only the path: the
bundle's own ``preprocessing#transforms``, ``validate#inferer`` and ``network_def`` are rebuilt from it.

:class:`SegmentationPredictor` runs the fold ensemble on one scan (NIfTI or a DICOM series folder): each member's
sigmoid probabilities on the CT grid (sliding window, as the bundle's evaluation), their mean thresholded into the
mask; the volume in mL with the spread of the members' volumes, and ABC/2 of the mask's largest component.
Outputs go to ``<out>/<stem>/`` as for the classifier (``mask.nii.gz``, ``probability.nii.gz``, ``report.json``,
``report.png``, and ``seg.dcm`` for DICOM input), written in a hidden partial folder and renamed when complete.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hemwsl.errors import HemwslInputError

__all__ = ["SEG_MODEL_KIND", "SEG_SETTING_KEYS", "SegmentationPredictor", "pack_segmentation", "package_kind"]

SEG_MODEL_KIND = "hemwsl-segmentation-ensemble"
#: What a U-Net package records of the bundle's resolved config (its inference depends on nothing else).
SEG_SETTING_KEYS = ("spatial_size", "windows", "skull_strip", "equalize", "features", "z_stride_from", "z_kernel_from",
                    "dropout", "patch_size", "sw_batch_size", "sw_overlap", "threshold", "resample", "n_folds", "seed",
                    "val_fraction", "layout")
#: Overrides of a seg-cv run that only concern training data and files, not the model (left out of the package).
_RUN_ONLY = ("dataset_dir", "datalist_file", "eval_datalist_file", "output_dir", "cache_dir", "fold", "bundle_root",
             "device", "amp")


def package_kind(path: str | os.PathLike) -> str | None:
    """The ``kind`` of the model package at ``path`` (``None`` when it is not one: :meth:`ModelPackage.load` then
    says why in one line)."""
    from hemwsl.predict import MODEL_FILE

    p = Path(path)
    f = p / MODEL_FILE if p.is_dir() else p
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return meta.get("kind") if isinstance(meta, dict) else None


def _parser(bundle: str, overrides: Mapping[str, Any]):
    from monai.bundle import ConfigParser

    from hemwsl.engines.bundle import config_files

    parser = ConfigParser()
    parser.read_config(config_files(bundle, ["train"]))
    parser.update(dict(overrides))
    return parser


def pack_segmentation(seg_cv_dir: str | os.PathLike, out: str | os.PathLike, *, folds: Sequence[int] | None = None,
                      dataset_dir: str | os.PathLike | None = None) -> Path:
    """Pack a ``hemwsl seg-cv`` run (``seg_cv_run.json`` and ``fold<k>/models/model.pt``, the best validation
    Dice) into a model package of kind :data:`SEG_MODEL_KIND`; returns its folder.

    Args:
        seg_cv_dir: the ``seg-cv`` output folder.
        out: the package folder to write (must not hold another package).
        folds: members to pack (default: every fold with a checkpoint).
        dataset_dir: the run's dataset: each fold's test patients are recorded (the patients a member never saw).
    """
    import hemwsl
    import monai

    from hemwsl.data.io import atomic_write_text
    from hemwsl.engines.runs import SEG_RUN
    from hemwsl.predict import FORMAT_VERSION, MODEL_FILE, new_package_folder, pack_member_weights

    cv = Path(seg_cv_dir)
    if not (cv / SEG_RUN).is_file():
        raise HemwslInputError(f"{cv}: not a seg-cv run (no {SEG_RUN}; train it with `hemwsl seg-cv`)")
    try:
        record = json.loads((cv / SEG_RUN).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HemwslInputError(f"{cv / SEG_RUN}: corrupt run record ({err})") from err
    bundle = str(record.get("bundle") or "ich_unet3d")
    overrides = {k: v for k, v in dict(record.get("settings") or {}).items() if k not in _RUN_ONLY}
    n_folds = int(record.get("folds") or 5)
    overrides["n_folds"] = n_folds
    parser = _parser(bundle, overrides)
    settings = {}
    for key in SEG_SETTING_KEYS:
        value = parser.get_parsed_content(key) if key in parser else None
        settings[key] = list(value) if isinstance(value, tuple) else value
    settings = json.loads(json.dumps(settings))
    found = [k for k in range(n_folds) if (cv / f"fold{k}" / "models" / "model.pt").is_file()]
    members = list(folds) if folds is not None else found
    missing = [k for k in members if k not in found]
    if missing or not members:
        raise HemwslInputError(f"{cv}: no trained U-Net for fold(s) {missing or 'any'} (fold<k>/models/model.pt)")
    tests: dict[int, list[str]] = {}
    if dataset_dir is not None:
        from hemwsl.constants import PATIENT
        from hemwsl.engines.segmentation import segmentation_datalists

        for k in members:
            parts = segmentation_datalists(dataset_dir=str(dataset_dir), layout=settings.get("layout") or "ct-ich",
                                           n_folds=n_folds, fold=k, seed=int(settings.get("seed") or 0),
                                           val_fraction=float(settings.get("val_fraction") or 0.15))
            tests[k] = sorted(str(e[PATIENT]) for e in parts["test"])
    root = new_package_folder(out)
    rows = [{"fold": k, **pack_member_weights(root, k, cv / f"fold{k}" / "models" / "model.pt"),
             "test_patients": tests.get(k)} for k in members]
    meta = {
        "kind": SEG_MODEL_KIND, "format": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "bundle": bundle, "overrides": overrides, "settings": settings, "outputs": ["hemorrhage"],
        "recipe": {"mask": "mean of the members' U-Net probabilities > threshold",
                   "threshold": settings["threshold"], "resample": settings["resample"],
                   "trained_on": "pseudo-labels" if (record.get("settings") or {}).get("datalist_file")
                   or record.get("datalist") else "the datalist's masks"},
        "members": rows, "seg_cv": str(cv),
        "versions": {"hemwsl": hemwsl.__version__, "monai": monai.__version__, "torch": torch.__version__},
    }
    atomic_write_text(root / MODEL_FILE, json.dumps(meta, indent=1) + "\n")
    return root


class SegmentationPredictor:
    """The fold ensemble of a U-Net package, ready for scans.

    Args:
        model: a package folder of kind :data:`SEG_MODEL_KIND`.
        members: fold numbers to use (default all).
        device: where the networks run.
    """

    def __init__(self, model: str | os.PathLike, members: Sequence[int] | None = None,
                 device: str | torch.device = "cpu") -> None:
        from hemwsl.engines.classifier import load_weights
        from hemwsl.predict import ModelPackage

        self.package = pkg = ModelPackage.load(model, kind=SEG_MODEL_KIND)
        by_fold = {int(m["fold"]): m for m in pkg.members}
        if members is not None and (missing := [k for k in members if k not in by_fold]):
            raise HemwslInputError(f"{pkg.root}: no member for fold(s) {missing}; members: {sorted(by_fold)}")
        self.members = [by_fold[k] for k in (members if members is not None else sorted(by_fold))]
        self.device = torch.device(device)
        parser = _parser(pkg.meta.get("bundle") or "ich_unet3d", {**pkg.meta.get("overrides", {}), "cache_dir": None})
        self.transform = parser.get_parsed_content("preprocessing#transforms")
        self.inferer = parser.get_parsed_content("validate#inferer")
        self.networks = [load_weights(parser.get_parsed_content("network_def", lazy=False), pkg.root / m["weights"],
                                      device=self.device) for m in self.members]

    def predict_file(self, path: str | os.PathLike) -> dict[str, Any]:
        """Run the ensemble on one scan (NIfTI file or DICOM series folder); returns arrays and numbers."""
        from hemwsl.constants import IMAGE, PATIENT
        from hemwsl.data.io import volume_stem
        from hemwsl.engines.segmentation import predict_mask
        from hemwsl.metrics.agreement import abc2_volume_ml
        from hemwsl.metrics.volume import lesion_volume_ml
        from hemwsl.predict import _largest_component

        t0 = time.perf_counter()
        s = self.package.settings
        probs, image = [], None
        for net in self.networks:
            _, prob, image = predict_mask(net, {IMAGE: str(path), PATIENT: volume_stem(Path(path))}, self.transform,
                                          self.inferer, threshold=float(s["threshold"]), resample=str(s["resample"]),
                                          device=self.device)
            probs.append(prob)
        prob = np.mean(probs, axis=0).astype(np.float32)
        mask = prob > float(s["threshold"])
        member_ml = [lesion_volume_ml(p > float(s["threshold"]), image.spacing) for p in probs]
        return {"probability": prob, "mask": mask, "image": image, "volume_ml": lesion_volume_ml(mask, image.spacing),
                "member_volumes_ml": member_ml,
                "abc2_ml": abc2_volume_ml(_largest_component(mask), image.spacing) if mask.any() else 0.0,
                "seconds": time.perf_counter() - t0}

    def predict(self, path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
                figures: bool = True) -> dict[str, Any]:
        """Predict one scan into ``<out_dir>/<stem>/``; returns the report (``report.json``). A finished scan of
        the same model is skipped; one of another model is refused unless ``overwrite``."""
        from hemwsl.data.io import atomic_write_text, save_nifti, volume_stem
        from hemwsl.predict import finished_prediction, load_ct, partial_folder

        src = Path(path)
        if not src.exists():
            raise HemwslInputError(f"{src}: input not found")
        stem = volume_stem(src)
        fp = self.package.fingerprint()
        members = [int(m["fold"]) for m in self.members]
        done = finished_prediction(Path(out_dir) / stem, src, fp, members, overwrite)
        if done is not None:
            return done
        _, datasets = load_ct(src) if src.is_dir() else (None, None)
        res = self.predict_file(src)
        volume = res["image"]
        ml = np.asarray(res["member_volumes_ml"], dtype=float)
        report = {
            "input": str(src), "stem": stem, "model": str(self.package.root), "model_fingerprint": fp,
            "model_kind": SEG_MODEL_KIND, "members": members, "shape": list(volume.shape),
            "spacing_mm": [round(v, 4) for v in volume.spacing],
            "volume": {"ml": float(res["volume_ml"]), "members_ml": [float(v) for v in ml],
                       "members_mean_ml": float(ml.mean()), "members_sd_ml": float(ml.std(ddof=1)) if len(ml) > 1 else 0.0,
                       "members_min_ml": float(ml.min()), "members_max_ml": float(ml.max()),
                       "abc2_ml": float(res["abc2_ml"]), "abc2_of": "the largest connected component of the mask"},
            "recipe": self.package.recipe, "seconds": round(float(res["seconds"]), 3),
            "files": {"mask": "mask.nii.gz", "probability": "probability.nii.gz"},
        }
        with partial_folder(out_dir, stem) as part:
            save_nifti(res["mask"].astype(np.uint8), volume.affine, part / "mask.nii.gz")
            save_nifti(res["probability"], volume.affine, part / "probability.nii.gz")
            if datasets is not None:
                import hemwsl
                from hemwsl.data.dicom import write_dicom_seg

                write_dicom_seg(res["mask"], datasets, part / "seg.dcm", software_version=hemwsl.__version__)
                report["files"]["dicom_seg"] = "seg.dcm"
            if figures:
                from hemwsl.reports.predict import plot_scan_report

                slice_p = res["probability"].reshape(-1, volume.shape[2]).max(0)  # per slice: the U-Net's largest
                v = report["volume"]
                title = (f"{stem}: U-Net {v['ml']:.1f} mL [members {v['members_min_ml']:.1f}-{v['members_max_ml']:.1f}], "
                         f"ABC/2 {v['abc2_ml']:.1f} mL")
                plot_scan_report(volume.array, volume.affine, res["mask"], res["probability"], slice_p,
                                 part / "report.png", title=title, slice_threshold=float(self.package.settings["threshold"]))
                report["files"]["report_png"] = "report.png"
            atomic_write_text(part / "report.json", json.dumps(report, indent=1) + "\n")
        return report
