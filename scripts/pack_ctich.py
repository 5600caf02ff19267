"""Pack a CT-ICH folder into a few compact, lossless parts (to move it to a machine with a small
transfer limit) and unpack it back into the CT-ICH layout.

    python scripts/pack_ctich.py pack --root ../shared/data/ct-ich --out packed --parts 2
    python scripts/pack_ctich.py unpack --packed packed --out /tmp/ct-ich

The CT-ICH copy holds integer HU clipped to [-20, 100] (see its README), so each scan is stored as
uint8 (HU + 20) and compressed with LZMA (about 1.3x smaller than the gzip NIfTI files); masks and
CSVs are copied as they are. ``unpack`` checks every scan fits and restores int16 HU with the
original affine, so datalists built on the unpacked folder equal those on the original.
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

OFFSET = 20  # HU -20 -> 0


def _pack_one(path: str) -> tuple[str, dict, bytes]:
    import nibabel as nib

    img = nib.load(path)
    hu = np.asarray(img.dataobj)
    if hu.min() < -OFFSET or hu.max() > 255 - OFFSET or not np.array_equal(hu, np.round(hu)):
        raise SystemExit(f"{path}: values outside the integer range [-20, 235]; cannot pack losslessly")
    u8 = (hu.astype(np.int16) + OFFSET).astype(np.uint8)
    meta = {"shape": list(u8.shape), "affine": np.asarray(img.affine).tolist()}
    return Path(path).name, meta, lzma.compress(u8.tobytes(order="C"), preset=6)


def pack(root: Path, out: Path, parts: int, workers: int) -> None:
    scans = sorted((root / "ct_scans").glob("*.nii*"))
    out.mkdir(parents=True, exist_ok=True)
    for i in range(parts):
        (out / f"part{i}").mkdir(exist_ok=True)
    with ProcessPoolExecutor(workers) as ex:
        for k, (name, meta, blob) in enumerate(ex.map(_pack_one, map(str, scans))):
            d = out / f"part{k % parts}"
            (d / f"{name}.xz").write_bytes(blob)
            (d / f"{name}.json").write_text(json.dumps(meta))
            print(f"{name}: {len(blob) / 1e6:.1f} MB -> {d.name}", flush=True)
    shutil.copytree(root / "masks", out / "part0" / "masks", dirs_exist_ok=True)
    for f in root.glob("*.csv"):
        shutil.copy2(f, out / "part0" / f.name)


def unpack(packed: list[Path], out: Path) -> None:
    import nibabel as nib

    (out / "ct_scans").mkdir(parents=True, exist_ok=True)
    for d in packed:
        for blob in sorted(d.glob("*.xz")):
            meta = json.loads(blob.with_suffix(".json").read_text())
            u8 = np.frombuffer(lzma.decompress(blob.read_bytes()), dtype=np.uint8).reshape(meta["shape"])
            hu = u8.astype(np.int16) - OFFSET
            nib.save(nib.Nifti1Image(hu, np.asarray(meta["affine"])), out / "ct_scans" / blob.name[: -len(".xz")])
        if (d / "masks").is_dir():
            shutil.copytree(d / "masks", out / "masks", dirs_exist_ok=True)
        for f in d.glob("*.csv"):
            shutil.copy2(f, out / f.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--parts", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    u = sub.add_parser("unpack")
    u.add_argument("--packed", required=True, type=Path, nargs="+", help="packed folder(s) or their part folders")
    u.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    if args.cmd == "pack":
        pack(args.root, args.out, args.parts, args.workers)
    else:
        dirs = []
        for d in args.packed:
            parts = sorted(d.glob("part*"))
            dirs += parts if parts else [d]
        unpack(dirs, args.out)


if __name__ == "__main__":
    main()
