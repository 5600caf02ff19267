"""`hemwsl pipeline` at tiny settings: train-cv -> cam-cv -> benchmark -> ablation (pseudo-labels, U-Nets)."""

from __future__ import annotations

import json

from hemwsl.cli import main


def test_pipeline_end_to_end(tmp_path, capsys):
    from hemwsl.data.synthetic import write_synthetic_ctich

    data = tmp_path / "data"
    write_synthetic_ctich(data, n_patients=8, shape=(48, 48, 16), seed=5)
    out = tmp_path / "run"
    unet = ["spatial_size=[48,48]", "features=[8,16,32,64]", "patch_size=[32,32,16]", "epochs=1", "val_interval=1",
            "samples_per_volume=1", "batch_size=2", "cache_workers=0"]
    args = ["pipeline", "--dataset-dir", str(data), "--out", str(out), "--folds", "2", "--methods", "gradcam",
            "layercam", "--unet-folds", "0", "--set", "backbone=resnet10", "spatial_size=[32,32]", "epochs=1",
            "samples_per_epoch=16", "batch_size=8", "cache_workers=0", "--unet-set", *unet]
    assert main(args) == 0
    text = capsys.readouterr().out
    for name in ("classifier/cv_summary.md", "classifier/cv_settings.json", "benchmark/summary.md",
                 "benchmark/per_case.csv", "ablation/ablation.md", "ablation/pseudo/cam_kmeans/datalist.json",
                 "ablation/unet_true/fold0/metrics_test.csv", "ablation/unet_cam_kmeans/fold0/metrics_test.csv",
                 "ablation/pseudo/prior/datalist.json", "ablation/unet_prior/fold0/metrics_test.csv",
                 "ablation/pseudo/prior_filtered/datalist.json", "ablation/pseudo/prior_filtered/component_filter/fold1.pkl",
                 "ablation/unet_prior_filtered/fold0/metrics_test_gated.csv", "ablation/pseudo/heatmap/datalist.json",
                 "ablation/unet_heatmap/fold0/metrics_test_gated.csv"):
        assert (out / name).is_file(), name
    assert json.loads((out / "classifier" / "cv_settings.json").read_text())["backbone"] == "resnet10"
    for row in ("CAM only", "CAM + K-means", "CAM + U-Net", "CAM + K-means + U-Net", "fully supervised U-Net",
                "HU prior (no CAM), validated post-processing", "HU prior + U-Net",
                "CAM + U-Net, gated by the classifier", "CAM + K-means + U-Net, gated by the classifier",
                "HU prior + U-Net, gated by the classifier", "HU prior + component filter (slice labels)",
                "HU prior + component filter + U-Net", "HU prior + component filter + U-Net, gated by the classifier",
                "heatmap, validated benchmark recipe", "heatmap, validated benchmark recipe + U-Net",
                "heatmap, validated benchmark recipe + U-Net, gated by the classifier"):
        assert f"| {row} |" in text
    assert "fully supervised U-Net, gated" not in text  # the upper bound is not gated
    assert "| row | precision | recall | blood on labelled slices |" in text
    diag = json.loads((out / "ablation" / "ablation.json").read_text())["pseudo_label_diagnostics"]
    assert set(diag) == {"CAM only", "CAM + K-means", "HU prior (no CAM), validated post-processing",
                         "HU prior + component filter (slice labels)", "heatmap, validated benchmark recipe"}
    assert all(0 <= d["recall"] <= d["slice_recall"] <= 1 for d in diag.values())
    assert (out / "ablation" / "unet_prior" / "fold0" / "metrics_test_gated.csv").is_file()
    # the run record: the same command resumes, another setting is refused before any step runs
    assert json.loads((out / "pipeline_run.json").read_text())["methods"] == ["gradcam", "layercam"]
    assert main([*args[:8], "gradcam", *args[10:]]) == 2
    assert "holds a pipeline run with other settings (methods" in capsys.readouterr().err
    # the benchmark chose the post-processing per fold; the prior row used each fold's choice
    assert "chosen per fold on the selection patients" in (out / "benchmark" / "summary.md").read_text()
    from hemwsl.commands.pipeline import prior_choices

    chosen = prior_choices(out / "benchmark", 2)
    params = json.loads((out / "ablation" / "pseudo" / "prior" / "fold0" / "pseudo_params.json").read_text())
    assert params.get("brain_erosion", 0) == chosen[0].erosion and params["mode"] == "cam"
    assert f"hu_range={tuple(chosen[0].hu_range)}" in params["threshold"]
    assert f"min_size={chosen[0].min_size}" in params["threshold"]
    # the heatmap row used each fold's layer, threshold spec and value that the benchmark chose for gradcam
    from hemwsl.commands.pipeline import heatmap_choices

    hm = heatmap_choices(out / "benchmark", 2, "gradcam")
    assert heatmap_choices(out / "benchmark", 2, "no_such_method") is None
    for k in range(2):
        params = json.loads((out / "ablation" / "pseudo" / "heatmap" / f"fold{k}" / "pseudo_params.json").read_text())
        assert params["layer"] == hm[k]["layer"] and params.get("brain_erosion", 0) == hm[k]["spec"].erosion
        assert f"min_size={hm[k]['spec'].min_size}" in params["threshold"]
        if hm[k]["spec"].needs_fit:
            assert f"{hm[k]['value']:g}" in params["threshold"]
    assert "Heatmap row: gradcam with the layer" in text
    # every patient has out-of-fold heatmaps of both methods
    cams = sorted(p.stem.split(".")[0] for p in (out / "cam" / "gradcam" / "layer4").glob("*.nii.gz"))
    assert len(cams) == 8

    # --- the last weights (e.g. the final EMA weights) through the same steps ---
    cv = out / "classifier"
    cls = ["--set", "backbone=resnet10", "spatial_size=[32,32]", "epochs=1", "samples_per_epoch=16", "batch_size=8",
           "cache_workers=0"]
    # cam-cv / ablation name the missing file before anything runs
    assert main(["ablation", "--dataset-dir", str(data), "--cv-dir", str(cv), "--cam-dir", str(out / "cam"), "--out",
                 str(tmp_path / "abl_last"), "--folds", "2", "--layer", "layer4", "--unet-folds",
                 "--benchmark-dir", str(out / "benchmark"), "--checkpoint", "last"]) == 2
    err = capsys.readouterr().err
    assert "fold0/predictions_test_last.csv" in err and "eval_checkpoint=last" in err
    assert main(["train-cv", "--dataset-dir", str(data), "--out", str(cv), "--folds", "2", *cls, "eval_checkpoint=last"]) == 0
    assert all((cv / f"fold{k}" / "predictions_test_last.csv").is_file() for k in range(2))
    capsys.readouterr()
    # cam-cv refuses to mix checkpoints in one heatmap folder
    assert main(["cam-cv", "--dataset-dir", str(data), "--cv-dir", str(cv), "--out", str(out / "cam"), "--folds", "2",
                 "--methods", "gradcam", "--checkpoint", "last"]) == 2
    assert "holds heatmaps of the best checkpoints" in capsys.readouterr().err
    cam_last = tmp_path / "cam_last"
    assert main(["cam-cv", "--dataset-dir", str(data), "--cv-dir", str(cv), "--out", str(cam_last), "--folds", "2",
                 "--methods", "gradcam", "--checkpoint", "last"]) == 0
    assert json.loads((cam_last / "cam_checkpoint.json").read_text())["checkpoint"] == "last"
    assert len(list((cam_last / "gradcam" / "layer4").glob("*.nii.gz"))) == 8
    assert main(["ablation", "--dataset-dir", str(data), "--cv-dir", str(cv), "--cam-dir", str(cam_last), "--out",
                 str(tmp_path / "abl_last"), "--folds", "2", "--layer", "layer4", "--unet-folds",
                 "--benchmark-dir", str(out / "benchmark"), "--checkpoint", "last"]) == 0
    params = json.loads((tmp_path / "abl_last" / "pseudo" / "prior" / "fold0" / "pseudo_params.json").read_text())
    assert params["predictions"] == ["predictions_test_last.csv"]
    # --rows: only the heatmap row (no CAM, K-means or prior pseudo-labels, no U-Net); the prior rows need the
    # benchmark's choices
    assert main(["ablation", "--dataset-dir", str(data), "--cv-dir", str(cv), "--cam-dir", str(cam_last), "--out",
                 str(tmp_path / "abl_rows"), "--folds", "2", "--layer", "layer4", "--unet-folds", "--rows", "heatmap",
                 "--benchmark-dir", str(out / "benchmark"), "--checkpoint", "last"]) == 0
    rows_json = json.loads((tmp_path / "abl_rows" / "ablation.json").read_text())["rows"]
    assert list(rows_json) == ["heatmap, validated benchmark recipe"]
    assert sorted(p.name for p in (tmp_path / "abl_rows" / "pseudo").iterdir()) == ["heatmap"]
    # --predictions: one CSV of every patient's slice probabilities (e.g. cam-ensemble's) for the slice calls
    lines = [(cv / f"fold{k}" / "predictions_test_last.csv").read_text().strip().splitlines() for k in range(2)]
    header = lines[0][0].split(",")
    every = [",".join(v if h != "prob_any" else "1.0" for h, v in zip(header, row.split(",")))
             for part in lines for row in part[1:]]
    calls = tmp_path / "all_positive.csv"
    calls.write_text("\n".join([lines[0][0], *every]) + "\n")
    abl = ["ablation", "--dataset-dir", str(data), "--cv-dir", str(cv), "--cam-dir", str(cam_last), "--folds", "2",
           "--layer", "layer4", "--rows", "heatmap", "--benchmark-dir", str(out / "benchmark"), "--checkpoint", "last"]
    assert main([*abl, "--out", str(tmp_path / "abl_pred"), "--unet-folds", "--predictions", str(calls)]) == 0
    params = json.loads((tmp_path / "abl_pred" / "pseudo" / "heatmap" / "fold0" / "pseudo_params.json").read_text())
    assert params["predictions"] == ["all_positive.csv"]
    capsys.readouterr()
    assert main([*abl, "--out", str(tmp_path / "abl_rows"), "--unet-folds", "--predictions", str(calls)]) == 2
    assert "holds pseudo-labels made on the slice calls of the --cv-dir run" in capsys.readouterr().err
    assert main([*abl, "--out", str(tmp_path / "abl_pred"), "--unet-folds"]) == 2
    assert "all_positive.csv, not of the --cv-dir run" in capsys.readouterr().err
    assert main([*abl, "--out", str(tmp_path / "abl_pred2"), "--predictions", str(calls)]) == 2
    assert "give --unet-folds without folds" in capsys.readouterr().err
    calls.write_text("\n".join([lines[0][0], *every[1:]][:3]) + "\n")
    assert main([*abl, "--out", str(tmp_path / "abl_pred2"), "--unet-folds", "--predictions", str(calls)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no slice probabilities of patient(s)" in err[0]
    assert not (tmp_path / "abl_pred2").exists()
    capsys.readouterr()
    assert main(["ablation", "--dataset-dir", str(data), "--cv-dir", str(cv), "--cam-dir", str(cam_last), "--out",
                 str(tmp_path / "abl_rows2"), "--folds", "2", "--layer", "layer4", "--rows", "prior",
                 "--checkpoint", "last"]) == 2
    assert "--rows prior, prior_filtered and heatmap need --benchmark-dir" in capsys.readouterr().err
    # the ablation folder keeps one checkpoint's pseudo-labels: the best one's is refused there
    assert main(["ablation", "--dataset-dir", str(data), "--cv-dir", str(cv), "--cam-dir", str(cam_last), "--out",
                 str(tmp_path / "abl_last"), "--folds", "2", "--layer", "layer4", "--unet-folds",
                 "--benchmark-dir", str(out / "benchmark")]) == 2
    assert "holds" in capsys.readouterr().err


def test_filtered_prior_row_left_out_when_one_class(tmp_path, monkeypatch, capsys):
    """Training patients whose components all lie on slices of one label give no filter: the row is left out."""
    import hemwsl.experiments.ablation as ablation
    import hemwsl.pseudo.volume as volume
    from hemwsl.benchmark.specs import parse_threshold_spec
    from hemwsl.pseudo.components import OneClassError

    def one_class(*a, **k):
        raise OneClassError("the component filter needs components on slices with and without hemorrhage; got 3 and 0")

    monkeypatch.setattr(volume, "fit_component_filter", one_class)
    cv = tmp_path / "cv"
    for k in range(2):  # the out-of-fold predictions the rows read
        (cv / f"fold{k}").mkdir(parents=True)
        (cv / f"fold{k}" / "predictions_test.csv").write_text("patient,slice,label_any,prob_any\n")
    config = ablation.AblationConfig(dataset_dir="unused", out=str(tmp_path), benchmark_dir="unused", folds=2,
                                     cam_dir="unused", method="gradcam", layer="l", prob_threshold=0.5, cv_dir=str(cv))
    parts = {k: {"train": [], "val": [], "test": []} for k in range(2)}
    choices = {k: parse_threshold_spec("prior[e4,hu50-90,min50]") for k in range(2)}
    assert ablation._filtered_prior_pseudo_labels(config, parts, {}, tmp_path, choices) is None
    assert "row left out" in capsys.readouterr().out
