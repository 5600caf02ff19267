"""Deterministic synthetic head-CT phantoms with intracranial hemorrhage (built-in demo data).

A phantom is an axial stack in Hounsfield units on an ``(X, Y, Z)`` grid (the array order nibabel
returns; ``Z`` is the axial slice index, bottom to top) with affine ``diag(spacing + (1,))``. It
holds air, scalp, a skull ring (thicker at the skull base), grey and white matter, a subarachnoid
CSF layer with sulci, two lateral ventricles, a third ventricle, basal cisterns and the falx,
plus Gaussian noise and a smooth low-frequency bias.

Hemorrhages of the five CT-ICH subtypes (:data:`hemwsl.constants.SUBTYPES`) are drawn with their
usual shape and place: an irregular intraparenchymal blob with an oedema rim, blood in the
dependent (posterior) part of a ventricle, a subdural crescent and an epidural lens against the
inner skull table, and hyperdense subarachnoid lines in sulci, the convexity CSF layer and the
basal cisterns. Every voxel and random draw follows from the seed alone, so a seed always gives
the same volume.

:func:`write_synthetic_ctich` writes a set of phantoms in the layout of the PhysioNet CT-ICH
dataset (``ct_scans/``, ``masks/``, ``hemorrhage_diagnosis_raw_ct.csv``,
``patient_demographics.csv``) so the rest of hemwsl can run without a download.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from hemwsl.constants import SUBTYPES
from hemwsl.data.io import atomic_write_text, save_nifti
from hemwsl.errors import HemwslInputError

__all__ = [
    "make_phantom",
    "write_synthetic_ctich",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "CTICH_CSV_NAME",
    "CTICH_DEMOGRAPHICS_NAME",
    "CTICH_CSV_HEADER",
    "HU_AIR",
    "HU_CSF",
    "HU_WHITE",
    "HU_GREY",
    "HU_BLOOD_RANGE",
]

DEFAULT_SHAPE: tuple[int, int, int] = (128, 128, 24)
DEFAULT_SPACING: tuple[float, float, float] = (0.9, 0.9, 5.0)

CTICH_CSV_NAME = "hemorrhage_diagnosis_raw_ct.csv"
CTICH_DEMOGRAPHICS_NAME = "patient_demographics.csv"
CTICH_CSV_HEADER: tuple[str, ...] = (
    "PatientNumber",
    "SliceNumber",
    "Intraventricular",
    "Intraparenchymal",
    "Subarachnoid",
    "Epidural",
    "Subdural",
    "No_Hemorrhage",
    "Fracture_Yes_No",
)

# Nominal tissue values in HU (noise and a smooth bias are added on top).
HU_AIR = -1000.0
HU_SCALP = 40.0
HU_CSF = 5.0
HU_WHITE = 28.0
HU_GREY = 38.0
HU_FALX = 48.0
HU_BLOOD_RANGE: tuple[float, float] = (55.0, 85.0)
_HU_BONE_TABLE = 1400.0  # inner and outer tables
_HU_BONE_DIPLOE = 800.0  # marrow space in the middle of the skull
_HU_OEDEMA_DROP = 7.0  # perilesional oedema around an intraparenchymal hematoma

_MIN_INPLANE = 32  # smallest in-plane size that still holds every structure
_REF_HALF_FOV_MM = 57.6  # half field of view of the default grid; anatomy scales with the grid


# --------------------------------------------------------------------------------------------- #
# argument checks
# --------------------------------------------------------------------------------------------- #
def _check_seed(seed: int, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise HemwslInputError(f"{name} must be a non-negative integer, got {seed!r}")
    if int(seed) < 0:
        raise HemwslInputError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_grid(
    shape: Sequence[int], spacing: Sequence[float]
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    try:
        shp = tuple(int(s) for s in shape)
        if any(int(s) != s for s in shape):
            raise ValueError
    except (TypeError, ValueError):
        raise HemwslInputError(f"shape must be three integers (X, Y, Z), got {shape!r}") from None
    if len(shp) != 3 or shp[0] < _MIN_INPLANE or shp[1] < _MIN_INPLANE or shp[2] < 1:
        raise HemwslInputError(
            f"shape must be three integers (X, Y, Z) with X, Y >= {_MIN_INPLANE} and Z >= 1, got {shape!r}"
        )
    try:
        spc = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise HemwslInputError(f"spacing must be three positive numbers in mm, got {spacing!r}") from None
    if len(spc) != 3 or not all(math.isfinite(s) and s > 0 for s in spc):
        raise HemwslInputError(f"spacing must be three positive numbers in mm, got {spacing!r}")
    return shp, spc  # type: ignore[return-value]


def _check_subtypes(subtypes: Sequence[str] | str | None) -> list[str] | None:
    if subtypes is None:
        return None
    if isinstance(subtypes, str):
        subtypes = [subtypes]
    out: list[str] = []
    for s in subtypes:
        if s not in SUBTYPES:
            raise HemwslInputError(f"unknown subtypes entry {s!r}; accepted values: {', '.join(SUBTYPES)}")
        if s not in out:
            out.append(s)
    return out


# --------------------------------------------------------------------------------------------- #
# anatomy
# --------------------------------------------------------------------------------------------- #
@dataclass
class _Anatomy:
    """Geometry and tissue maps of one phantom (all 3D arrays are (X, Y, Z))."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    scale: float  # anatomy size relative to the default grid
    t: np.ndarray  # (Z,) axial position of each slice in [0, 1], bottom to top
    u: np.ndarray  # (X, Y, 1) lateral head-frame coordinate in mm
    v: np.ndarray  # (X, Y, 1) antero-posterior head-frame coordinate in mm (+ anterior)
    y_scanner: np.ndarray  # (X, Y, 1) scanner y in mm (for gravity-dependent levels)
    r: np.ndarray  # (X, Y, 1) in-plane distance to the head centre in mm
    phi: np.ndarray  # (X, Y, 1) polar angle in the head frame
    a0: float  # lateral semi-axis of the largest slice, mm
    b0: float  # antero-posterior semi-axis of the largest slice, mm
    head: np.ndarray
    skull: np.ndarray
    intracranial: np.ndarray
    d_in: np.ndarray  # in-plane distance to the inner skull table in mm (0 outside)
    csf_layer: np.ndarray
    sulci: np.ndarray
    fissure: np.ndarray  # interhemispheric CSF
    cisterns: np.ndarray
    ventricles: np.ndarray
    third_ventricle: np.ndarray
    falx: np.ndarray
    white: np.ndarray
    grey: np.ndarray
    image: np.ndarray  # noiseless HU, float32

    @property
    def parenchyma(self) -> np.ndarray:
        return self.grey | self.white


