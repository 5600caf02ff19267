"""Slice datasets over cached CT volumes.

Each volume is read from disk once (MONAI :class:`~monai.data.CacheDataset` over the datalist, with
the deterministic volume-level transforms: load, check, optional skull stripping, in-plane resize).
Slices are then cut from the cached volumes: an epoch never re-reads a file per slice. Each sample is
a 2.5D stack of ``num_slices`` adjacent slices per CT window, as channels, with the centre slice's
mask and labels as targets.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import json
import logging
import os
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import CacheDataset
from monai.transforms import Compose, MapTransform

from hemwsl.constants import (BRAIN, IMAGE, LABEL, MASK, PATIENT, SEQUENCE_LENGTH, SLICE_INDEX, SLICE_LABELS,
                              SUBTYPE_LABELS)
from hemwsl.data.io import load_pair
from hemwsl.errors import HemwslInputError, input_error_message
from hemwsl.transforms.array import MultiWindow, SkullStrip, stack_indices

__all__ = ["LoadCTVolumed", "SliceDataset", "SliceSequences", "collate_sequences",
           "balanced_sampler", "warm_disk_cache"]

logger = logging.getLogger(__name__)


class _VolumeCache(CacheDataset):
    """MONAI's ``CacheDataset`` whose cache filling, on an error, waits for the volumes being loaded by the other
    threads before it raises: MONAI's ``ThreadPool`` is terminated with its threads still inside native code,
    and the interpreter then aborts at exit (SIGABRT) even when the error was caught."""

    def _fill_cache(self, indices=None) -> list:
        if self.cache_num <= 0:
            return []
        indices = list(range(self.cache_num)) if indices is None else list(indices)
        with ThreadPoolExecutor(self.num_workers) as pool:  # its exit waits for the running tasks
            futures = [pool.submit(self._load_cache_item, i) for i in indices]
            try:
                if self.progress:
                    from tqdm import tqdm

                    return [f.result() for f in tqdm(futures, total=len(futures), desc="Loading dataset")]
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise


class LoadCTVolumed(MapTransform):
    """Load a datalist entry's CT volume and mask, check them, optionally skull strip, resize in-plane.

    Output (channel-first, torch): ``image`` float32 (1, X, Y, Z) in HU; ``label`` uint8 (1, X, Y, Z)
    (zeros when the entry has no mask); ``brain`` uint8 (1, X, Y, Z) when ``skull_strip``.

    Args:
        keys: ``(image_key, label_key)``.
        spatial_size: in-plane (X, Y) size after resizing; ``None`` keeps the native grid.
        skull_strip: compute the brain mask (:class:`hemwsl.transforms.SkullStrip`) and fill voxels
            outside it with the volume's minimum HU.
        cache_dir: optional folder where the preprocessed volumes are stored (one ``.pt`` file per
            volume and setting, written atomically) and read back by later runs, folds and processes.
    """

    def __init__(
        self,
        keys: KeysCollection = (IMAGE, LABEL),
        spatial_size: Sequence[int] | None = (256, 256),
        skull_strip: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(keys)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        if not isinstance(skull_strip, (bool, np.bool_)):  # a string such as 'maybe' would be taken for true
            raise HemwslInputError(f"skull_strip must be true or false, got {skull_strip!r}")
        if spatial_size is not None and (len(spatial_size) != 2 or min(spatial_size) < 8
                                         or any(not float(v).is_integer() for v in spatial_size)):
            raise HemwslInputError(f"spatial_size must be two ints >= 8 or None, got {spatial_size!r}")
        self.spatial_size = tuple(int(s) for s in spatial_size) if spatial_size is not None else None
        self.skull_strip = SkullStrip() if skull_strip else None

    def _resize(self, vol: torch.Tensor, mode: str) -> torch.Tensor:
        # vol: (1, X, Y, Z) -> (1, X', Y', Z), resampling each axial slice.
        if self.spatial_size is None or tuple(vol.shape[1:3]) == self.spatial_size:
            return vol
        z_first = vol[0].permute(2, 0, 1).unsqueeze(1).float()  # (Z, 1, X, Y)
        kw = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
        out = F.interpolate(z_first, size=self.spatial_size, mode=mode, **kw)
        return out[:, 0].permute(1, 2, 0).unsqueeze(0)

    def cache_path(self, image_path: str, label_path: str | None) -> Path | None:
        """Where the preprocessed volume of this entry and setting is cached (``None``: no disk cache)."""
        if self.cache_dir is None:
            return None
        key = json.dumps([str(Path(image_path).resolve()), str(Path(label_path).resolve()) if label_path else None,
                          self.spatial_size, self.skull_strip is not None])
        return self.cache_dir / f"{Path(image_path).name.split('.')[0]}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        image_key, label_key = self.keys[0], self.keys[1]
        cached = self.cache_path(d[image_key], d.get(label_key))
        if cached is not None and cached.exists():
            d.update(torch.load(cached, weights_only=False))
            return d
        out = self._load(d)
        if cached is not None:
            from hemwsl.data.io import atomic_write

            keep = {k: out[k] for k in (image_key, label_key, BRAIN, "affine") if k in out}
            atomic_write(cached, lambda tmp: torch.save(keep, tmp), suffix=".pt")
        return out

    def _load(self, d: dict) -> dict:
        image_key, label_key = self.keys[0], self.keys[1]
        image, mask = load_pair(d[image_key], d.get(label_key))
        img = torch.from_numpy(image.array)[None]
        msk = torch.from_numpy(mask.array)[None] if mask is not None else torch.zeros_like(img, dtype=torch.uint8)
        if self.skull_strip is not None:
            brain = torch.as_tensor(self.skull_strip(img.numpy()))
            img = torch.where(brain > 0, img, img.min())
            d[BRAIN] = self._resize(brain.float(), "nearest").to(torch.uint8)
        d[image_key] = self._resize(img, "bilinear").contiguous()
        d[label_key] = self._resize(msk.float(), "nearest").to(torch.uint8).contiguous()
        d["affine"] = image.affine
        return d


class SliceDataset(torch.utils.data.Dataset):
    """2.5D slice samples cut from cached CT volumes.

    Each item is a dict: ``image`` float32 (num_slices * len(windows), X, Y) in [0, 1], window-major
    (all slices of window 0, then window 1, ...); ``label`` float32 (1,) "any hemorrhage" of the centre
    slice, or (6,) any + five subtypes when ``multilabel``; ``mask`` float32 (1, X, Y), the centre
    slice's hemorrhage mask; ``patient`` and ``slice_index``.

    Args:
        datalist: entries from :mod:`hemwsl.data.datalist` (``image``, ``label``, ``patient``,
            ``slice_labels``...).
        num_slices: odd number of adjacent slices stacked as channels (edges replicated).
        windows: CT windows, names from :data:`hemwsl.constants.WINDOWS` or (level, width) pairs.
        spatial_size: in-plane size the volumes are resized to once, when cached.
        skull_strip: skull strip volumes before caching.
        transform: per-sample (slice) dictionary transform, e.g. :func:`hemwsl.transforms.augmentation_preset`.
        multilabel: targets are any + five subtypes instead of any.
        slice_filter: optional ``f(entry, z) -> bool`` choosing which slices to serve.
        window_on_device: serve the raw HU stack (``num_slices`` channels, float16) instead of the
            windowed channels; :class:`hemwsl.engines.classifier.PrepareBatch` then applies the windows
            on the device (less data through loader processes, windowing on the GPU).
        num_workers: threads used to fill the in-memory cache.
        cache_dir: optional disk cache of the preprocessed volumes, shared by runs, folds and
            processes (see :func:`warm_disk_cache` to fill it with several processes).
    """

    def __init__(
        self,
        datalist: Sequence[Mapping],
        num_slices: int = 3,
        windows: Sequence[str | tuple[float, float]] = ("brain",),
        spatial_size: Sequence[int] | None = (256, 256),
        skull_strip: bool = False,
        transform: Callable | None = None,
        multilabel: bool = False,
        slice_filter: Callable[[Mapping, int], bool] | None = None,
        num_workers: int = 0,
        progress: bool = False,
        cache_dir: str | os.PathLike | None = None,
        window_on_device: bool = False,
    ) -> None:
        if not datalist:
            raise HemwslInputError("datalist is empty: no volumes to serve slices from")
        if num_slices < 1 or num_slices % 2 == 0:
            raise HemwslInputError(f"num_slices must be a positive odd number, got {num_slices}")
        self.datalist = [dict(e) for e in datalist]
        self.num_slices = int(num_slices)
        self.window = MultiWindow(windows)  # first: a string (windows=brain) is one line, not a list of letters
        self.windows = list(windows)
        self.window_on_device = window_on_device
        self.transform = transform
        self.multilabel = multilabel
        try:
            self.cache = _VolumeCache(
                self.datalist,
                transform=Compose([LoadCTVolumed((IMAGE, LABEL), spatial_size=spatial_size, skull_strip=skull_strip,
                                                 cache_dir=cache_dir)]),
                cache_rate=1.0,
                num_workers=num_workers or None,
                copy_cache=False,
                progress=progress,
            )
        except Exception as err:  # MONAI wraps a transform's error in RuntimeError("applying transform ...")
            message = input_error_message(err)
            if message is None:
                raise
            raise HemwslInputError(message) from err
        self.index: list[tuple[int, int]] = []
        for v, entry in enumerate(self.datalist):
            depth = int(self.cache[v][IMAGE].shape[-1])
            labels = entry.get(SLICE_LABELS)
            if labels is not None and len(labels) != depth:
                raise HemwslInputError(
                    f"{entry[IMAGE]}: datalist has {len(labels)} slice labels but the volume has {depth} slices"
                )
            for z in range(depth):
                if slice_filter is None or slice_filter(entry, z):
                    self.index.append((v, z))

    @property
    def in_channels(self) -> int:
        return self.num_slices * len(self.windows)

    def __len__(self) -> int:
        return len(self.index)

    def _any_label(self, v: int, z: int) -> int:
        """"Any hemorrhage" of slice ``z`` of volume ``v``: the datalist's label, else from the mask."""
        labels = self.datalist[v].get(SLICE_LABELS)
        if labels is None:
            return int(self.cache[v][LABEL][..., z].any())
        return int(labels[z])

    def slice_label(self, i: int) -> int:
        return self._any_label(*self.index[i])

    def labels(self) -> np.ndarray:
        """The "any hemorrhage" label of every served slice."""
        return np.asarray([self.slice_label(i) for i in range(len(self))], dtype=np.int64)

    def _target(self, v: int, z: int) -> torch.Tensor:
        entry = self.datalist[v]
        any_label = float(self._any_label(v, z))
        if not self.multilabel:
            return torch.tensor([any_label], dtype=torch.float32)
        sub = entry.get(SUBTYPE_LABELS)
        if sub is None:
            raise HemwslInputError(f"{entry[IMAGE]}: multilabel targets need subtype labels in the datalist")
        return torch.tensor([any_label, *map(float, sub[z])], dtype=torch.float32)

    def __getitem__(self, i: int) -> dict:
        v, z = self.index[i]
        vol = self.cache[v]
        image = vol[IMAGE]  # (1, X, Y, Z)
        idx = stack_indices(z, self.num_slices, image.shape[-1])
        stack = image[0][..., idx].permute(2, 0, 1)  # (k, X, Y)
        sample = {
            IMAGE: stack.to(torch.float16) if self.window_on_device
            else torch.as_tensor(self.window(stack), dtype=torch.float32),
            LABEL: self._target(v, z),
            MASK: vol[LABEL][..., z].float(),
            PATIENT: self.datalist[v].get(PATIENT, str(v)),
            SLICE_INDEX: z,
        }
        if BRAIN in vol:
            sample[BRAIN] = vol[BRAIN][..., z].float()
        if self.transform is not None:
            sample = self.transform(sample)
        return sample


