"""Kill and resume (slow): a run killed with SIGKILL at several points and run again ends with outputs
identical (md5) to an uninterrupted run, with no truncated or visible temporary file left behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CLS = ["--set", "backbone=resnet10", "spatial_size=[32,32]", "epochs=2", "samples_per_epoch=32", "batch_size=8",
       "cache_workers=0", "num_workers=0", "eval_checkpoint=last"]


def _run(argv: list[str], kill_after: float | None = None) -> int | None:
    """Run ``python -m hemwsl argv``; with ``kill_after``, SIGKILL its process group after that many seconds
    (``None`` when it finished first)."""
    proc = subprocess.Popen([sys.executable, "-m", "hemwsl", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    if kill_after is None:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err.decode()[-2000:]
        return 0
    try:
        proc.wait(timeout=kill_after)
        return proc.returncode  # finished before the kill
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def _digests(root: Path, patterns: list[str]) -> dict[str, str]:
    """md5 of the outputs matching ``patterns``; hidden files are left out: a SIGKILL during an atomic write can
    leave its hidden ``.tmp-*`` file behind (docs/reliability.md), which is not an output."""
    out = {}
    for pattern in patterns:
        for p in sorted(root.glob(pattern)):
            if not p.name.startswith("."):
                out[str(p.relative_to(root))] = hashlib.md5(p.read_bytes()).hexdigest()
    return out


def _no_debris(root: Path) -> None:
    visible_tmp = [p for p in root.rglob("*") if ".tmp" in p.name and not p.name.startswith(".")]
    assert not visible_tmp, visible_tmp
    for p in root.rglob("*.json"):
        json.loads(p.read_text())  # none truncated


def _killed_then_finished(argv: list[str], root: Path, delays) -> int:
    """Run ``argv`` killed after each of ``delays`` seconds (no debris after each kill), then once to the end;
    returns how many kills landed mid-run."""
    kills = 0
    for delay in delays:
        if _run(argv, kill_after=delay) is None:
            kills += 1
        _no_debris(root)
    _run(argv)
    _no_debris(root)
    return kills


#: wall time of the uninterrupted train-cv run: the kills land at fractions of it, whatever the machine's speed
TRAIN_SECONDS: list[float] = []


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synthetic_root):
    """An uninterrupted train-cv and cam-cv run."""
    import time

    root = tmp_path_factory.mktemp("reference")
    cv, cam = root / "cv", root / "cam"
    t0 = time.perf_counter()
    _run(["train-cv", "--dataset-dir", str(synthetic_root), "--out", str(cv), "--folds", "2", *CLS])
    TRAIN_SECONDS.append(time.perf_counter() - t0)
    _run(["cam-cv", "--dataset-dir", str(synthetic_root), "--cv-dir", str(cv), "--out", str(cam), "--folds", "2",
          "--checkpoint", "last", "--methods", "gradcam", "layercam"])
    return cv, cam


TRAIN_OUTPUTS = ["fold*/predictions_test_last.csv", "fold*/report_test_last.json", "cv_summary_last.md"]


def test_train_cv_killed_three_times_resumes_to_the_same_outputs(reference, synthetic_root, tmp_path):
    ref_cv, _ = reference
    cv = tmp_path / "cv"
    argv = ["train-cv", "--dataset-dir", str(synthetic_root), "--out", str(cv), "--folds", "2", *CLS]
    full = TRAIN_SECONDS[0]
    # a resumed run skips what is done, so each later kill comes earlier in its run: during the volume check or
    # fold 0, then fold 0 or 1, then later
    assert _killed_then_finished(argv, cv, (0.3 * full, 0.45 * full, 0.3 * full)) >= 2
    want = _digests(ref_cv, TRAIN_OUTPUTS)
    assert want and _digests(cv, TRAIN_OUTPUTS) == want


def test_cam_cv_killed_resumes_to_the_same_heatmaps(reference, synthetic_root, tmp_path):
    ref_cv, ref_cam = reference
    cam = tmp_path / "cam"
    argv = ["cam-cv", "--dataset-dir", str(synthetic_root), "--cv-dir", str(ref_cv), "--out", str(cam), "--folds",
            "2", "--checkpoint", "last", "--methods", "gradcam", "layercam"]
    assert _killed_then_finished(argv, cam, (5.0, 8.0)) >= 1
    want = _digests(ref_cam, ["*/*/*.nii.gz"])
    got = _digests(cam, ["*/*/*.nii.gz"])
    assert want and got == want, sorted(k for k in set(want) | set(got) if got.get(k) != want.get(k))


def test_a_second_uninterrupted_run_is_bit_identical(reference, synthetic_root, tmp_path):
    ref_cv, _ = reference
    cv = tmp_path / "cv"
    _run(["train-cv", "--dataset-dir", str(synthetic_root), "--out", str(cv), "--folds", "2", *CLS])
    assert _digests(cv, TRAIN_OUTPUTS) == _digests(ref_cv, TRAIN_OUTPUTS)


BENCH = ["--thresholds", "prior", "search", "priorcomp+search", "--brain-erosion", "0", "1", "--n-boot", "50",
         "--no-figures"]
#: wall time of the uninterrupted benchmark (the kills land at fractions of it)
BENCH_SECONDS: list[float] = []
BENCH_OUTPUTS = ["per_case.csv", "summary.csv", "choices.csv", "thresholds.csv", "per_case/*.csv"]


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hemwsl", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


@pytest.fixture(scope="module")
def bench_reference(reference, synthetic_root, tmp_path_factory):
    """One uninterrupted benchmark of the reference heatmaps."""
    import time

    ref_cv, ref_cam = reference
    out = tmp_path_factory.mktemp("bench") / "ref"
    t0 = time.perf_counter()
    _run(["benchmark", "--dataset-dir", str(synthetic_root), "--cam-dir", str(ref_cam), "--out", str(out),
          "--cv-dir", str(ref_cv), "--checkpoint", "last", *BENCH])
    BENCH_SECONDS.append(time.perf_counter() - t0)
    return out


def test_benchmark_killed_resumes_to_the_same_report(reference, bench_reference, synthetic_root, tmp_path):
    ref_cv, ref_cam = reference
    out = tmp_path / "bench"
    argv = ["benchmark", "--dataset-dir", str(synthetic_root), "--cam-dir", str(ref_cam), "--out", str(out),
            "--cv-dir", str(ref_cv), "--checkpoint", "last", *BENCH]
    assert _killed_then_finished(argv, out, (0.5 * BENCH_SECONDS[0], 0.5 * BENCH_SECONDS[0])) >= 1
    want = _digests(bench_reference, BENCH_OUTPUTS)
    assert want and _digests(out, BENCH_OUTPUTS) == want


def test_concurrent_processes_on_one_folder_give_one_result(reference, bench_reference, synthetic_root, tmp_path):
    """Two cam-cv processes on one heatmap folder, then two benchmark processes on one report folder, started
    together: every output is identical (md5) to a single process's."""
    ref_cv, ref_cam = reference
    cam, out = tmp_path / "cam", tmp_path / "bench"
    cam_argv = ["cam-cv", "--dataset-dir", str(synthetic_root), "--cv-dir", str(ref_cv), "--out", str(cam),
                "--folds", "2", "--checkpoint", "last", "--methods", "gradcam", "layercam"]
    for argv in (cam_argv, ["benchmark", "--dataset-dir", str(synthetic_root), "--cam-dir", str(cam), "--out",
                            str(out), "--cv-dir", str(ref_cv), "--checkpoint", "last", *BENCH]):
        procs = [_start(argv) for _ in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=900)
            assert p.returncode == 0, err.decode()[-2000:]
    want = _digests(ref_cam, ["*/*/*.nii.gz"])
    assert want and _digests(cam, ["*/*/*.nii.gz"]) == want
    want = _digests(bench_reference, BENCH_OUTPUTS)
    assert want and _digests(out, BENCH_OUTPUTS) == want
    _no_debris(cam)
    _no_debris(out)


