"""Benchmark EigenCAM's first principal component: hemwsl's power iteration vs a batched ``eigh``.

EigenCAM and EigenGradCAM project each sample's centred ``(h*w, C)`` activation matrix on its first
principal component. hemwsl takes it from :func:`hemwsl.cam.methods.top_eigenvector` (power iteration
on the smaller Gram matrix, ``eigh`` only for samples that do not converge); the reference is the
batched ``torch.linalg.eigh`` of the same Gram matrix (what hemwsl used before, and what any exact
eigen-solver does). Both run in float64 on the same activations of the benchmark's EfficientNetV2-S
(BN-calibrated random weights, 9 input channels) at features.5/6/7, in the same run; the table gives
the time per call and the largest difference of the projections relative to the map's maximum.

    python scripts/bench_eigen.py --size 512 --batch 8 --threads 2          # CPU
    python scripts/bench_eigen.py --device cuda --size 512 --batch 16       # GPU
"""

from __future__ import annotations

import argparse
import time

import torch

from bench_cam import LAYERS, calibrated_model, timed
from hemwsl.cam.methods import top_eigenvector


def centred(a: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The centred ``(B, hw, C)`` float64 matrix and whether the Gram matrix is ``C x C`` (else ``hw x hw``)."""
    b, c, h, w = a.shape
    m = torch.nan_to_num(a, nan=0.0).reshape(b, c, h * w).transpose(1, 2).double()
    return m - m.mean(dim=1, keepdim=True), h * w >= c


def projection(m: torch.Tensor, channels_gram: bool, solver) -> torch.Tensor:
    if channels_gram:
        vec, _ = solver(m.transpose(1, 2) @ m)
        return (m @ vec[:, :, None])[..., 0]
    vec, val = solver(m @ m.transpose(1, 2))
    return vec * val[:, None].clamp_min(0).sqrt()


def eigh_top(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    vals, vecs = torch.linalg.eigh(g)
    return vecs[:, :, -1], vals[:, -1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--size", type=int, default=512, help="slice size (default 512)")
    ap.add_argument("--batch", type=int, default=8, help="slices per batch (default 8)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = calibrated_model(device, args.size)
    acts: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: acts.__setitem__(n, o.detach())) for n in LAYERS]
    with torch.no_grad():
        model(torch.rand(args.batch, 9, args.size, args.size, device=device))
    for h in hooks:
        h.remove()
    print(f"# EigenCAM first component: power iteration vs eigh ({device}, {args.size} x {args.size}, "
          f"batch {args.batch}, {torch.get_num_threads()} thread(s), float64)\n")
    print("| layer | activations | Gram matrix | eigh ms | hemwsl ms | speedup | max diff / max |pc| | top eigenvalue ratio (max) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name in LAYERS:
        m, channels_gram = centred(acts[name])
        t_ref, ref = timed(lambda: projection(m, channels_gram, eigh_top), device, repeats=args.repeats, warmup=1)
        t_new, new = timed(lambda: projection(m, channels_gram, top_eigenvector), device, repeats=args.repeats, warmup=1)
        sign = torch.sign((ref * new).sum(1, keepdim=True))
        err = ((sign * new - ref).abs().amax(1) / ref.abs().amax(1)).max().item()
        g = m.transpose(1, 2) @ m if channels_gram else m @ m.transpose(1, 2)
        vals = torch.linalg.eigvalsh(g)
        ratio = (vals[:, -2] / vals[:, -1]).max().item()
        n = g.shape[-1]
        print(f"| {name} | {tuple(acts[name].shape)} | {n} x {n} | {t_ref * 1e3:.1f} | {t_new * 1e3:.1f} | "
              f"{t_ref / t_new:.1f}x | {err:.1e} | {ratio:.3f} |")
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
