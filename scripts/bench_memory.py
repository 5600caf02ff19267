"""Peak memory (RSS) of one 512 x 512 x 60 CT volume through the loader and the CAM step.

    python scripts/bench_memory.py [--size 512 --slices 60 --input-size 512 --backbone resnet18]

Linux only (reads ``VmHWM`` from ``/proc/self/status``). Each stage runs in a fresh Python process on a deterministic synthetic phantom of that size (written once to a
temporary folder), so each peak is that stage's own, interpreter and libraries included; the first row is the
baseline of importing hemwsl, torch and MONAI. Prints a table of peak resident set size (MiB) and wall time:

* ``load``: the volume and mask read and checked (``hemwsl.data.io.load_pair``);
* ``loader``: the cached 2.5D slice dataset (``SliceDataset``, skull strip, resize to ``--input-size``) and one
  pass over every slice;
* ``cam``: ``hemwsl.engines.cam.run_cam`` of an untrained ``--backbone`` (GradCAM and LayerCAM at the network's
  registered layers, batches of ``--batch-size``) writing the heatmap volumes on the CT grid.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

STAGE = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, monai
import hemwsl
from hemwsl.constants import IMAGE, LABEL, PATIENT
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
entry = {IMAGE: cfg["image"], LABEL: cfg["mask"], PATIENT: "p0"}
if cfg["stage"] == "load":
    from hemwsl.data.io import load_pair
    image, mask = load_pair(entry[IMAGE], entry[LABEL])
elif cfg["stage"] == "loader":
    from hemwsl.data.dataset import SliceDataset
    ds = SliceDataset([entry], num_slices=3, windows=["brain", "subdural", "blood"],
                      spatial_size=(cfg["input_size"],) * 2, skull_strip=True)
    for i in range(len(ds)):
        ds[i]
elif cfg["stage"] == "cam":
    from hemwsl.data.settings import InputSettings
    from hemwsl.engines.cam import run_cam
    from hemwsl.networks import build_network
    net = build_network(cfg["backbone"], in_channels=9, num_classes=1)
    inputs = InputSettings(windows=("brain", "subdural", "blood"), num_slices=3,
                           spatial_size=(cfg["input_size"],) * 2, skull_strip=True)
    run_cam(net, [entry], cfg["out"], methods=["gradcam", "layercam"], inputs=inputs, batch_size=cfg["batch_size"],
            progress=False, grid="ct")
# VmHWM, the peak RSS of this process's own address space (getrusage's ru_maxrss survives exec on Linux and
# would report the parent's peak)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024.0
print(json.dumps({"peak_mib": peak, "seconds": time.perf_counter() - t0}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="in-plane size of the phantom (default: 512)")
    ap.add_argument("--slices", type=int, default=60, help="slices of the phantom (default: 60)")
    ap.add_argument("--input-size", type=int, default=512, help="classifier input size (default: 512)")
    ap.add_argument("--backbone", default="resnet18", help="network of the CAM stage (default: resnet18)")
    ap.add_argument("--batch-size", type=int, default=8, help="slices per CAM engine call (default: 8)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    args = ap.parse_args()

    from hemwsl.data.synthetic import write_synthetic_ctich

    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_ctich(Path(tmp) / "data", n_patients=1, seed=0, shape=(args.size, args.size, args.slices),
                                     negative_fraction=0.0)
        image = sorted((Path(root) / "ct_scans").glob("*.nii.gz"))[0]
        mask = Path(root) / "masks" / image.name
        rows = []
        for stage in ("import", "load", "loader", "cam"):
            cfg = {"stage": stage, "image": str(image), "mask": str(mask), "input_size": args.input_size,
                   "backbone": args.backbone, "batch_size": args.batch_size, "threads": args.threads,
                   "out": str(Path(tmp) / "cam")}
            res = subprocess.run([sys.executable, "-c", STAGE, json.dumps(cfg)], capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"stage {stage} failed:\n{res.stderr[-2000:]}")
            rows.append((stage, json.loads(res.stdout.strip().splitlines()[-1])))
    volume_mib = args.size * args.size * args.slices * 4 / 2**20
    print(f"One {args.size} x {args.size} x {args.slices} volume ({volume_mib:.0f} MiB as float32), "
          f"classifier input {args.input_size} px, {args.backbone}, {args.threads} threads\n")
    print("| stage | peak RSS (MiB) | above import (MiB) | wall time (s) |")
    print("|---|---|---|---|")
    base = rows[0][1]["peak_mib"]
    for stage, r in rows:
        print(f"| {stage} | {r['peak_mib']:.0f} | {r['peak_mib'] - base:.0f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
