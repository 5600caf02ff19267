"""Benchmark the cached 2.5D slice loader against re-reading a NIfTI file per slice.

    python scripts/bench_data.py --root ../shared/data/ct-ich --size 256 --windows brain subdural blood

Prints a table: cache fill time, slices/s of an epoch over the cached volumes (with and without the
augmentation preset), and slices/s of the naive loader that reads the volume file for every slice.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="dataset root in the CT-ICH layout")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--windows", nargs="+", default=["brain", "subdural", "blood"])
    ap.add_argument("--num-slices", type=int, default=3)
    ap.add_argument("--patients", type=int, default=0, help="use only the first N patients (0: all)")
    ap.add_argument("--naive-slices", type=int, default=40, help="slices timed for the naive loader")
    ap.add_argument("--skull-strip", action="store_true")
    args = ap.parse_args()

    import torch

    from hemwsl.data import SliceDataset, build_datalist, datalist_stats
    from hemwsl.data.io import load_pair
    from hemwsl.engines.classifier import slice_transform
    from hemwsl.transforms import MultiWindow, stack_indices

    torch.set_num_threads(max(1, torch.get_num_threads()))
    datalist = build_datalist("ct-ich", args.root)
    if args.patients:
        datalist = datalist[: args.patients]
    s = datalist_stats(datalist)
    rows = []
    t = time.perf_counter()
    ds = SliceDataset(datalist, num_slices=args.num_slices, windows=args.windows, spatial_size=(args.size, args.size),
                      skull_strip=args.skull_strip)
    fill = time.perf_counter() - t
    rows.append(("cache fill (read + resize every volume once)", f"{fill:.1f} s", f"{s['slices'] / fill:.1f}"))

    for name, transform in (("cached epoch, no augmentation", None), ("cached epoch, augmentation", slice_transform(True))):
        ds.transform = transform
        t = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        dt = time.perf_counter() - t
        rows.append((name, f"{dt:.1f} s", f"{len(ds) / dt:.1f}"))
    ds.transform = None

    # Reference: the naive loader re-reads (and decompresses) the NIfTI file for every slice.
    window = MultiWindow(args.windows)
    rng = np.random.default_rng(0)
    picks = [(int(v), None) for v in rng.integers(0, len(datalist), args.naive_slices)]
    t = time.perf_counter()
    for v, _ in picks:
        img, _mask = load_pair(datalist[v]["image"], datalist[v]["label"])
        z = int(rng.integers(0, img.shape[-1]))
        vol = torch.from_numpy(img.array)
        stack = vol[..., stack_indices(z, args.num_slices, vol.shape[-1])].permute(2, 0, 1)[:, None]
        stack = torch.nn.functional.interpolate(stack, size=(args.size, args.size), mode="bilinear", antialias=True)
        window(stack[:, 0])
    dt = time.perf_counter() - t
    rows.append((f"naive: re-read the file per slice ({args.naive_slices} slices)", f"{dt:.1f} s",
                 f"{args.naive_slices / dt:.1f}"))

    print(f"dataset: patients={s['patients']} slices={s['slices']} positive_slices={s['positive_slices']}; "
          f"size {args.size}, windows {args.windows}, {args.num_slices}-slice stacks, "
          f"torch threads {torch.get_num_threads()}")
    print(f"| {'loader':<55} | {'time':>8} | {'slices/s':>9} |")
    print(f"|{'-' * 57}|{'-' * 10}|{'-' * 11}|")
    for r in rows:
        print(f"| {r[0]:<55} | {r[1]:>8} | {r[2]:>9} |")
    cached = float(rows[1][2])
    naive = float(rows[-1][2])
    print(f"cached epoch speedup vs naive: {cached / naive:.0f}x")


if __name__ == "__main__":
    main()