def _uninterrupted(argv: list[str]) -> float:
    import time

    t0 = time.perf_counter()
    _run(argv)
    return time.perf_counter() - t0


def test_pseudo_killed_resumes_to_the_same_labels(reference, synthetic_root, tmp_path):
    """``hemwsl pseudo`` (CAM + K-means, fold 0's test patients with its own predictions)."""
    ref_cv, ref_cam = reference

    def argv(out):
        return ["pseudo", "--dataset-dir", str(synthetic_root), "--cv-dir", str(ref_cv), "--fold", "0",
                "--cam-dir", str(ref_cam), "--method", "gradcam", "--layer", sorted(p.name for p in (ref_cam / "gradcam").iterdir())[0],
                "--predictions-csv", str(ref_cv / "fold0" / "predictions_test_last.csv"), "--out", str(out),
                "--checkpoint", str(ref_cv / "fold0" / "models" / "model_last.pt"),
                "--no-progress"]

    full = _uninterrupted(argv(tmp_path / "ref"))
    out = tmp_path / "killed"
    assert _killed_then_finished(argv(out), out, (0.5 * full, 0.7 * full)) >= 1
    patterns = ["*.nii.gz", "pseudo_params.json"]
    want = _digests(tmp_path / "ref", patterns)
    assert want and _digests(out, patterns) == want
    # the datalist names each label by its path: the same entries, in the other folder
    ref_list = (tmp_path / "ref" / "datalist.json").read_text().replace(str(tmp_path / "ref"), str(out))
    assert json.loads((out / "datalist.json").read_text()) == json.loads(ref_list)


