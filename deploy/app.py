"""hemwsl as a MONAI Deploy application: DICOM loader -> series selector -> series to volume -> hemwsl
prediction -> DICOM SEG writer, with hemwsl's report (JSON, PNG, NIfTI) beside the SEG.

    python deploy/app.py -i DICOM_FOLDER -o OUTPUT -m MODEL_PACKAGE     # or: monai-deploy exec deploy/app.py ...
    monai-deploy package deploy -c deploy/app.yaml -t hemwsl-ich:0.1 --platform x86_64 -m MODEL_PACKAGE

Research only, not for clinical use.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # hemwsl_operator beside this file

from monai.deploy.conditions import CountCondition  # noqa: E402
from monai.deploy.core import AppContext, Application  # noqa: E402
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator  # noqa: E402
from monai.deploy.operators.dicom_seg_writer_operator import (  # noqa: E402
    DICOMSegmentationWriterOperator,
    SegmentDescription,
)
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator  # noqa: E402
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator  # noqa: E402
from pydicom.sr.codedict import codes  # noqa: E402

from hemwsl_operator import HemwslPredictOperator  # noqa: E402

#: The CT series with the most instances is not expressible as a rule; this selects the CT series, and the
#: SDK takes the first match.
CT_SERIES_RULES = """
{
    "selections": [
        {"name": "CT Series", "conditions": {"Modality": "(?i)CT", "ImageType": ["PRIMARY", "ORIGINAL"]}}
    ]
}
"""


class HemwslICHApp(Application):
    """Intracranial hemorrhage localisation and volume on a head CT series (hemwsl model package)."""

    def compose(self) -> None:
        ctx: AppContext = Application.init_app_context(self.argv)
        out = Path(ctx.output_path)
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=Path(ctx.input_path),
                                         name="dicom_loader")
        selector = DICOMSeriesSelectorOperator(self, rules=CT_SERIES_RULES, name="series_selector")
        to_volume = DICOMSeriesToVolumeOperator(self, name="series_to_volume")
        predict = HemwslPredictOperator(self, model_path=ctx.model_path, output_folder=out / "hemwsl",
                                        name="hemwsl_predict")
        seg_writer = DICOMSegmentationWriterOperator(
            self,
            segment_descriptions=[SegmentDescription(
                segment_label="Hemorrhage", segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Hemorrhage, algorithm_name="hemwsl weakly supervised ICH",
                algorithm_family=codes.DCM.ArtificialIntelligence, algorithm_version="0.1.0")],
            custom_tags={"SeriesDescription": "hemwsl hemorrhage mask, research only"},
            output_folder=out / "seg", name="seg_writer")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, predict, {("image", "image")})
        self.add_flow(selector, predict, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(selector, seg_writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(predict, seg_writer, {("seg_image", "seg_image")})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    HemwslICHApp().run()
