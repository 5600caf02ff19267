"""The CAM methods, one file each; see :mod:`hemwsl.cam.registry` for the registry."""

from __future__ import annotations

from hemwsl.cam.methods.ablationcam import AblationCAM
from hemwsl.cam.methods.cam import CAM
from hemwsl.cam.methods.eigencam import EigenCAM, first_component_projection, top_eigenvector
from hemwsl.cam.methods.eigengradcam import EigenGradCAM
from hemwsl.cam.methods.gradcam import GradCAM
from hemwsl.cam.methods.gradcam_elementwise import GradCAMElementWise
from hemwsl.cam.methods.gradcampp import GradCAMPlusPlus
from hemwsl.cam.methods.groupcam import GroupCAM
from hemwsl.cam.methods.hirescam import HiResCAM
from hemwsl.cam.methods.layercam import LayerCAM
from hemwsl.cam.methods.reciprocam import ReciproCAM
from hemwsl.cam.methods.lseheatmap import LSEHeatmap
from hemwsl.cam.methods.scorecam import FasterScoreCAM, ScoreCAM
from hemwsl.cam.methods.xgradcam import XGradCAM

__all__ = [
    "AblationCAM",
    "CAM",
    "EigenCAM",
    "EigenGradCAM",
    "FasterScoreCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GroupCAM",
    "HiResCAM",
    "LayerCAM",
    "LSEHeatmap",
    "ReciproCAM",
    "ScoreCAM",
    "XGradCAM",
    "first_component_projection",
    "top_eigenvector",
]
