"""Benchmark hemwsl's CAM engine against pytorch-grad-cam on EfficientNetV2-S (2.5D, 9 channels).

For every (method, layer) of the grid {gradcam, gradcampp, xgradcam, hirescam, gradcam_elementwise,
layercam, eigencam, eigengradcam, ablationcam, scorecam} x {features.5, features.6, features.7}, both
libraries explain the same batch of slices, on the same model and machine, in the same run:

* pytorch-grad-cam: one ``CAM(model, [layer])`` call per cell (its usual use; each gradient cell costs
  a forward and a full backward with weight gradients);
* hemwsl "alone": a ``CAMEngine(model, [method], layers=[layer])`` call per cell;
* hemwsl "in grid": the 8 gradient/eigen methods x 3 layers come from ONE engine call (one forward,
  one ``torch.autograd.grad``), reported as the call's time / 24 per cell; Ablation-CAM and Score-CAM
  cells are separate calls (they re-run the network), so "in grid" = "alone" for them;
* floor: one forward with hooks + one ``torch.autograd.grad`` to the 3 layers (what any one-pass
  gradient method must at least pay).

Whole-grid time: hemwsl = the one-pass gradient grid + the 6 perturbation cells; pytorch-grad-cam = the
sum of its 30 cells. ``--quick`` (128 x 128, batch 2, one intra-op thread) times Score-CAM (both
libraries) and pytorch-grad-cam's Ablation-CAM on the first K = 16 channels only and extrapolates
linearly to all C channels (their cost is linear in the number of channels: one forward per channel
and slice); such cells are marked "extrapolated from K of C channels". Everything else is measured.
pytorch-grad-cam's Score-CAM materialises all B x C masked inputs at once; when that exceeds 8 GiB
(CPU) or 70% of the free GPU memory it is timed on 16 channels too, and the note says so.

Score-CAM masks the input, so it costs one full forward per (slice, channel) in both libraries and
they run at parity; the "without Score-CAM" line isolates the rest of the grid.

The "max |d|" column checks agreement on the gradient cells: pytorch-grad-cam's output vs hemwsl's raw
map put through the same scaling (min-max, resize, min-max). EfficientNet stages end in SiLU or a
residual sum (minimum != 0), where pytorch-grad-cam's AblationLayer ablates to ``min - 1e7`` instead of
0, so Ablation-CAM values are not compared here (see tests/cam for the oracle tests).

Usage::

    python scripts/bench_cam.py --quick
    python scripts/bench_cam.py --device cuda --sizes 256 512 --batch 8
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hemwsl.cam import CAMEngine, capture, normalize_per_slice, upsample  # noqa: E402
from hemwsl.cam.methods import ScoreCAM  # noqa: E402
from hemwsl.cam.registry import PGC_METHODS  # noqa: E402
from hemwsl.networks import build_network  # noqa: E402

LAYERS = ("features.5", "features.6", "features.7")
ONE_PASS = ("gradcam", "gradcampp", "xgradcam", "hirescam", "gradcam_elementwise", "layercam", "eigencam", "eigengradcam")
PERTURBATION = ("ablationcam", "scorecam")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 1, warmup: int = 0) -> tuple[float, Any]:
    """Median wall time of ``fn()`` over ``repeats`` runs (after ``warmup`` runs), and its last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(max(1, repeats)):
        _sync(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def calibrated_model(device: torch.device, size: int, seed: int = 0) -> torch.nn.Module:
    """EfficientNetV2-S, 9 input channels, one logit, BatchNorm statistics calibrated on random slices."""
    torch.manual_seed(seed)
    model = build_network("efficientnet_v2_s", in_channels=9, num_classes=1).to(device)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 9, min(size, 128), min(size, 128), device=device))
    return model.eval()


def floor_time(model, x, device, repeats) -> float:
    """One forward with hooks on the 3 layers + one torch.autograd.grad to them."""

    def run():
        with capture(model, LAYERS) as cap:
            with torch.enable_grad():
                logits = model(x.clone().requires_grad_(True))
            return cap.gradients(logits[:, 0])

    return timed(run, device, repeats, warmup=1)[0]