class SliceSequences(torch.utils.data.Dataset):
    """Sequences of consecutive 2.5D slices of one volume, for slice-context classifiers
    (:class:`hemwsl.networks.sequence.SliceSequenceNet`, Ramananda & Sundaresan 2023).

    Each item is a dict: ``image`` ``(S, C, X, Y)``, ``label`` ``(S, K)``, ``mask`` ``(S, 1, X, Y)``, ``patient``
    (``S`` times) and ``slice_index`` ``(S,)``: the samples of ``dataset`` for slices ``z0 .. z0 + S - 1`` of one
    volume. Batch them with :func:`collate_sequences`.

    Args:
        dataset: a :class:`SliceDataset` serving every slice of its volumes (no ``slice_filter``) and without a
            per-sample transform (a sequence is augmented as a whole, on the batch).
        length: slices per sequence; every start ``z0`` in ``[0, depth - length]`` of every volume is an item
            (a volume with fewer slices gives one item of all its slices). ``None``: one item per volume, all
            its slices (validation and test: every slice predicted once, with the whole volume as context).
    """

    def __init__(self, dataset: SliceDataset, length: int | None = 16) -> None:
        if dataset.transform is not None:
            raise HemwslInputError("slice sequences are augmented on the batch: the slice dataset must have no "
                                   "per-sample transform (sample_augment=false)")
        if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length < 1):
            raise HemwslInputError(f"sequence_length must be a positive integer or null, got {length!r}")
        self.dataset, self.length = dataset, length
        first: dict[int, int] = {}
        depth: dict[int, int] = {}
        for i, (v, z) in enumerate(dataset.index):
            first.setdefault(v, i)
            depth[v] = depth.get(v, 0) + 1
        for v, d in depth.items():
            if [z for vv, z in dataset.index[first[v]:first[v] + d]] != list(range(d)):
                raise HemwslInputError("slice sequences need every slice of each volume (a slice dataset without "
                                       "slice_filter)")
        self.items: list[tuple[int, int]] = []  # (first sample index, number of slices)
        for v in sorted(first):
            d = depth[v]
            if length is None or d <= length:
                self.items.append((first[v], d))
            else:
                self.items += [(first[v] + z0, length) for z0 in range(d - length + 1)]

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray:
        """Whether each sequence holds a positive ("any") slice: what :func:`balanced_sampler` balances."""
        per_slice = self.dataset.labels()
        return np.asarray([int(per_slice[i:i + n].any()) for i, n in self.items], dtype=np.int64)

    def __getitem__(self, i: int) -> dict:
        start, n = self.items[i]
        samples = [self.dataset[j] for j in range(start, start + n)]
        out = {IMAGE: torch.stack([s[IMAGE] for s in samples]), LABEL: torch.stack([s[LABEL] for s in samples]),
               MASK: torch.stack([s[MASK] for s in samples]), PATIENT: [s[PATIENT] for s in samples],
               SLICE_INDEX: torch.as_tensor([s[SLICE_INDEX] for s in samples])}
        if BRAIN in samples[0]:
            out[BRAIN] = torch.stack([s[BRAIN] for s in samples])
        return out