def _cosine_field(
    rng: np.random.Generator, coords: tuple[np.ndarray, ...], n_waves: int, fmin: float, fmax: float
) -> np.ndarray:
    """Smooth random field (zero mean, unit sd) as a sum of random plane cosine waves.

    ``coords`` are ``(u, v, z)`` normalised coordinates, ``u`` and ``v`` of shape (X, Y, 1) and
    ``z`` of shape (1, 1, Z); frequencies are in cycles per unit. Each wave is evaluated as
    ``cos(a + b) = cos a cos b - sin a sin b`` with ``a`` in-plane and ``b`` along z, which avoids
    a full-volume cosine per wave.
    """
    u, v, z = coords
    field = np.zeros(np.broadcast_shapes(u.shape, v.shape, z.shape), dtype=np.float32)
    for _ in range(n_waves):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction) + 1e-12
        freq = rng.uniform(fmin, fmax)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        w = (2.0 * np.pi * freq * direction).astype(np.float32)
        a = w[0] * u + w[1] * v + np.float32(phase)
        b = w[2] * z
        field += np.cos(a) * np.cos(b)
        field -= np.sin(a) * np.sin(b)
    return field * np.float32(math.sqrt(2.0 / n_waves))


def _edt_per_slice(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """In-plane Euclidean distance (mm) from each foreground voxel to the slice background."""
    out = np.zeros(mask.shape, dtype=np.float32)
    for z in range(mask.shape[2]):
        sl = mask[:, :, z]
        if sl.any():
            out[:, :, z] = ndimage.distance_transform_edt(sl, sampling=spacing[:2])
    return out


def _angle_diff(a: np.ndarray, b: float) -> np.ndarray:
    """``a - b`` wrapped to [-pi, pi)."""
    return ((a - np.float32(b) + np.float32(np.pi)) % np.float32(2 * np.pi) - np.float32(np.pi)).astype(np.float32)


def _build_anatomy(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> _Anatomy:
    nx, ny, nz = shape
    sx, sy, _ = spacing
    half_fov = min(nx * sx, ny * sy) / 2.0
    k = half_fov / _REF_HALF_FOV_MM  # anatomy scale relative to the default grid
    vox = min(sx, sy)

    # head placement: small offset and in-plane rotation
    off = rng.uniform(-0.03, 0.03, size=2) * half_fov
    rot = rng.uniform(-0.14, 0.14)  # ~ +-8 degrees
    xs = ((np.arange(nx) - (nx - 1) / 2.0) * sx - off[0]).astype(np.float32)[:, None, None]
    ys = ((np.arange(ny) - (ny - 1) / 2.0) * sy - off[1]).astype(np.float32)[None, :, None]
    c, s = np.float32(math.cos(rot)), np.float32(math.sin(rot))
    u = c * xs + s * ys  # lateral
    v = -s * xs + c * ys  # antero-posterior (+ anterior)
    r = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)

    t = ((np.arange(nz) + 0.5) / nz).astype(np.float32)
    tz = t[None, None, :]

    # outer head contour: ellipse shrinking towards the vertex and the skull base, egg-shaped
    # (wider at the back) with a slightly irregular outline
    a0 = 0.72 * half_fov * rng.uniform(0.95, 1.03)
    b0 = 0.86 * half_fov * rng.uniform(0.95, 1.03)
    tc, hw = 0.42 + rng.uniform(-0.02, 0.02), 0.57
    s_t = np.sqrt(np.clip(1.0 - ((t - tc) / hw) ** 2, 0.0, 1.0)).astype(np.float32)
    a_z = np.float32(a0) * s_t[None, None, :]
    b_z = np.float32(b0) * s_t[None, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        pu = u / (a_z * (1.0 - 0.06 * v / np.maximum(b_z, 1e-3)))
        pv = v / b_z
    theta = np.arctan2(pv, pu)
    bump = np.ones_like(theta)
    for harm in range(2, 6):
        amp = rng.uniform(0.004, 0.025) / harm * 2.0
        phase = np.float32(rng.uniform(0, 2 * np.pi))
        twist = np.float32(rng.uniform(-1, 1))
        bump = bump + np.float32(amp) * np.cos(harm * theta + phase + twist * tz)
    rho = np.sqrt(pu * pu + pv * pv)
    head = np.nan_to_num(rho, nan=np.inf, posinf=np.inf) < bump
    head &= (s_t > 0)[None, None, :]

    d_out = _edt_per_slice(head, spacing)
    scalp_t = max(2.3 * k, 0.9 * vox)
    # skull thicker at the base and where the slice cuts it obliquely (vertex), a bit thicker at the back
    skull_base = 4.0 * k * rng.uniform(0.9, 1.15)
    skull_t = (
        skull_base
        * (1.0 + 0.8 * np.clip((0.4 - tz) / 0.4, 0.0, 1.0))
        * (1.0 + 0.7 * (1.0 - s_t[None, None, :]))
        * (1.0 + 0.15 * np.cos(phi + np.pi / 2))
    )
    skull_t = np.maximum(skull_t, 1.5 * vox)
    skull = head & (d_out >= scalp_t) & (d_out < scalp_t + skull_t)
    intracranial = head & (d_out >= scalp_t + skull_t)
    scalp = head & ~skull & ~intracranial
    d_in = _edt_per_slice(intracranial, spacing)

    # normalised coordinates for smooth fields
    un = u / np.float32(half_fov)
    vn = v / np.float32(half_fov)
    zn = tz * np.float32(nz * spacing[2] / (2 * half_fov))
    low = _cosine_field(rng, (un, vn, zn), 6, 0.2, 0.8)  # scanner bias
    mid = _cosine_field(rng, (un, vn, zn), 8, 1.0, 2.5)  # anatomical variation

    atrophy = rng.uniform(0.8, 1.5)
    csf_t = max(1.2 * k * atrophy, 0.9 * vox)
    cortex_t = 6.0 * k
    csf_layer = intracranial & (d_in < csf_t)

    # sulci: radial, slightly wavy clefts from the surface into the cortex (computed on the
    # cortical band only)
    sulci = np.zeros(shape, dtype=bool)
    n_sulci = int(rng.integers(18, 26))
    base = np.sort(rng.uniform(0, 2 * np.pi, n_sulci))
    width = max(1.1 * vox, 0.9 * k * atrophy)
    band = np.nonzero(intracranial & (d_in < cortex_t * 1.4))
    b_r = np.broadcast_to(r, shape)[band]
    b_phi = np.broadcast_to(phi, shape)[band]
    b_t = t[band[2]]
    b_d = d_in[band]
    b_hit = np.zeros(b_d.shape, dtype=bool)
    for ang in base:
        if abs(abs(float(_angle_diff(np.float32(ang), 0.0))) - np.pi / 2) < 0.12:
            continue  # the interhemispheric fissure is drawn separately
        amp = np.float32(rng.uniform(-0.25, 0.25))
        freq = np.float32(2 * np.pi * rng.uniform(0.5, 1.5))
        drift = amp * np.sin(freq * b_t + np.float32(rng.uniform(0, 6.3)))
        depth = cortex_t * rng.uniform(0.7, 1.4)
        wav_amp = np.float32(rng.uniform(0.3, 1.2) * k)
        wav_len = np.float32(rng.uniform(3.0, 6.0) * k)
        dphi = _angle_diff(b_phi, float(ang)) - drift
        perp = b_r * np.sin(dphi) + wav_amp * np.sin(np.float32(2 * np.pi) * b_d / wav_len)
        b_hit |= (np.abs(perp) < width / 2) & (np.cos(dphi) > 0) & (b_d < depth)
    sulci[band] = b_hit

    # falx and interhemispheric fissure along the midline (u = 0)
    falx_depth = np.where(tz > 0.62, np.inf, b0 * np.clip(0.15 + 0.6 * (tz - 0.3), 0.08, 0.4)).astype(np.float32)
    midline = np.abs(u) < max(0.55 * k, 0.5 * vox)
    falx = intracranial & midline & (d_in < falx_depth) & (tz > 0.25)
    fissure = intracranial & (np.abs(u) < max(1.6 * k * atrophy, 1.1 * vox)) & ~falx & (tz > 0.25)
    fissure &= (d_in < falx_depth) & (d_in < cortex_t * 1.5)

    # lateral ventricles: two crescents (frontal horns, bodies, atria) in the middle slices
    pn = u / np.float32(a0)
    qn = v / np.float32(b0)
    tv0, tv1 = 0.40 + rng.uniform(-0.03, 0.03), 0.68 + rng.uniform(-0.03, 0.03)
    vz = np.clip((t - tv0) / (tv1 - tv0), 0.0, 1.0)
    wz = np.sqrt(np.clip(np.sin(np.pi * vz), 0.0, 1.0)).astype(np.float32)
    if not (wz > 0.3).any():  # very few slices: keep the ventricles in the slice nearest their middle
        wz = np.zeros_like(wz)
        wz[int(np.argmin(np.abs(t - (tv0 + tv1) / 2)))] = 1.0
    wz = wz[None, None, :]
    q0, q1 = -0.42 + rng.uniform(-0.03, 0.03), 0.32 + rng.uniform(-0.03, 0.03)
    qm, qh = (q0 + q1) / 2.0, (q1 - q0) / 2.0
    ventricles = np.zeros(shape, dtype=bool)
    vsize = math.sqrt(atrophy) * rng.uniform(0.9, 1.1)
    min_w = 0.8 * vox / a0
    for side in (-1.0, 1.0):
        asym = rng.uniform(0.9, 1.1)
        pc = side * (0.07 + 0.9 * (qn - qm) ** 2)
        taper = np.sqrt(np.clip(1.0 - ((qn - qm) / qh) ** 6, 0.0, 1.0))
        w = (0.045 + 0.045 * ((qn - qm) / qh) ** 2) * vsize * asym * taper * wz
        w = np.where(w > 0, np.maximum(w, min_w), 0.0)
        ventricles |= np.abs(pn - pc) < w
    ventricles &= intracranial & (d_in > cortex_t) & (wz > 0.3)
    third = intracranial & (np.abs(pn) < max(0.012, 0.5 * vox / a0)) & (np.abs(qn + 0.02) < 0.12)
    third &= (tz > 0.3) & (tz < 0.45)

    # basal cisterns: a five-pointed star (suprasellar cistern) in the low slices
    cz = np.float32(0.30 + rng.uniform(-0.03, 0.03))
    rc = np.sqrt(pn * pn + (qn - 0.12) ** 2)
    star = 0.10 * (1.0 + 0.45 * np.cos(5 * np.arctan2(qn - 0.12, pn) - np.pi / 2))
    cisterns = intracranial & (rc < star) & (rc > 0.045) & (np.abs(tz - cz) < max(0.07, 0.6 / nz))

    # grey/white matter: a cortical ribbon over a smooth white-matter core, deep grey nuclei
    white = intracranial & (d_in > cortex_t * (1.0 + 0.25 * mid)) & (tz > 0.12)
    nuclei = (((np.abs(pn) - 0.17) / 0.07) ** 2 + ((qn + 0.02) / 0.13) ** 2 < 1.0) & (tz > 0.3) & (tz < 0.52)
    white &= ~nuclei
    csf_all = csf_layer | sulci | fissure | ventricles | third | cisterns
    white &= ~csf_all & ~falx
    grey = intracranial & ~csf_all & ~falx & ~white

    # noiseless image
    image = np.full(shape, HU_AIR, dtype=np.float32)
    image[scalp] = HU_SCALP
    f_bone = np.clip((d_out - scalp_t) / skull_t, 0.0, 1.0)
    bone = _HU_BONE_TABLE - (_HU_BONE_TABLE - _HU_BONE_DIPLOE) * np.sin(np.pi * f_bone) ** 2 + 60.0 * mid
    image = np.where(skull, bone, image)
    image[grey] = HU_GREY
    image[white] = HU_WHITE
    image[falx] = HU_FALX
    image[csf_all] = HU_CSF
    soft = head & ~skull
    image += np.where(soft, np.float32(1.5) * low + np.float32(1.0) * mid, np.float32(0.0))

    return _Anatomy(
        shape=shape,
        spacing=spacing,
        scale=k,
        t=t,
        u=u,
        v=v,
        y_scanner=ys,
        r=r,
        phi=phi,
        a0=a0,
        b0=b0,
        head=head,
        skull=skull,
        intracranial=intracranial,
        d_in=d_in,
        csf_layer=csf_layer,
        sulci=sulci,
        fissure=fissure,
        cisterns=cisterns,
        ventricles=ventricles,
        third_ventricle=third,
        falx=falx,
        white=white,
        grey=grey,
        image=image.astype(np.float32),
    )


# --------------------------------------------------------------------------------------------- #
# hemorrhage
# --------------------------------------------------------------------------------------------- #
def _lateral_angle(rng: np.random.Generator, spread: float) -> float:
    return float((0.0 if rng.random() < 0.5 else np.pi) + rng.uniform(-spread, spread))


def _z_mm(anat: _Anatomy) -> np.ndarray:
    return (np.arange(anat.shape[2], dtype=np.float32) * np.float32(anat.spacing[2]))[None, None, :]


def _slice_with_brain(anat: _Anatomy, rng: np.random.Generator, lo: float, hi: float) -> int:
    """A random slice index with t in [lo, hi] that holds intracranial tissue (fallback: the largest)."""
    area = anat.intracranial.sum(axis=(0, 1))
    ok = np.flatnonzero((anat.t >= lo) & (anat.t <= hi) & (area > 0.3 * area.max()))
    if ok.size == 0:
        return int(np.argmax(area))
    return int(rng.choice(ok))


def _intraparenchymal(anat: _Anatomy, rng: np.random.Generator) -> np.ndarray:
    k = anat.scale
    vox = min(anat.spacing[:2])
    margin = max(2.5 * k, 1.6 * vox)
    allowed = anat.parenchyma & ~anat.ventricles & (anat.d_in >= margin)
    R = rng.uniform(7.0, 13.0) * k
    slices = (anat.t >= 0.25) & (anat.t <= 0.8)
    if not slices.any():
        slices = np.ones_like(slices)
    cand = np.empty(0, dtype=np.intp)
    for _ in range(8):
        cand = np.flatnonzero((allowed & (anat.d_in >= R + margin) & slices[None, None, :]).ravel())
        if cand.size:
            break
        R *= 0.7
    if cand.size == 0:
        cand = np.flatnonzero(allowed.ravel())
    if cand.size == 0:
        return np.zeros(anat.shape, dtype=bool)
    ci, cj, cz = np.unravel_index(int(cand[rng.integers(cand.size)]), anat.shape)
    du = anat.u - anat.u[ci, cj, 0]
    dv = anat.v - anat.v[ci, cj, 0]
    dz = _z_mm(anat) - np.float32(cz * anat.spacing[2])
    ru, rv = R * rng.uniform(0.7, 1.3), R * rng.uniform(0.7, 1.3)
    rz = max(rng.uniform(6.0, 12.0), 0.6 * anat.spacing[2])
    rot = rng.uniform(0, np.pi)
    c, s = np.float32(math.cos(rot)), np.float32(math.sin(rot))
    e1, e2 = c * du + s * dv, -s * du + c * dv
    ell = (e1 / np.float32(ru)) ** 2 + (e2 / np.float32(rv)) ** 2 + (dz / np.float32(rz)) ** 2
    ang = np.arctan2(e2, e1)
    wobble = np.ones_like(ang)
    for harm in range(2, 5):
        wobble += np.float32(rng.uniform(0.05, 0.15)) * np.cos(harm * ang + np.float32(rng.uniform(0, 2 * np.pi)))
    blob = (ell < wobble**2) & allowed
    lab, _ = ndimage.label(blob)
    if lab[ci, cj, cz] == 0:
        return blob
    return lab == lab[ci, cj, cz]


def _intraventricular(anat: _Anatomy, rng: np.random.Generator) -> np.ndarray:
    vent = anat.ventricles
    if not vent.any():
        return np.zeros(anat.shape, dtype=bool)
    sides = [anat.u < 0, anat.u >= 0]
    pick = rng.permutation(2)
    region = vent & (sides[pick[0]] | (sides[pick[1]] if rng.random() < 0.5 else False))
    if rng.random() < 0.4:  # blood also reaching the third ventricle
        region = region | anat.third_ventricle
    if not region.any():
        region = vent
    # supine patient: blood settles posteriorly (low scanner y) with a level across the horns
    ys = np.broadcast_to(anat.y_scanner, anat.shape)[region]
    level = np.quantile(ys, rng.uniform(0.3, 0.6))
    blood = region & (anat.y_scanner <= np.float32(level))
    return blood if blood.any() else region


def _subdural(anat: _Anatomy, rng: np.random.Generator) -> np.ndarray:
    k = anat.scale
    vox = min(anat.spacing[:2])
    phi0 = _lateral_angle(rng, 0.6)
    width = rng.uniform(0.7, 1.2)
    zc = _slice_with_brain(anat, rng, 0.4, 0.65)
    half_z = max(rng.uniform(0.2, 0.35) * anat.shape[2] * anat.spacing[2], 0.6 * anat.spacing[2])
    tmax = max(rng.uniform(3.5, 7.0) * k, 2.0 * vox)
    dz = _z_mm(anat) - np.float32(zc * anat.spacing[2])
    prof_a = np.clip(1.0 - (_angle_diff(anat.phi, phi0) / np.float32(width)) ** 2, 0.0, 1.0) ** 0.7
    prof_z = np.sqrt(np.clip(1.0 - (dz / np.float32(half_z)) ** 2, 0.0, 1.0))
    thick = np.float32(tmax) * prof_a * prof_z
    return anat.intracranial & (anat.d_in < thick)


def _epidural(anat: _Anatomy, rng: np.random.Generator) -> np.ndarray:
    k = anat.scale
    vox = min(anat.spacing[:2])
    phi0 = _lateral_angle(rng, 1.0)
    width = rng.uniform(0.3, 0.5)
    zc = _slice_with_brain(anat, rng, 0.35, 0.7)
    half_z = max(rng.uniform(6.0, 14.0), 0.6 * anat.spacing[2])
    tmax = max(rng.uniform(6.0, 11.0) * k, 2.5 * vox)
    dz = _z_mm(anat) - np.float32(zc * anat.spacing[2])
    lens = 1.0 - (_angle_diff(anat.phi, phi0) / np.float32(width)) ** 2 - (dz / np.float32(half_z)) ** 2
    thick = np.float32(tmax) * np.sqrt(np.clip(lens, 0.0, 1.0))
    return anat.intracranial & (anat.d_in < thick)


def _subarachnoid(anat: _Anatomy, rng: np.random.Generator) -> np.ndarray:
    phi0 = float(rng.uniform(-np.pi, np.pi))
    width = rng.uniform(0.6, 1.4)
    zc = _slice_with_brain(anat, rng, 0.3, 0.75)
    half_z = max(rng.uniform(0.1, 0.25) * anat.shape[2] * anat.spacing[2], 0.6 * anat.spacing[2])
    dz = np.abs(_z_mm(anat) - np.float32(zc * anat.spacing[2]))
    sector = (np.abs(_angle_diff(anat.phi, phi0)) < width) & (dz <= half_z)
    sah = (anat.sulci | anat.csf_layer | anat.fissure) & sector
    if rng.random() < 0.5:
        sah |= anat.cisterns
    if not sah.any():
        sah = anat.csf_layer & (dz == dz.min())
    return sah & anat.intracranial


_DRAWERS = {
    "intraventricular": _intraventricular,
    "intraparenchymal": _intraparenchymal,
    "subarachnoid": _subarachnoid,
    "epidural": _epidural,
    "subdural": _subdural,
}


# --------------------------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------------------------- #
def _phantom_anatomy(
    seed: int, shape: Sequence[int] = DEFAULT_SHAPE, spacing: Sequence[float] = DEFAULT_SPACING
) -> _Anatomy:
    """The anatomy (tissue masks, noiseless image) behind ``make_phantom(seed, shape, spacing)``."""
    shp, spc = _check_grid(shape, spacing)
    return _build_anatomy(np.random.default_rng([_check_seed(seed), 0]), shp, spc)


def make_phantom(
    seed: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    subtypes: Sequence[str] | None = None,
    positive: bool = True,
) -> dict:
    """Make one synthetic head CT with (or without) hemorrhage.

    The anatomy depends on ``seed``, ``shape`` and ``spacing`` only; the lesions on ``seed`` and
    ``subtypes``. Everything is deterministic for given arguments.

    Args:
        seed: non-negative integer seed.
        shape: grid size ``(X, Y, Z)``; ``X, Y >= 32``. The head is scaled to the in-plane field of view.
        spacing: voxel size in mm ``(sx, sy, sz)``; ``sz`` is the slice spacing.
        subtypes: hemorrhage subtypes to draw, names from :data:`hemwsl.constants.SUBTYPES`
            (one lesion each, duplicates ignored). ``None`` draws one or two subtypes at random
            from the seed; an empty sequence gives no lesion.
        positive: ``False`` gives a phantom without hemorrhage (``subtypes`` is then ignored).

    Returns:
        A dict with ``"image"`` (int16 HU, (X, Y, Z)), ``"mask"`` (uint8 {0, 1}, any hemorrhage),
        ``"subtype_labels"`` ((Z, 5) int64, 1 where that subtype's lesion touches the slice, in the
        order of ``SUBTYPES``), ``"slice_labels"`` ((Z,) int64, 1 iff the mask slice is non-empty),
        ``"affine"`` (4x4 float64, ``diag(spacing + (1,))``) and ``"subtypes"`` (the subtypes
        drawn, in ``SUBTYPES`` order).

    Raises:
        HemwslInputError: bad seed, shape, spacing or an unknown subtype name.
    """
    seed = _check_seed(seed)
    shp, spc = _check_grid(shape, spacing)
    chosen = _check_subtypes(subtypes)
    anat_rng = np.random.default_rng([seed, 0])
    lesion_rng = np.random.default_rng([seed, 1])
    noise_rng = np.random.default_rng([seed, 2])

    anat = _build_anatomy(anat_rng, shp, spc)
    image = anat.image.copy()
    mask = np.zeros(shp, dtype=bool)
    subtype_labels = np.zeros((shp[2], len(SUBTYPES)), dtype=np.int64)

    if not positive:
        chosen = []
    elif chosen is None:
        n = 1 if lesion_rng.random() < 0.6 else 2
        chosen = [SUBTYPES[i] for i in sorted(lesion_rng.choice(len(SUBTYPES), size=n, replace=False))]
    chosen = [s for s in SUBTYPES if s in chosen]

    k_field = (anat.u / np.float32(anat.a0), anat.v / np.float32(anat.a0), _z_mm(anat) / np.float32(anat.a0))
    for name in chosen:
        sub_rng = np.random.default_rng([seed, 1, 1 + SUBTYPES.index(name)])
        lesion = _DRAWERS[name](anat, sub_rng) & anat.intracranial
        if not lesion.any():  # pragma: no cover - guarded by the drawers' fallbacks
            raise RuntimeError(f"synthetic {name} lesion came out empty for seed {seed}, shape {shp}")
        # lesion mean kept 3 HU inside the blood range so that texture and noise stay within it
        hu = sub_rng.uniform(HU_BLOOD_RANGE[0] + 3.0, HU_BLOOD_RANGE[1] - 3.0)
        texture = _cosine_field(sub_rng, k_field, 5, 1.5, 4.0)
        if name == "intraparenchymal":  # hypodense oedema rim
            rim = ndimage.binary_dilation(lesion, structure=np.ones((5, 5, 1), bool)) & ~lesion & anat.parenchyma
            image[rim] -= np.float32(_HU_OEDEMA_DROP)
        image[lesion] = np.float32(hu) + np.float32(2.5) * texture[lesion]
        mask |= lesion
        subtype_labels[:, SUBTYPES.index(name)] = lesion.any(axis=(0, 1))

    sd = noise_rng.uniform(3.0, 5.0)
    noise = noise_rng.standard_normal(shp, dtype=np.float32) * np.float32(sd)
    noise[anat.skull] *= np.float32(6.0)
    image = np.clip(np.rint(image + noise), -1024, 3071).astype(np.int16)

    mask_u8 = mask.astype(np.uint8)
    return {
        "image": image,
        "mask": mask_u8,
        "subtype_labels": subtype_labels,
        "slice_labels": mask_u8.any(axis=(0, 1)).astype(np.int64),
        "affine": np.diag([spc[0], spc[1], spc[2], 1.0]).astype(np.float64),
        "subtypes": list(chosen),
    }


def _plan_cohort(rng: np.random.Generator, n_patients: int, negative_fraction: float) -> list[list[str]]:
    """Subtypes for each patient (empty list = negative); every subtype appears if any patient is positive."""
    n_neg = int(round(n_patients * negative_fraction))
    n_neg = min(max(n_neg, 0), n_patients)
    negatives = set(rng.choice(n_patients, size=n_neg, replace=False).tolist()) if n_neg else set()
    positives = [i for i in range(n_patients) if i not in negatives]
    plan: list[list[str]] = [[] for _ in range(n_patients)]
    if not positives:
        return plan
    order = [SUBTYPES[i] for i in rng.permutation(len(SUBTYPES))]
    n_pos = len(positives)
    for j, name in enumerate(order):  # cover all five subtypes round-robin
        plan[positives[j % n_pos]].append(name)
    for j, p in enumerate(positives):
        if j >= len(SUBTYPES):  # extra positives: one or two random subtypes
            n = 1 if rng.random() < 0.6 else 2
            plan[p] = [SUBTYPES[i] for i in rng.choice(len(SUBTYPES), size=n, replace=False)]
        elif len(plan[p]) == 1 and rng.random() < 0.25:  # some mixed cases
            extra = SUBTYPES[int(rng.integers(len(SUBTYPES)))]
            if extra not in plan[p]:
                plan[p].append(extra)
    return [[s for s in SUBTYPES if s in names] for names in plan]


def write_synthetic_ctich(
    out_dir: str | os.PathLike,
    n_patients: int = 12,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    negative_fraction: float = 0.25,
) -> Path:
    """Write a synthetic dataset in the PhysioNet CT-ICH layout.

    Layout: ``ct_scans/NNN.nii.gz`` (int16 HU), ``masks/NNN.nii.gz`` (uint8 {0, 1}),
    ``hemorrhage_diagnosis_raw_ct.csv`` (one row per slice: ``PatientNumber, SliceNumber`` (z + 1),
    the five subtype flags, ``No_Hemorrhage`` = 1 - any, ``Fracture_Yes_No`` = 0) and
    ``patient_demographics.csv`` (``PatientNumber, Age, Gender`` and the five per-patient subtype
    flags). Patients are numbered 1..n (files ``001``, ``002``...); patient ``i`` is
    ``make_phantom(seed * 1000 + i, ...)``. ``round(n_patients * negative_fraction)`` patients have
    no hemorrhage, and every subtype appears in at least one patient whenever one is positive.

    Each file is written atomically; running again with the same arguments gives identical files.

    Args:
        out_dir: output folder (created if needed).
        n_patients: number of patients (>= 1).
        seed: non-negative dataset seed.
        shape: grid size ``(X, Y, Z)`` of each volume.
        spacing: voxel size in mm.
        negative_fraction: fraction of patients without hemorrhage, in [0, 1].

    Returns:
        ``Path(out_dir)``.

    Raises:
        HemwslInputError: bad ``n_patients``, ``seed``, ``shape``, ``spacing`` or ``negative_fraction``.
    """
    if isinstance(n_patients, bool) or not isinstance(n_patients, (int, np.integer)) or n_patients < 1:
        raise HemwslInputError(f"n_patients must be a positive integer, got {n_patients!r}")
    if n_patients > 999:
        raise HemwslInputError(f"n_patients must be at most 999 (three-digit file names), got {n_patients!r}")
    seed = _check_seed(seed)
    shp, spc = _check_grid(shape, spacing)
    try:
        frac = float(negative_fraction)
    except (TypeError, ValueError):
        raise HemwslInputError(f"negative_fraction must be a number in [0, 1], got {negative_fraction!r}") from None
    if not (0.0 <= frac <= 1.0):
        raise HemwslInputError(f"negative_fraction must be a number in [0, 1], got {negative_fraction!r}")

    out = Path(out_dir)
    rng = np.random.default_rng([seed, 99])
    plan = _plan_cohort(rng, int(n_patients), frac)

    rows = [",".join(CTICH_CSV_HEADER)]
    demo = [",".join(("PatientNumber", "Age", "Gender") + tuple(s.capitalize() for s in SUBTYPES))]
    for idx, names in enumerate(plan):
        number = idx + 1
        ph = make_phantom(seed * 1000 + number, shp, spc, subtypes=names, positive=bool(names))
        stem = f"{number:03d}.nii.gz"
        save_nifti(ph["image"], ph["affine"], out / "ct_scans" / stem)
        save_nifti(ph["mask"], ph["affine"], out / "masks" / stem)
        for z in range(shp[2]):
            sub = [int(x) for x in ph["subtype_labels"][z]]
            rows.append(",".join(map(str, [number, z + 1, *sub, 1 - int(ph["slice_labels"][z]), 0])))
        age = int(rng.integers(18, 90))
        gender = "Male" if rng.random() < 0.55 else "Female"
        flags = [int(x) for x in ph["subtype_labels"].any(axis=0)]
        demo.append(",".join(map(str, [number, age, gender, *flags])))
    atomic_write_text(out / CTICH_CSV_NAME, "\n".join(rows) + "\n")
    atomic_write_text(out / CTICH_DEMOGRAPHICS_NAME, "\n".join(demo) + "\n")
    return out
