"""Experiments as library code: each takes explicit parameters (a frozen settings object or keyword arguments),
checks every input before its first costly step, resumes where it stopped and refuses a folder made with other
settings. The commands (``hemwsl benchmark``, ``seg-cv``, ``ablation``, ``pipeline``) parse arguments and call
them; Python callers do the same without ``argparse``.

- :func:`~hemwsl.experiments.benchmark.run_benchmark_experiment` (:class:`BenchmarkConfig`): the validated CAM
  benchmark of cross-validated heatmaps (``hemwsl benchmark``);
- :func:`~hemwsl.experiments.segmentation.seg_cv`: the 3D U-Net on every fold (``hemwsl seg-cv``);
- :func:`~hemwsl.experiments.ablation.run_ablation_experiment` (:class:`AblationConfig`): Ramananda & Sundaresan
  2023's ablation (``hemwsl ablation``).

This package sits above the workflows (``hemwsl.engines``, ``hemwsl.benchmark``, ``hemwsl.pseudo``, ...) and
below the commands: nothing but a command imports it. The heavy libraries are imported inside the functions.
"""

from __future__ import annotations

from hemwsl.experiments.ablation import AblationConfig, run_ablation_experiment
from hemwsl.experiments.benchmark import BenchmarkConfig, run_benchmark_experiment
from hemwsl.experiments.segmentation import seg_cv

__all__ = ["AblationConfig", "BenchmarkConfig", "run_ablation_experiment", "run_benchmark_experiment", "seg_cv"]