def collate_sequences(items: Sequence[Mapping]) -> dict:
    """Batch :class:`SliceSequences` items of one length ``S`` as a batch of ``B * S`` slices, sequence-major:
    ``image`` ``(B * S, C, X, Y)``, ``label`` ``(B * S, K)``, ``mask`` ``(B * S, 1, X, Y)``, ``patient`` and
    ``slice_index`` per slice, and ``sequence_length`` ``S``. Metrics, prediction writers and image handlers of a
    slice classifier read it unchanged; :class:`hemwsl.engines.classifier.PrepareBatch` gives the network its
    ``(B, S, C, X, Y)`` view."""
    lengths = {len(it[PATIENT]) for it in items}
    if len(lengths) != 1:
        raise HemwslInputError(f"a batch of slice sequences needs one length, got {sorted(lengths)} (whole volumes "
                               "are batched one at a time)")
    out = {IMAGE: torch.cat([it[IMAGE] for it in items]), LABEL: torch.cat([it[LABEL] for it in items]),
           MASK: torch.cat([it[MASK] for it in items]), PATIENT: [p for it in items for p in it[PATIENT]],
           SLICE_INDEX: torch.cat([it[SLICE_INDEX] for it in items]), SEQUENCE_LENGTH: lengths.pop()}
    if BRAIN in items[0]:
        out[BRAIN] = torch.cat([it[BRAIN] for it in items])
    return out


