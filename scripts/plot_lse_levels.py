"""Score maps of LSE heatmap networks (Chen & Kuo 2026) on a fold's test patients: CT with the true mask, then
the finest (f_0) and coarsest (f_3) score map of each cross-validation run given.

    python scripts/plot_lse_levels.py --dataset-dir ../shared/data/ct-ich \
        --runs outputs/ctich_lse_lite0_128 outputs/ctich_lse_lite0_128_nocons --fold 0 --out lse_levels.png

Each run is a ``hemwsl train-cv`` folder of an ``lse_*`` network (its ``cv_settings.json`` gives the network
and inputs; ``fold<k>/models/model_last.pt`` the weights). The slice shown per patient is the one with the
most blood; the patients are the fold's first ``--patients`` test patients with more than two positive slices.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    from hemwsl.constants import IMAGE, SLICE_LABELS
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.dataset import SliceDataset
    from hemwsl.engines.classifier import fold_datalists, load_weights
    from hemwsl.networks import build_network

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset-dir", required=True)
    ap.add_argument("--runs", nargs="+", required=True, help="train-cv folders of lse_* networks")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    datalist = build_datalist("ct-ich", args.dataset_dir)
    test = [e for e in fold_datalists(datalist, n_folds=args.folds, fold=args.fold)["test"]
            if sum(e[SLICE_LABELS]) > 2][: args.patients]
    nets = []
    for run in args.runs:
        cfg = json.loads((Path(run) / "cv_settings.json").read_text())
        windows, k = cfg.get("windows", ["brain"]), int(cfg.get("num_slices", 3))
        net = build_network(cfg["backbone"], in_channels=len(windows) * k, num_classes=1,
                            options=cfg.get("network_options") or {})
        nets.append((Path(run).name, load_weights(net, Path(run) / f"fold{args.fold}" / "models" / "model_last.pt"),
                     windows, k, tuple(cfg.get("spatial_size", [256, 256])), bool(cfg.get("skull_strip", False))))
    fig, ax = plt.subplots(len(test), 1 + 2 * len(nets), figsize=(3 * (1 + 2 * len(nets)), 3 * len(test)), squeeze=False)
    for r, e in enumerate(test):
        mask = np.asarray(nib.load(e["label"]).dataobj) > 0
        z = int(np.argmax(mask.sum((0, 1))))
        for c0, (name, net, windows, k, size, strip) in enumerate(nets):
            ds = SliceDataset([e], num_slices=k, windows=windows, spatial_size=size, skull_strip=strip)
            x = ds[z][IMAGE][None]
            if c0 == 0:
                m = torch.nn.functional.interpolate(torch.tensor(mask[:, :, z][None, None], dtype=torch.float32),
                                                    size=size)[0, 0].numpy() > 0.5
                ax[r, 0].imshow(np.rot90(x[0, min(1, x.shape[1] - 1)].numpy()), cmap="gray")
                ax[r, 0].contour(np.rot90(m), colors="r", linewidths=0.6)
                ax[r, 0].set_title(f"patient {e['patient']} z={z}", fontsize=8)
            with torch.no_grad():
                maps, logits = net(x, levels=True)
            for j, level in enumerate((0, 3)):
                f = maps[level][0, 0].numpy()
                a = ax[r, 1 + 2 * c0 + j]
                a.imshow(np.rot90(f), cmap="jet")
                a.set_title(f"{name}\nf{level} [{f.min():.1f}, {f.max():.1f}], l0={float(logits[0][0, 0]):.1f}", fontsize=7)
    for a in ax.ravel():
        a.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=70)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