def scorecam_floor(model, x, n_inputs: int, device, batch_size: int, k: int | None = None) -> float:
    """Score-CAM's floor for one layer: bare batched forwards (inference mode, no hooks, no mask building) of
    ``n_inputs`` masked inputs, ``batch_size`` per forward, as Score-CAM batches them; with ``k``, the forwards of
    ``k`` inputs per slice are timed and scaled to ``n_inputs`` (the cost is linear in the inputs)."""
    b = x.shape[0]
    todo = n_inputs if k is None else min(n_inputs, b * k)
    g = torch.Generator(device="cpu").manual_seed(1)
    masked = (x[torch.arange(batch_size) % b] * torch.rand(batch_size, 1, *x.shape[-2:], generator=g).to(device))

    def run():
        with torch.inference_mode():
            left = todo
            while left > 0:
                n = min(batch_size, left)
                model(masked[:n])
                left -= n

    t = timed(run, device, 1, warmup=1)[0]
    return t * n_inputs / todo


def scorecam_floor_table(model, x, device, k: int | None) -> None:
    """hemwsl's Score-CAM per layer against its floor (``scorecam_floor`` of B x C inputs), same run."""
    bs = ScoreCAM()._batch_size(x.device)
    batch = x.shape[0]
    print(f"\n### Score-CAM against its floor ({x.shape[-1]} x {x.shape[-1]}, batch {batch}, {bs} masked inputs per "
          "forward)\n")
    print("| layer | C | hemwsl Score-CAM s/slice | floor s/slice (B x C bare forwards) | ratio | notes |")
    print("|---|---:|---:|---:|---:|---|")
    for layer in LAYERS:
        c = _channels(model, layer, x)
        t_h, note = run_hemwsl(model, "scorecam", layer, x, device, 1, k)
        t_f = scorecam_floor(model, x, batch * c, device, bs, k)
        notes = "; ".join(v for v in (note, "" if k is None or k >= c else f"floor scaled from {k} of {c} channels") if v)
        print(f"| {layer} | {c} | {t_h / batch:.4f} | {t_f / batch:.4f} | {t_h / t_f:.2f}x | {notes} |")


# ---- pytorch-grad-cam ---------------------------------------------------------------------------


def _silence_pgc_tqdm() -> None:
    import pytorch_grad_cam.ablation_cam as ab
    import pytorch_grad_cam.score_cam as sc

    class _Quiet:
        @staticmethod
        def tqdm(it, *a, **k):
            return it

    ab.tqdm = _Quiet
    sc.tqdm = _Quiet


def pgc_subset_class(base: type, k: int) -> type:
    """A pytorch-grad-cam class that computes the weights of the first ``k`` channels only (timed)."""

    class Subset(base):
        weights_time = 0.0

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            t = time.perf_counter()
            w = super().get_cam_weights(input_tensor, target_layer, targets, activations[:, :k], grads)
            _sync(self.device)
            type(self).weights_time = time.perf_counter() - t
            full = np.zeros(activations.shape[:2], dtype=np.float32)
            full[:, :k] = w
            return full

    return Subset


def pgc_memory_budget(device: torch.device) -> int:
    """Bytes pytorch-grad-cam's Score-CAM may allocate at once before we time it on a channel subset."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.7 * free)
    return 8 * 2**30


def run_pgc(model, method: str, layer: str, x, device, repeats: int, k: int | None, fwd_time: float):
    """(seconds for the batch, measured-or-extrapolated note, output or None)."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = getattr(pgc, PGC_METHODS[method])
    targets = [ClassifierOutputTarget(0)] * x.shape[0]
    channels = model.get_submodule(layer)
    c = _channels(model, layer, x)
    note = ""
    if method == "scorecam" and (k is None or k >= c):
        # pytorch-grad-cam builds all B x C masked inputs at once: B * C * (C_in + 1) * H * W floats
        need = x.shape[0] * c * (x.shape[1] + 1) * x[0, 0].numel() * x.element_size()
        if need > pgc_memory_budget(device):
            k = 16
            note = f"needs {need / 2**30:.0f} GiB at once, "
    if method in PERTURBATION and k is not None and k < c:
        sub = pgc_subset_class(cls, k)
        cam = sub(model, [channels])
        if method == "scorecam":
            cam.batch_size = 16  # its default
        try:
            t_call, _ = timed(lambda: cam(x, targets), device, 1)
        finally:
            cam.activations_and_grads.release()
        tw = sub.weights_time
        # AblationCAM's get_cam_weights starts with one plain forward of the batch: not per channel
        per_channel = tw - (fwd_time if method == "ablationcam" else 0.0)
        est = t_call + max(per_channel, 0.0) * (c / k - 1)
        return est, f"{note}extrapolated from {k} of {c} channels", None
    cam = cls(model, [channels])
    try:
        warm = 0 if method in PERTURBATION else 1
        reps = 1 if method in PERTURBATION else repeats
        t, out = timed(lambda: cam(x, targets), device, reps, warmup=warm)
    finally:
        cam.activations_and_grads.release()
    for p in model.parameters():
        p.grad = None
    return t, "", out