def balanced_sampler(
    dataset: SliceDataset | SliceSequences, pos_fraction: float = 0.5, num_samples: int | None = None, seed: int = 0,
    distributed: bool = False,
) -> torch.utils.data.Sampler:
    """A sampler drawing positive slices with probability ``pos_fraction`` (with replacement).

    ``num_samples`` (per epoch, all ranks together) defaults to ``len(dataset)``; a smaller value
    gives shorter epochs. With ``distributed`` (and ``torch.distributed`` initialised) each rank draws
    ``num_samples // world_size`` slices with MONAI's ``DistributedWeightedRandomSampler``.
    """
    if not 0.0 < pos_fraction < 1.0:
        raise HemwslInputError(f"pos_fraction must be in (0, 1), got {pos_fraction}")
    labels = dataset.labels()
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        weights = np.ones(len(labels))
    else:
        weights = np.where(labels > 0, pos_fraction / n_pos, (1 - pos_fraction) / n_neg)
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        from monai.data import DistributedWeightedRandomSampler

        world = torch.distributed.get_world_size()
        return DistributedWeightedRandomSampler(
            dataset, weights.tolist(), num_samples_per_rank=max(1, (num_samples or len(labels)) // world),
            generator=torch.Generator().manual_seed(seed), seed=seed, shuffle=False,
        )
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double), num_samples or len(labels), replacement=True, generator=gen
    )


