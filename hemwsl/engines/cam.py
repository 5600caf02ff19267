"""Workflow function of ``bundles/ich_cam``: a trained slice classifier + a datalist -> 3D heatmaps.

For every volume, every requested (method, layer) map is computed slice by slice with one
:class:`hemwsl.cam.CAMEngine` pass per batch, assembled on the CT grid and written as NIfTI with the
CT's affine (``<out>/<method>/<layer>/<patient>.nii.gz``, atomic). A volume whose maps are all written
is skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from hemwsl.constants import IMAGE, LABEL, PATIENT
from hemwsl.data.io import atomic_write_text
from hemwsl.data.settings import InputSettings
from hemwsl.errors import HemwslInputError

__all__ = ["CAM_PARTS", "CAM_GRIDS", "check_cam_request", "layer_network", "run_cam"]

logger = logging.getLogger(__name__)

#: The parts of a cross-validation fold whose volumes can be explained (``cam_part``, ``cam-cv --part``).
CAM_PARTS: tuple[str, ...] = ("train", "val", "test")
#: The grids heatmaps are written on (``cam_grid``, ``cam-cv --grid``).
CAM_GRIDS: tuple[str, ...] = ("ct", "input")


def layer_network(settings: Mapping) -> torch.nn.Module:
    """The classifier of resolved bundle ``settings`` (:func:`hemwsl.predict.resolve_bundle_settings`: ``backbone``,
    ``in_channels``, ``num_classes``, ``network_options``) without weights, to check target layers against: built
    on the ``meta`` device (no memory, no initialisation), or on the CPU for networks that cannot be."""
    from hemwsl.networks import build_network

    kw = dict(in_channels=settings["in_channels"], num_classes=settings["num_classes"],
              options=settings.get("network_options") or None)
    try:
        with torch.device("meta"):
            return build_network(settings["backbone"], **kw)
    except HemwslInputError as err:
        if "meta" not in str(err):
            raise
    return build_network(settings["backbone"], **kw)


def check_cam_request(methods: Sequence[str], layers: Sequence[str] | None = None, *, grid: str = "ct",
                      part: str | None = None, network: torch.nn.Module | None = None) -> None:
    """Check what a CAM run is asked for before any file is written: ``methods`` from the registry, ``grid`` one of
    :data:`CAM_GRIDS`, ``part`` (when given) one of :data:`CAM_PARTS` and, with ``network`` (its weights do not
    matter: a network built on the ``meta`` device will do), ``layers`` among its modules. Raises
    :class:`HemwslInputError` naming the first problem."""
    from hemwsl.cam import list_methods
    from hemwsl.errors import check_choice

    check_choice("grid", grid, CAM_GRIDS)
    if part is not None:
        check_choice("part", part, CAM_PARTS)
    if isinstance(methods, str):
        methods = [methods]
    if not methods:
        raise HemwslInputError("no CAM methods given")
    unknown = [m for m in methods if m not in list_methods()]
    if unknown:
        raise HemwslInputError(f"unknown method(s) {unknown}; accepted values: {', '.join(list_methods())}")
    if layers is not None:
        blank = [n for n in layers if not isinstance(n, str) or not n.strip()]
        if blank:  # e.g. --layers '': the whole model, found only at the first volume otherwise
            raise HemwslInputError(f"layers: empty target layer name {blank[0]!r}; give module paths such as layer4")
    if layers and network is not None:
        from hemwsl.networks.registry import get_target_layers

        get_target_layers(network, list(layers))


def run_cam(
    network: torch.nn.Module,
    datalist: Sequence[Mapping] | Mapping[str, Sequence[Mapping]],
    output_dir: str | os.PathLike,
    methods: Sequence[str] = ("gradcam", "gradcampp", "layercam"),
    layers: Sequence[str] | None = None,
    *,
    inputs: InputSettings | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    gate_with_probability: bool = False,
    progress: bool = True,
    grid: str = "ct",
    cache_dir: str | os.PathLike | None = None,
    part: str | None = None,
    flip_tta: bool = False,
    storage: str = "float32",
) -> list[Path]:
    """Write the heatmap volumes of every entry of ``datalist``; returns the written (or found) files.

    Args:
        network: the trained classifier (eval mode is set here).
        datalist: entries with ``image`` (and ``patient``); labels are not needed. Or the parts of a fold
            (:func:`hemwsl.engines.classifier.fold_datalists`) with ``part`` naming the one to explain.
        output_dir: root of ``<method>/<layer>/<patient>.nii.gz``.
        methods: names from :func:`hemwsl.cam.list_methods` (CAM and attribution methods); one name (a string)
            is the list of it.
        layers: module paths (one string: the list of it); default the network's registered target layers.
        inputs: the classifier's input settings (as in its bundle: windows, num_slices, spatial_size,
            skull_strip, window_on_device); default ``InputSettings()`` (the brain window, 3 slices, 256 x 256).
        batch_size: slices per engine call.
        device: where the network runs.
        gate_with_probability: multiply each slice's map by the slice's predicted probability.
        progress: show a progress bar over volumes.
        grid: ``"ct"`` writes the maps on the CT's in-plane grid (bilinear upsampling); ``"input"`` keeps
            the classifier's input size and writes the affine of that grid
            (:func:`hemwsl.cam.resized_affine`), so the file still lies on the CT in world coordinates
            while being ``(X/x)*(Y/y)`` times smaller and faster to write (a 512 x 512 x 35 float32
            map is ~32 MB gzipped and takes ~1.7 s to write; at 128 x 128, 16x less).
        cache_dir: the disk cache of preprocessed volumes the classifier was trained with (``train-cv
            --cache-dir``): each volume is then read back instead of skull stripped and resized again.
        part: with ``datalist`` the parts of a fold: which of :data:`CAM_PARTS` to explain (default ``test``).
        flip_tta: each map the mean of the slice's and its in-plane flip's (flipped back), see
            :func:`hemwsl.cam.explain_volume`; a volume done without it is not taken as done with it.
        storage: ``float32`` (default) or ``uint16`` (:data:`hemwsl.cam.volume.HEATMAP_STORAGE`): each file
            quantised to 65,536 levels of its own range with the NIfTI scale factor (within 8e-6 of the range;
            3-4x smaller and about 3x faster to write, :func:`hemwsl.cam.save_heatmaps`).

    The NIfTI files of a volume are compressed and written by a background thread while the next volume is
    explained (gzip releases the GIL); a volume's ``.done`` marker is written after its files, so an interrupted
    run still resumes exactly.
    """
    from hemwsl.cam import CAMEngine, save_heatmaps
    from hemwsl.cam.volume import check_storage
    from hemwsl.transforms.batch import BatchWindows

    if isinstance(methods, str):  # one method (e.g. `--cam_methods gradcam` of the bundle): not one per character
        methods = [methods]
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(gate_with_probability, bool):
        raise HemwslInputError(f"gate_with_probability must be true or false, got {gate_with_probability!r}")
    if not isinstance(flip_tta, bool):
        raise HemwslInputError(f"flip_tta must be true or false, got {flip_tta!r}")
    inputs = InputSettings.resolve(inputs)
    check_cam_request(methods, layers, grid=grid, part=part)
    check_storage(storage)
    if isinstance(datalist, Mapping):  # the parts of a fold
        part = part or "test"
        if part not in datalist:
            raise HemwslInputError(f"unknown part {part!r}; the fold has parts: {', '.join(map(str, datalist))}")
        datalist = datalist[part]
    if not datalist:
        raise HemwslInputError("datalist is empty: no volumes to explain")
    out = Path(output_dir)
    network = network.to(device).eval()
    engine = CAMEngine(network, list(methods), layers=list(layers) if layers else None, skip_inapplicable=True)
    win = BatchWindows(inputs.windows) if inputs.window_on_device else None
    writer = ThreadPoolExecutor(1, thread_name_prefix="hemwsl-heatmap-writer")

    def write(maps: dict, affine, stem: str, marker: Path) -> list[Path]:
        paths = list(save_heatmaps(maps, affine, out, stem, storage=storage).values())
        atomic_write_text(marker, "\n".join(str(p) for p in paths) + "\n")
        logger.info("%s: %d heatmaps written", stem, len(paths))
        return paths

    try:
        per_volume = _explain_all(datalist, out, methods, layers, engine, win, write, writer, inputs=inputs,
                                  batch_size=batch_size, device=device, gate_with_probability=gate_with_probability,
                                  grid=grid, cache_dir=cache_dir, progress=progress, flip_tta=flip_tta,
                                  storage=storage)
        written = [p for item in per_volume for p in (item.result() if isinstance(item, Future) else item)]
    finally:
        writer.shutdown(wait=True)  # files being written are finished (atomically) even when a volume failed
    return written


def _explain_all(datalist, out: Path, methods, layers, engine, win, write, writer, *, inputs: InputSettings,
                 batch_size, device, gate_with_probability, grid, cache_dir, progress, flip_tta=False,
                 storage: str = "float32") -> list:
    """The volumes of ``datalist`` through the engine; each volume's maps go to ``write`` on the ``writer`` thread
    (at most one volume waits, so memory stays bounded). Returns, in datalist order, each volume's files (found
    done) or the future of its writing."""
    import nibabel as nib
    from tqdm import tqdm

    from hemwsl.cam import explain_volume, resized_affine
    from hemwsl.data.dataset import SliceDataset

    items: list = []
    # a volume is done for THIS set of methods and layers (another set, e.g. a method added later into
    # the same folder, is computed again)
    # (and for flip_tta, a run with it)
    # (and for the storage: uint16 files are not taken as the float32 ones)
    request = [sorted(methods), sorted(layers or [])] + (["flip_tta"] if flip_tta else []) + \
        ([f"storage={storage}"] if storage != "float32" else [])
    run_key = hashlib.sha1(json.dumps(request).encode()).hexdigest()[:10]
    for entry in tqdm(datalist, desc="volumes", disable=not progress):
        stem = str(entry.get(PATIENT) or Path(entry[IMAGE]).name.split(".")[0])
        marker = out / ".done" / f"{stem}.{run_key}"
        if marker.exists():
            items.append([Path(p) for p in marker.read_text().split("\n") if p])
            continue
        header = nib.load(str(entry[IMAGE]))
        ds = SliceDataset([{IMAGE: entry[IMAGE], LABEL: entry.get(LABEL)}], **inputs.as_kwargs(), cache_dir=cache_dir)
        stack = torch.stack([ds[i][IMAGE] for i in range(len(ds))])
        if win is not None:
            stack = win(stack)
        maps = explain_volume(engine, stack.to(device), batch_size=batch_size,
                              gate_with_probability=gate_with_probability,
                              grid_shape=header.shape[:2] if grid == "ct" else None, flip_tta=flip_tta)
        affine = header.affine
        if grid == "input":
            affine = resized_affine(affine, header.shape[:2], stack.shape[-2:])
        for item in items:  # the previous volume's files are written before this one's are queued
            if isinstance(item, Future):
                item.result()
        items.append(writer.submit(write, maps, affine, stem, marker))
    return items