def test_trust_killed_resumes_to_the_same_report(reference, synthetic_root, tmp_path):
    """``hemwsl trust`` with each fold's model explaining its own test patients."""
    ref_cv, _ = reference

    def argv(out):
        return ["trust", "--dataset-dir", str(synthetic_root), "--cv-dir", str(ref_cv), "--out", str(out),
                "--model", str(ref_cv / "fold{fold}" / "models" / "model_last.pt"), "--methods", "gradcam", "saliency",
                "--subsets", "4", "--steps", "4", "--threads", "1", "--max-slices", "2"]

    full = _uninterrupted(argv(tmp_path / "ref"))
    out = tmp_path / "killed"
    assert _killed_then_finished(argv(out), out, (0.5 * full, 0.6 * full)) >= 1
    want = _digests(tmp_path / "ref", ["per_case.csv", "per_patient.csv", "summary.md", "tests.csv"])
    assert want and _digests(out, ["per_case.csv", "per_patient.csv", "summary.md", "tests.csv"]) == want

    def cases(root):  # every per-case result but its wall time
        return {p.name: json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "seconds"})
                for p in sorted((root / "per_case").glob("*.json"))}

    assert cases(tmp_path / "ref") and cases(out) == cases(tmp_path / "ref")


def test_subtypes_killed_resumes_to_the_same_report(synthetic_root, tmp_path):
    """``hemwsl subtypes`` (Algorithm 1 out of fold) on a packed six-output heatmap network."""
    import torch

    from hemwsl.networks import build_network
    from hemwsl.predict import pack_model

    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "cv_settings.json").write_text(json.dumps({"backbone": "lse_resnet10", "spatial_size": [64, 64],
                                                     "skull_strip": True, "windows": ["brain", "blood"],
                                                     "num_slices": 3, "tta": True, "multilabel": True}))
    for k in range(5):
        torch.manual_seed(k)
        (cv / f"fold{k}" / "models").mkdir(parents=True)
        torch.save(build_network("lse_resnet10", in_channels=6, num_classes=6).state_dict(),
                   cv / f"fold{k}" / "models" / "model.pt")
    pkg = pack_model(cv, tmp_path / "pkg", dataset_dir=synthetic_root, scan_call="none")

    def argv(out):
        return ["subtypes", "--model", str(pkg), "--dataset-dir", str(synthetic_root), "--out", str(out)]

    full = _uninterrupted(argv(tmp_path / "ref"))
    out = tmp_path / "killed"
    assert _killed_then_finished(argv(out), out, (0.5 * full, 0.6 * full)) >= 1
    patterns = ["per_slice.csv", "per_patient.csv", "subtypes.md"]  # (npz archives carry their write time)
    want = _digests(tmp_path / "ref", patterns)
    assert want and _digests(out, patterns) == want