def _warm_one(args) -> str:
    entry, spatial_size, skull_strip, cache_dir = args
    LoadCTVolumed((IMAGE, LABEL), spatial_size=spatial_size, skull_strip=skull_strip, cache_dir=cache_dir)(entry)
    return str(entry[IMAGE])


def warm_disk_cache(datalist: Sequence[Mapping], cache_dir: str | os.PathLike, spatial_size: Sequence[int] | None = (256, 256),
                    skull_strip: bool = False, workers: int = 2) -> int:
    """Preprocess every volume of ``datalist`` into ``cache_dir`` with ``workers`` processes (volumes
    already cached are skipped). Returns the number of volumes."""
    jobs = [(dict(e), spatial_size, skull_strip, str(cache_dir)) for e in datalist]
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if workers > 1 and main_file is not None and not os.path.isfile(main_file):
        # spawned workers re-import the main program by its path: a script read from standard input
        # (`python - <<EOF`) has none, and every worker would die at start
        logger.warning("warm_disk_cache: the main program (%s) is not a file worker processes can import; "
                       "filling the cache in this process", main_file)
        workers = 1
    if workers <= 1:
        for j in jobs:
            _warm_one(j)
    else:
        # spawn, not fork: forking a process whose torch/OpenMP threads are running can deadlock
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            list(ex.map(_warm_one, jobs))
    return len(jobs)
