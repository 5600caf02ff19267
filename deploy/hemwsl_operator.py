"""The MONAI Deploy operator of hemwsl: a DICOM CT volume in, the hemorrhage mask out (for the SDK's DICOM SEG
writer), and hemwsl's own outputs (report JSON/PNG, probabilities, heatmap and mask NIfTI) written to the app's
output folder. The work is :class:`hemwsl.predict.Predictor`, the same code as ``hemwsl predict``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec

from hemwsl.data.dicom import frames_from_volume, volume_from_frames
from hemwsl.predict import Predictor


class HemwslPredictOperator(Operator):
    """Inputs ``image`` (from ``DICOMSeriesToVolumeOperator``: ``(slices, rows, columns)`` HU) and
    ``study_selected_series_list`` (its source series); output ``seg_image`` (uint8, same layout).

    Args:
        model_path: a hemwsl model package folder (``hemwsl package``).
        output_folder: where ``<series>/report.json`` and friends go.
        device: torch device.
    """

    def __init__(self, fragment: Fragment, *args, model_path: str | Path, output_folder: str | Path,
                 device: str = "cpu", **kwargs) -> None:
        self.model_path = Path(model_path)
        self.output_folder = Path(output_folder)
        self.device = device
        self.predictor: Predictor | None = None
        self._logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("image")
        spec.input("study_selected_series_list")
        spec.output("seg_image")

    def compute(self, op_input, op_output, context) -> None:
        image = op_input.receive("image")
        selected = op_input.receive("study_selected_series_list")
        series = selected[0].selected_series[0].series
        datasets = [i.get_native_sop_instance() for i in series.get_sop_instances()]
        stem = f"series_{series.SeriesInstanceUID}"
        volume = volume_from_frames(image.asnumpy(), datasets, stem)
        if self.predictor is None:  # the networks are built once per application run
            self.predictor = Predictor(self.model_path, device=self.device)
        report = self.predictor.predict(stem, self.output_folder, loaded=(volume, None), overwrite=True)
        self._logger.info("%s: %s, %.1f mL", stem, "hemorrhage" if report["scan"]["positive"] else "no hemorrhage",
                          report["volume"]["ml"])
        op_output.emit(frames_from_volume(self.predictor.last["mask"].astype(np.uint8)), "seg_image")