SEG = ["--set", "spatial_size=[32,32]", "features=[8,16,32]", "patch_size=[32,32,8]", "samples_per_volume=2",
       "batch_size=2", "epochs=2", "cache_workers=0"]
SEG_OUTPUTS = ["fold*/predictions_test/*.nii.gz", "seg_cv_summary.md"]


def test_seg_cv_killed_resumes_to_the_same_masks(synthetic_root, tmp_path):
    """``hemwsl seg-cv`` (the fully supervised 3D U-Net, 2 folds)."""

    def argv(out):
        return ["seg-cv", "--dataset-dir", str(synthetic_root), "--out", str(out), "--folds", "2", *SEG]

    full = _uninterrupted(argv(tmp_path / "ref"))
    out = tmp_path / "killed"
    assert _killed_then_finished(argv(out), out, (0.3 * full, 0.5 * full, 0.3 * full)) >= 1
    want = _digests(tmp_path / "ref", SEG_OUTPUTS)
    assert want and _digests(out, SEG_OUTPUTS) == want
    for k in (0, 1):  # the per-patient metrics, which name each prediction by its path: equal up to the folder
        ref = (tmp_path / "ref" / f"fold{k}" / "metrics_test.csv").read_text().replace(str(tmp_path / "ref"), str(out))
        assert (out / f"fold{k}" / "metrics_test.csv").read_text() == ref


def test_ablation_killed_resumes_to_the_same_table(reference, synthetic_root, tmp_path):
    """``hemwsl ablation`` (CAM and CAM + K-means pseudo-labels, a tiny U-Net on fold 0's)."""
    ref_cv, ref_cam = reference
    layer = sorted(p.name for p in (ref_cam / "gradcam").iterdir())[0]

    def argv(out):
        return ["ablation", "--dataset-dir", str(synthetic_root), "--cv-dir", str(ref_cv), "--cam-dir", str(ref_cam),
                "--layer", layer, "--out", str(out), "--folds", "2", "--checkpoint", "last", "--rows", "cam",
                "cam_kmeans", "--unet-folds", "0", *SEG]

    full = _uninterrupted(argv(tmp_path / "ref"))
    out = tmp_path / "killed"
    assert _killed_then_finished(argv(out), out, (0.4 * full, 0.6 * full)) >= 1
    patterns = ["pseudo/*/*.nii.gz", "pseudo/*/*/*.nii.gz", "unet_*/fold*/predictions_test/*.nii.gz", "ablation.md"]
    want = _digests(tmp_path / "ref", patterns)
    assert want and _digests(out, patterns) == want


def test_pipeline_killed_resumes_to_the_same_reports(synthetic_root, tmp_path):
    """``hemwsl pipeline`` (train-cv -> cam-cv -> benchmark -> ablation), killed in whichever step it is in."""

    def argv(out):
        return ["pipeline", "--dataset-dir", str(synthetic_root), "--out", str(out), "--folds", "2", "--methods",
                "gradcam", "--unet-folds", "0", "--checkpoint", "last", *CLS, "--unet-set", *SEG[1:]]

    full = _uninterrupted(argv(tmp_path / "ref"))
    out = tmp_path / "killed"
    assert _killed_then_finished(argv(out), out, (0.25 * full, 0.5 * full, 0.5 * full)) >= 2
    patterns = ["classifier/fold*/predictions_test_last.csv", "cam/*/*/*.nii.gz", "benchmark/per_case.csv",
                "benchmark/summary.csv", "ablation/ablation.md"]
    want = _digests(tmp_path / "ref", patterns)
    assert want and _digests(out, patterns) == want