# ---- hemwsl -------------------------------------------------------------------------------------


class TimedSubsetScoreCAM(ScoreCAM):
    """hemwsl's Score-CAM scoring the first ``k`` channels only (timed), for extrapolation."""

    def __init__(self, k: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.k = k
        self.scores_time = 0.0

    def channel_scores(self, ctx, channels=None):
        c = ctx.activations.shape[1]
        _sync(ctx.inputs.device)
        t = time.perf_counter()
        part = super().channel_scores(ctx, channels=range(self.k))
        _sync(ctx.inputs.device)
        self.scores_time = time.perf_counter() - t
        full = torch.zeros(part.shape[0], c, dtype=part.dtype, device=part.device)
        full[:, : self.k] = part
        return full


_CHANNELS: dict[str, int] = {}


def _channels(model, layer, x) -> int:
    if layer not in _CHANNELS:
        with capture(model, [layer]) as cap, torch.no_grad():
            model(x[:1])
            _CHANNELS[layer] = int(cap.activations[layer].shape[1])
    return _CHANNELS[layer]


def run_hemwsl(model, method, layer, x, device, repeats, k):
    c = _channels(model, layer, x)
    if method == "scorecam" and k is not None and k < c:
        m = TimedSubsetScoreCAM(k)
        engine = CAMEngine(model, [m], layers=[layer])
        t_call, _ = timed(lambda: engine(x), device, 1)
        return t_call + m.scores_time * (c / k - 1), f"extrapolated from {k} of {c} channels"
    engine = CAMEngine(model, [method], layers=[layer])
    if method in PERTURBATION:
        t, _ = timed(lambda: engine(x), device, 1)
        note = ""
        if method == "ablationcam":
            runner = engine._runners.get(layer)
            note = "closed form" if runner is None else f"{runner.mode_used}-only re-runs (incl. one-time probe)"
        return t, note
    return timed(lambda: engine(x), device, repeats, warmup=1)[0], ""


def pgc_like(raw: torch.Tensor, size) -> np.ndarray:
    return normalize_per_slice(upsample(normalize_per_slice(raw), size)).cpu().numpy()


# ---- main ---------------------------------------------------------------------------------------


def bench_size(model, size, batch, device, repeats, k) -> dict[str, float]:
    _CHANNELS.clear()
    g = torch.Generator(device="cpu").manual_seed(size)
    x = torch.rand(batch, 9, size, size, generator=g).to(device)
    with torch.no_grad():
        fwd = timed(lambda: model(x), device, repeats, warmup=1)[0]
    floor = floor_time(model, x, device, repeats)
    grid_engine = CAMEngine(model, list(ONE_PASS), layers=list(LAYERS))
    t_grid, _ = timed(lambda: grid_engine(x), device, repeats, warmup=1)
    raw = grid_engine.feature_maps(x)
    n_cells = len(ONE_PASS) * len(LAYERS)

    rows = []
    hem_total = t_grid
    pgc_total = 0.0
    score_h = score_p = 0.0
    for method in ONE_PASS + PERTURBATION:
        for layer in LAYERS:
            c = _channels(model, layer, x)
            t_h, note_h = run_hemwsl(model, method, layer, x, device, repeats, k)
            t_p, note_p, out_p = run_pgc(model, method, layer, x, device, repeats, k, fwd)
            grid = t_grid / n_cells if method in ONE_PASS else t_h
            if method in PERTURBATION:
                hem_total += t_h
            pgc_total += t_p
            if method == "scorecam":
                score_h += t_h
                score_p += t_p
            diff = "n/a"
            if out_p is not None and method not in ("eigencam", "eigengradcam", "ablationcam", "scorecam"):
                diff = f"{np.abs(pgc_like(raw[(method, layer)], (size, size)) - out_p).max():.1e}"
            notes = []
            if note_h:
                notes.append(f"hemwsl: {note_h}")
            if note_p:
                notes.append(f"pgc: {note_p}")
            if method in ONE_PASS:
                notes.append(f"grid: 1 pass for {n_cells} maps")
            rows.append((method, layer, c, t_h / batch, grid / batch, t_p / batch, t_p / t_h, t_p / grid, diff, "; ".join(notes)))

    print(f"\n### {size} x {size}, batch {batch} ({device.type})\n")
    print(f"forward only: {fwd / batch:.4f} s/slice; floor (forward + autograd.grad to {len(LAYERS)} layers): "
          f"{floor / batch:.4f} s/slice; hemwsl one-pass grid of {n_cells} maps: {t_grid / batch:.4f} s/slice "
          f"({t_grid / floor:.2f}x the floor)\n")
    print("| method | layer | C | hemwsl alone s/slice | hemwsl in grid s/slice | pytorch-grad-cam s/slice "
          "| speedup alone | speedup in grid | max abs diff | notes |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.4f} | {r[4]:.4f} | {r[5]:.4f} | {r[6]:.1f}x | {r[7]:.1f}x | {r[8]} | {r[9]} |")
    print(f"\nwhole grid ({len(rows)} cells), {size} x {size}: hemwsl {hem_total:.2f} s "
          f"({hem_total / batch:.3f} s/slice), pytorch-grad-cam {pgc_total:.2f} s ({pgc_total / batch:.3f} s/slice), "
          f"speedup {pgc_total / hem_total:.1f}x; without Score-CAM (the same full forwards in both libraries): "
          f"hemwsl {hem_total - score_h:.2f} s, pytorch-grad-cam {pgc_total - score_p:.2f} s, "
          f"speedup {(pgc_total - score_p) / (hem_total - score_h):.1f}x")
    return {"hemwsl": hem_total, "pgc": pgc_total, "hemwsl_noscore": hem_total - score_h, "pgc_noscore": pgc_total - score_p}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="128 x 128, batch 2, channel subsets for Score-CAM / pgc Ablation-CAM")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="slice sizes (default 256 512; quick: 128)")
    p.add_argument("--batch", type=int, default=None, help="slices per batch (default 8; quick: 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats of the cheap cells (default 3; quick: 2)")
    p.add_argument("--channels-subset", type=int, default=None,
                   help="time Score-CAM and pgc Ablation-CAM on this many channels and extrapolate (default: all; quick: 16)")
    p.add_argument("--scorecam-floor-only", action="store_true",
                   help="only the table of hemwsl's Score-CAM against its floor (bare batched forwards of the masked inputs)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's; quick on CPU: 1, faster on a small shared CPU)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    sizes = args.sizes or ([128] if args.quick else [256, 512])
    batch = args.batch or (2 if args.quick else 8)
    repeats = args.repeats or (2 if args.quick else 3)
    k = args.channels_subset if args.channels_subset is not None else (16 if args.quick else None)
    threads = args.threads or (1 if args.quick and device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
        try:  # numpy's BLAS too (pytorch-grad-cam's SVDs run there)
            from threadpoolctl import threadpool_limits

            threadpool_limits(threads)
        except ImportError:
            pass
    _silence_pgc_tqdm()

    try:
        from importlib.metadata import version

        pgc_version = version("grad-cam")
    except Exception:  # not installed as a distribution
        pgc_version = "?"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# hemwsl CAM engine vs pytorch-grad-cam {pgc_version}")
    print(f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s); "
          f"EfficientNetV2-S, 9 input channels, layers {', '.join(LAYERS)}; target: logit 0")
    if k is not None:
        print(f"Score-CAM (both libraries) and pytorch-grad-cam's Ablation-CAM are timed on at most {k} channels per layer "
              "and extrapolated linearly to all channels (marked in the notes); all other cells are measured.")

    t0 = time.perf_counter()
    totals = {"hemwsl": 0.0, "pgc": 0.0, "hemwsl_noscore": 0.0, "pgc_noscore": 0.0}
    for size in sizes:
        model = calibrated_model(device, size)
        g = torch.Generator(device="cpu").manual_seed(size)
        x_floor = torch.rand(batch, 9, size, size, generator=g).to(device)
        _CHANNELS.clear()
        scorecam_floor_table(model, x_floor, device, k)
        if args.scorecam_floor_only:
            continue
        with contextlib.redirect_stderr(io.StringIO()):
            res = bench_size(model, size, batch, device, repeats, k)
        for key in totals:
            totals[key] += res[key]
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f} s")
    if args.scorecam_floor_only:
        return 0
    print(f"grid speedup without Score-CAM: {totals['pgc_noscore'] / totals['hemwsl_noscore']:.1f}x")
    print(f"grid speedup vs pytorch-grad-cam: {totals['pgc'] / totals['hemwsl']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
