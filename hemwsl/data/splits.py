"""Patient-level splits of a datalist: stratified hold-out splits and stratified k-fold.

Splits are made over patients, never volumes or slices, so no patient contributes to two parts.
Strata are patient positivity (any positive slice in any of the patient's volumes vs none). A split
is a ``dict`` mapping a part name to a sorted list of patient ids; k-fold gives a list of them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from hemwsl.constants import PATIENT, SLICE_LABELS
from hemwsl.data.io import atomic_write_text
from hemwsl.errors import HemwslInputError

__all__ = [
    "patient_positivity",
    "split_patients",
    "kfold_patients",
    "fold_split",
    "validate_split",
    "save_split",
    "load_split",
    "apply_split",
]


def patient_positivity(datalist: list[dict]) -> dict[str, int]:
    """Map each patient id to 1 when any of its volumes has a positive slice, else 0."""
    if not isinstance(datalist, list) or not datalist:
        raise HemwslInputError("datalist must be a non-empty list of entries")
    out: dict[str, int] = {}
    for i, e in enumerate(datalist):
        if not isinstance(e, dict) or PATIENT not in e:
            raise HemwslInputError(f"datalist entry {i} has no {PATIENT!r} key")
        pid = str(e[PATIENT])
        labels = e.get(SLICE_LABELS)
        pos = int(bool(e.get("positive", 0)) or bool(labels and any(labels)))
        out[pid] = max(out.get(pid, 0), pos)
    return dict(sorted(out.items()))


def _largest_remainder(n: int, weights: Sequence[float]) -> list[int]:
    """Split ``n`` into integer counts proportional to ``weights`` (largest-remainder rounding)."""
    total = float(sum(weights))
    if n <= 0 or total <= 0:
        return [0] * len(weights)
    exact = [n * w / total for w in weights]
    counts = [int(math.floor(x)) for x in exact]
    # hand the rest to the largest remainders; ties go to the larger weight, then the earlier part
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), -weights[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _ensure_nonempty(counts: list[int], fractions: Sequence[float]) -> list[int]:
    """Give parts with a positive fraction one member each, taken from parts holding more than one,
    as far as the total allows (earlier parts first)."""
    counts = list(counts)
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
            if counts[donor] <= 1:
                break
            counts[donor] -= 1
            counts[i] += 1
    return counts


def _check_fractions(fractions, names) -> tuple[list[float], list[str]]:
    fractions = [float(f) for f in fractions]
    names = [str(n) for n in names]
    if len(fractions) != len(names):
        raise HemwslInputError(f"fractions {fractions} and names {names} must have the same length")
    if len(set(names)) != len(names):
        raise HemwslInputError(f"split names must be distinct, got {names}")
    if any(not math.isfinite(f) or f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise HemwslInputError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    return fractions, names


def _split_ids(positivity: dict[str, int], fractions, names, seed: int) -> dict[str, list[str]]:
    fractions, names = _check_fractions(fractions, names)
    rng = np.random.default_rng(seed)
    strata = {s: [p for p, v in positivity.items() if v == s] for s in (1, 0)}
    n_total = len(positivity)
    # positives first (the scarce class): every part gets one when there are enough
    pos_counts = _ensure_nonempty(_largest_remainder(len(strata[1]), fractions), fractions)
    totals = _ensure_nonempty(_largest_remainder(n_total, fractions), fractions)
    need = [max(t - p, 0) for t, p in zip(totals, pos_counts)]
    n_neg = len(strata[0])
    neg_counts = need if sum(need) == n_neg else _largest_remainder(n_neg, need if sum(need) else fractions)
    # a part may still be empty overall (few patients): move a patient into it from the largest
    # part holding more than one, a negative one when it has some
    for i, f in enumerate(fractions):
        if f > 0 and pos_counts[i] + neg_counts[i] == 0:
            sizes = [p + n for p, n in zip(pos_counts, neg_counts)]
            j = max(range(len(sizes)), key=lambda j: (sizes[j], -j))
            if sizes[j] <= 1:
                break
            counts = neg_counts if neg_counts[j] > 0 else pos_counts
            counts[j] -= 1
            counts[i] += 1
    out: dict[str, list[str]] = {n: [] for n in names}
    for s, counts in ((1, pos_counts), (0, neg_counts)):
        ids = sorted(strata[s])
        ids = [ids[k] for k in rng.permutation(len(ids))]
        start = 0
        for name, c in zip(names, counts):
            out[name].extend(ids[start : start + c])
            start += c
    return {n: sorted(v) for n, v in out.items()}


def split_patients(
    datalist: list[dict],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    names: Sequence[str] = ("train", "val", "test"),
) -> dict[str, list[str]]:
    """Stratified patient-level hold-out split.

    Patients are stratified by positivity and each stratum is shuffled with ``seed`` and cut in
    ``fractions`` (largest-remainder rounding). Parts with a positive fraction get a positive patient
    each as far as the positive patients go (earlier parts first), and some patient each when there
    are at least as many patients as such parts.

    Returns:
        ``{name: sorted patient ids}`` in the order of ``names``; every patient in exactly one part.
    """
    return _split_ids(patient_positivity(datalist), fractions, names, seed)


def kfold_patients(datalist: list[dict], n_folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """Stratified k-fold over patients (scikit-learn ``StratifiedKFold``, shuffled with ``seed``).

    Returns:
        ``n_folds`` dicts ``{"train": ids, "val": ids}``; every patient is in exactly one ``"val"``.
    """
    import warnings

    from sklearn.model_selection import KFold, StratifiedKFold

    positivity = patient_positivity(datalist)
    ids = list(positivity)
    y = np.array([positivity[p] for p in ids])
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise HemwslInputError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if n_folds > len(ids):
        raise HemwslInputError(f"n_folds={n_folds} is more than the {len(ids)} patients of the datalist")
    # StratifiedKFold needs n_folds members in some class; with fewer in the minority class it
    # only warns (some folds then lack that class, the best possible). When no class is that
    # large it refuses, and a shuffled plain k-fold is used instead.
    if np.bincount(y, minlength=2).max() >= n_folds:
        splitter = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    folds = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for train_idx, val_idx in splitter.split(np.zeros(len(ids)), y):
            folds.append({"train": sorted(ids[i] for i in train_idx), "val": sorted(ids[i] for i in val_idx)})
    return folds


def fold_split(
    datalist: list[dict],
    n_folds: int = 5,
    fold: int = 0,
    seed: int = 0,
    val_fraction_of_train: float = 0.15,
) -> dict[str, list[str]]:
    """Train/val/test for one cross-validation fold.

    ``test`` is the fold's held-out patients of :func:`kfold_patients`; ``val`` is a stratified
    ``val_fraction_of_train`` of the remaining patients (for early stopping) and ``train`` the rest.
    """
    folds = kfold_patients(datalist, n_folds, seed)
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < len(folds):
        raise HemwslInputError(f"fold must be an integer in 0..{len(folds) - 1}, got {fold!r}")
    if not 0.0 <= float(val_fraction_of_train) < 1.0:
        raise HemwslInputError(f"val_fraction_of_train must be in [0, 1), got {val_fraction_of_train!r}")
    test = folds[fold]["val"]
    positivity = patient_positivity(datalist)
    rest = {p: positivity[p] for p in folds[fold]["train"]}
    v = float(val_fraction_of_train)
    inner = _split_ids(rest, (1.0 - v, v), ("train", "val"), seed)
    return {"train": inner["train"], "val": inner["val"], "test": list(test)}


# --------------------------------------------------------------------------------------------- I/O
def _validate_one(split, where: str) -> dict[str, list[str]]:
    if not isinstance(split, dict) or not split:
        raise HemwslInputError(f"{where}: a split must be a non-empty mapping of part name -> list of patient ids")
    seen: dict[str, str] = {}
    for name, ids in split.items():
        if not isinstance(name, str) or not isinstance(ids, list) or not all(isinstance(p, str) for p in ids):
            raise HemwslInputError(f"{where}: part {name!r} must map a name to a list of patient id strings")
        for p in ids:
            if p in seen:
                raise HemwslInputError(f"{where}: patient {p!r} is in both {seen[p]!r} and {name!r}")
            seen[p] = name
    return split


def validate_split(split, where: str = "split"):
    """Check a split (dict) or a list of folds; raise :class:`HemwslInputError` naming ``where``."""
    if isinstance(split, list):
        if not split:
            raise HemwslInputError(f"{where}: empty list of folds")
        for k, s in enumerate(split):
            _validate_one(s, f"{where}: fold {k}")
        return split
    return _validate_one(split, where)


def save_split(split, path: str | os.PathLike) -> None:
    """Write a split (``{name: ids}``) or a list of folds as JSON, atomically."""
    validate_split(split, "split to save")
    atomic_write_text(path, json.dumps(split, indent=1) + "\n")


def load_split(path: str | os.PathLike):
    """Read a split or list of folds written by :func:`save_split` and check it."""
    p = Path(path)
    if not p.is_file():
        raise HemwslInputError(f"{p}: split file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HemwslInputError(f"{p}: corrupt split JSON ({err})") from err
    return validate_split(data, str(p))


def apply_split(datalist: list[dict], patients: Iterable[str]) -> list[dict]:
    """The entries of ``datalist`` whose patient is in ``patients`` (datalist order kept).

    Raises:
        HemwslInputError: a patient id not in the datalist.
    """
    if isinstance(patients, (str, bytes)):
        raise HemwslInputError(f"patients must be a list of patient ids, got the string {patients!r}")
    wanted = [str(p) for p in patients]
    known = {str(e[PATIENT]) for e in datalist}
    unknown = sorted(set(wanted) - known)
    if unknown:
        shown = ", ".join(map(repr, unknown[:20])) + (f" ... ({len(unknown)} in all)" if len(unknown) > 20 else "")
        raise HemwslInputError(f"split names patient(s) not in the datalist: {shown}")
    wanted_set = set(wanted)
    return [e for e in datalist if str(e[PATIENT]) in wanted_set]
