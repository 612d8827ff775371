"""Random draws from the latent space, nearest-neighbour spacing, structural validity, and the
conditional model's calibration and check (paper section 4, Fig. 5A, appendix G.1).

Random draws. ``z ~ N(0, 1)`` (a seeded ``torch.Generator``, so the same seed gives the same
draws on any machine's CPU), decoded by the VAE, segmented by the U-Net and turned into atoms
by :func:`~crystalgrid.models.decode.decode_atoms` (positions in Å in the 10 Å box frame).

Spacing (Fig. 5A). For every atom of a sample with at least two atoms, the distance to the
nearest *other* atom of the same sample, in the box, without periodic images: a decoded
sample is a box of atoms, not a crystal with a lattice. The real reference is computed the
same way on the store's ground-truth atoms (``atom_positions``), so both sides are the same
kind of object.

Validity (CDVAE, Xie et al. 2022): a structure is valid when no two atoms are closer than
0.5 Å and, where it has a volume (a lattice), the volume is above 0.1 Å^3. A box of decoded
atoms has no lattice, so only the distance test applies; a sample with no atom at all is
counted invalid (there is no structure) and reported as ``n_empty``; one atom is valid.

Conditional generation (appendix G.1). :func:`random_draws` with ``condition_z`` asks a
conditional checkpoint for a largest atomic number through the calibration of
:mod:`~crystalgrid.models.latent.conditioning`; :func:`conditional_check` reports how closely the
generated largest atomic number follows the requested one (paper Fig. S10A).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from crystalgrid.contracts import iter_view
from crystalgrid.errors import CrystalgridError
from crystalgrid.models.latent.conditioning import condition_for_z
from crystalgrid.spec import GridSpec
from crystalgrid.validity import MIN_DISTANCE, MIN_VOLUME

if TYPE_CHECKING:
    import torch

    from crystalgrid.models.checkpoint import Checkpoint
    from crystalgrid.models.nets.model import ReferenceModel
    from crystalgrid.models.runtime import Runtime

__all__ = [
    "SPACING_EDGES",
    "Samples",
    "conditional_check",
    "decode_latents",
    "min_distance",
    "nearest_neighbour_distances",
    "random_draws",
    "real_atom_sets",
    "spacing_distribution",
    "structural_validity",
    "write_samples",
]

#: Default histogram edges of the spacing distribution, Å (0 to 6 Å by 0.1 Å).
SPACING_EDGES: tuple[float, ...] = tuple(round(0.1 * i, 10) for i in range(61))
_PERCENTILES = tuple(range(0, 101, 10))


# ---- spacing and validity (numpy only) -----------------------------------------------------


def nearest_neighbour_distances(positions: np.ndarray) -> np.ndarray:
    """For each atom, the distance to the nearest other atom of the same set (no periodicity).

    Args:
        positions: ``(n, 3)`` Å.

    Returns:
        ``(n,)`` Å; empty when ``n < 2`` (an atom alone has no neighbour).
    """
    p = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(p) < 2:
        return np.zeros(0, dtype=np.float64)
    d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(d2, np.inf)
    return np.sqrt(d2.min(axis=1))


def min_distance(positions: np.ndarray) -> float | None:
    """The smallest distance between two atoms of a set (Å); ``None`` for fewer than 2 atoms."""
    d = nearest_neighbour_distances(positions)
    return float(d.min()) if d.size else None


def _percentiles(values: np.ndarray) -> dict[str, float] | None:
    if values.size == 0:
        return None
    return {
        str(p): float(v)
        for p, v in zip(_PERCENTILES, np.percentile(values, _PERCENTILES), strict=True)
    }


def spacing_distribution(
    atom_sets: Sequence[np.ndarray], *, edges: Sequence[float] = SPACING_EDGES
) -> dict[str, Any]:
    """The nearest-neighbour spacing distribution of many atom sets (the paper's Fig. 5A).

    Args:
        atom_sets: one ``(n_i, 3)`` array of positions (Å) per sample.
        edges: histogram bin edges, Å, ascending. Bins are ``[e_k, e_{k+1})`` except the
            last, which includes its right edge (numpy's convention); spacings beyond the
            last edge are counted in ``overflow``.

    Returns:
        A JSON-ready dict: ``edges``, ``counts`` (per bin), ``fraction`` (counts over all
        spacings, overflow included, so the fractions and ``overflow_fraction`` sum to 1),
        ``overflow``, ``n_spacings`` (atoms with a neighbour), ``n_samples``,
        ``n_samples_with_pairs``, ``mean`` and ``percentiles`` (0..100 by 10; ``None`` when
        there is no spacing at all).
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or len(e) < 2 or np.any(np.diff(e) <= 0):
        raise ValueError("edges must be at least two ascending values")
    per_sample = [nearest_neighbour_distances(p) for p in atom_sets]
    d = np.concatenate(per_sample) if per_sample else np.zeros(0)
    counts, _ = np.histogram(d, bins=e)
    overflow = int((d > e[-1]).sum())
    n = int(d.size)
    return {
        "edges": [float(x) for x in e],
        "counts": [int(c) for c in counts],
        "fraction": [float(c) / n if n else 0.0 for c in counts],
        "overflow": overflow,
        "overflow_fraction": overflow / n if n else 0.0,
        "n_spacings": n,
        "n_samples": len(per_sample),
        "n_samples_with_pairs": int(sum(x.size > 0 for x in per_sample)),
        "mean": float(d.mean()) if n else None,
        "percentiles": _percentiles(d),
    }


def structural_validity(
    atom_sets: Sequence[np.ndarray],
    *,
    volumes: Sequence[float | None] | None = None,
    min_dist: float = MIN_DISTANCE,
    min_volume: float = MIN_VOLUME,
) -> dict[str, Any]:
    """CDVAE's structural validity of many atom sets.

    A set is valid when it has at least one atom, no two of its atoms are closer than
    ``min_dist`` (a distance of exactly ``min_dist`` passes) and, where a volume is given,
    the volume is above ``min_volume``.

    Args:
        atom_sets: one ``(n_i, 3)`` array of positions (Å) per sample.
        volumes: Å^3 per sample, or ``None`` entries (no lattice: the test is skipped).
        min_dist: Å. min_volume: Å^3.

    Returns:
        ``fraction`` valid (``None`` for no sample), ``n_samples``, ``n_valid``, ``n_empty``,
        ``n_too_close``, ``n_small_volume``, ``valid`` (one bool per sample), ``min_distance``
        (per sample, Å, ``None`` below two atoms) and ``definition``.
    """
    if volumes is not None and len(volumes) != len(atom_sets):
        raise ValueError("volumes must have one entry per atom set")
    valid: list[bool] = []
    mins: list[float | None] = []
    n_empty = n_close = n_volume = 0
    for i, pos in enumerate(atom_sets):
        p = np.asarray(pos, dtype=np.float64).reshape(-1, 3)
        m = min_distance(p)
        mins.append(m)
        ok = True
        if len(p) == 0:
            n_empty += 1
            ok = False
        if m is not None and m < min_dist:
            n_close += 1
            ok = False
        vol = None if volumes is None else volumes[i]
        if vol is not None and not vol > min_volume:
            n_volume += 1
            ok = False
        valid.append(ok)
    n = len(valid)
    return {
        "fraction": sum(valid) / n if n else None,
        "n_samples": n,
        "n_valid": int(sum(valid)),
        "n_empty": n_empty,
        "n_too_close": n_close,
        "n_small_volume": n_volume,
        "valid": valid,
        "min_distance": mins,
        "definition": (
            f"CDVAE structural validity: at least one atom, no two atoms closer than {min_dist} Å"
            + (
                f", volume > {min_volume} Å^3"
                if volumes is not None
                else " (no lattice: the volume test does not apply)"
            )
        ),
    }


# ---- reading a split -----------------------------------------------------------------------


def real_atom_sets(
    view: Any, *, limit: int | None = 2000, batch_size: int = 256
) -> list[np.ndarray]:
    """The ground-truth atom positions (box Å) of the first ``limit`` samples of a split.

    Returns:
        One ``(n_i, 3)`` array per sample.
    """
    out: list[np.ndarray] = []
    for batch in iter_view(view, batch_size, fields=("atom_positions", "atom_numbers")):
        for pos in batch["atom_positions"]:
            if limit is not None and len(out) >= limit:
                return out
            out.append(np.asarray(pos, dtype=np.float64).reshape(-1, 3))
    return out


def conditional_check(
    requested_z: Sequence[int],
    numbers: Sequence[np.ndarray],
    *,
    within: int = 2,
    requested_c: Sequence[float] | None = None,
    max_density: Sequence[float] | None = None,
) -> dict[str, Any]:
    """How closely the generated largest atomic number follows the requested one (Fig. S10A).

    Args:
        requested_z: the atomic number asked for, one per sample.
        numbers: the decoded atomic numbers of each sample.
        within: the tolerance of ``fraction_within`` (|generated - requested| <= within).
        requested_c, max_density: optionally the condition fed (scaled) and each sample's
            generated largest scaled density, for their correlation.

    Returns:
        JSON-ready: ``n_samples``, ``n_empty`` (no atom decoded: no largest Z), over the
        others ``pearson_r`` (``None`` with fewer than 2 distinct requests or no spread),
        ``fraction_exact``, ``fraction_within``, ``mean_abs_dz``, ``per_request``
        (requested Z -> n, mean and median generated largest Z, fraction exact), and
        ``density_pearson_r`` when the densities are given.
    """
    req = np.asarray(requested_z, dtype=np.int64)
    if len(req) != len(numbers):
        raise ValueError("one requested atomic number per sample")
    gen = np.array([int(np.max(n)) if len(n) else 0 for n in numbers], dtype=np.int64)
    ok = gen > 0
    r, g = req[ok], gen[ok]

    def corr(a: np.ndarray, b: np.ndarray) -> float | None:
        if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
            return None
        return float(np.corrcoef(a.astype(float), b.astype(float))[0, 1])

    per: dict[str, Any] = {}
    for v in np.unique(req):
        sel = ok & (req == v)
        gv = gen[sel]
        per[str(int(v))] = {
            "n": int((req == v).sum()),
            "n_empty": int(((req == v) & ~ok).sum()),
            "mean": float(gv.mean()) if gv.size else None,
            "median": float(np.median(gv)) if gv.size else None,
            "fraction_exact": float((gv == v).mean()) if gv.size else None,
        }
    out: dict[str, Any] = {
        "n_samples": len(req),
        "n_empty": int((~ok).sum()),
        "within": int(within),
        "pearson_r": corr(r, g),
        "fraction_exact": float((r == g).mean()) if r.size else None,
        "fraction_within": float((np.abs(r - g) <= within).mean()) if r.size else None,
        "mean_abs_dz": float(np.abs(r - g).mean()) if r.size else None,
        "per_request": per,
    }
    if requested_c is not None and max_density is not None:
        out["density_pearson_r"] = corr(np.asarray(requested_c), np.asarray(max_density))
    return out


# ---- random draws --------------------------------------------------------------------------


@dataclass
class Samples:
    """Decoded latent vectors.

    Attributes:
        z: ``(n, latent)`` float32, the latent vectors.
        density: ``(n, B, B, B)`` float32, decoded density, Å^-3.
        species: ``(n, B, B, B)`` uint8, the U-Net's atomic number per voxel (0: no atom).
        positions: per sample ``(k, 3)`` float64 atom positions, box Å.
        numbers: per sample ``(k,)`` uint8 atomic numbers.
        condition: ``(n,)`` float32 condition fed to a conditional VAE (scaled density), or
            ``None``.
        condition_z: ``(n,)`` int64 requested largest atomic numbers, or ``None``.
    """

    z: np.ndarray
    density: np.ndarray
    species: np.ndarray
    positions: list[np.ndarray]
    numbers: list[np.ndarray]
    condition: np.ndarray | None = None
    condition_z: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.z)


def decode_latents(
    model: ReferenceModel,
    z: torch.Tensor,
    c: torch.Tensor | None = None,
    *,
    spec: GridSpec,
    runtime: Runtime | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Decode, segment and turn into atoms a batch of latent vectors, ``batch_size`` at a time.

    Args:
        model: the networks (eval mode).
        z: ``(n, latent)``; c: ``(n,)`` scaled conditions (conditional models only).
        spec: the model's grid geometry.
        runtime: device and precision (default: the model's device, fp32).
        batch_size: vectors per forward pass.

    Returns:
        ``(density (n, B, B, B) float32 Å^-3, species (n, B, B, B) uint8, positions,
        numbers)`` with one ``(k, 3)`` / ``(k,)`` array per sample.
    """
    import contextlib

    import torch

    from crystalgrid.models.decode import decode_atoms

    device = next(model.parameters()).device
    ctx = runtime.autocast if runtime is not None else contextlib.nullcontext
    densities, species = [], []
    for a in range(0, len(z), batch_size):
        zb = z[a : a + batch_size].to(device)
        cb = None if c is None else c[a : a + batch_size].to(device)
        with ctx():
            d, s = model.generate(zb, cb)
        densities.append(d.float().cpu().numpy())
        species.append(s.to(torch.uint8).cpu().numpy())
    bins = spec.bins
    dens = np.concatenate(densities) if densities else np.zeros((0, bins, bins, bins), np.float32)
    spc = np.concatenate(species) if species else np.zeros((0, bins, bins, bins), np.uint8)
    positions, numbers = [], []
    for grid in spc:
        p, n = decode_atoms(grid, spec)
        positions.append(p)
        numbers.append(n)
    return dens, spc, positions, numbers


def random_draws(
    checkpoint: str | Path | Checkpoint,
    n: int,
    *,
    seed: int = 0,
    condition_z: Sequence[int] | None = None,
    calibration: dict[str, Any] | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    precision: str | None = None,
) -> Samples:
    """Decode ``z ~ N(0, 1)`` into grids, segmentations and atoms.

    Args:
        checkpoint: a path or a loaded :class:`~crystalgrid.models.checkpoint.Checkpoint`.
        n: latent draws (``torch.randn`` from a ``torch.Generator`` seeded with ``seed``,
            on the CPU, so the draws do not depend on the device).
        seed: the generator's seed.
        condition_z: for a conditional checkpoint, the largest atomic numbers to ask for;
            each of the ``n`` draws is decoded once per requested value (``n * k`` samples,
            the same ``z`` for every value, so only the condition differs).
        calibration: the Z -> condition calibration; default the checkpoint's metadata
            ``condition_calibration`` (written by the trainer), else the isolated-atom peak.
        batch_size: vectors per forward pass.
        device, precision: where and how to run (``precision``: ``"fp32"``/``"bf16"``;
            default the checkpoint's, whose ``"auto"`` is bf16 on CUDA and fp32 on the CPU).

    Raises:
        CrystalgridError: a conditional checkpoint without ``condition_z``, or a condition
            for an unconditional one.
    """
    import torch

    from crystalgrid.models.checkpoint import Checkpoint, load_checkpoint
    from crystalgrid.models.runtime import resolve_runtime

    if n < 1:
        raise CrystalgridError(f"the number of samples must be >= 1, got {n}")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    runtime = resolve_runtime(device, precision or ckpt.config.precision, compile=False)
    model = ckpt.model.to(runtime.device).eval()
    conditional = bool(ckpt.config.conditional)
    if conditional and not condition_z:
        raise CrystalgridError(
            "this checkpoint is a conditional model: give the largest atomic number to "
            "generate (--condition Z)"
        )
    if condition_z and not conditional:
        raise CrystalgridError(
            "this checkpoint is not conditional (trained without --conditional); drop --condition"
        )
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, ckpt.config.latent_dim, generator=gen)
    c = cz = None
    if conditional:
        calib = calibration or ckpt.metadata.get("condition_calibration")
        zs = np.asarray(list(condition_z or ()), dtype=np.int64)
        values = condition_for_z(
            zs.tolist(), calib, spec=ckpt.spec, density_scale=ckpt.config.density_scale
        )
        z = z.repeat(len(zs), 1)
        cz = np.repeat(zs, n)
        c = torch.from_numpy(np.repeat(values, n))
    dens, spc, pos, num = decode_latents(
        model, z, c, spec=ckpt.spec, runtime=runtime, batch_size=batch_size
    )
    return Samples(
        z=z.numpy().astype(np.float32),
        density=dens,
        species=spc,
        positions=pos,
        numbers=num,
        condition=None if c is None else c.numpy().astype(np.float32),
        condition_z=cz,
    )


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def write_samples(
    samples: Samples,
    out_dir: str | Path,
    spec: GridSpec,
    *,
    grids: bool = True,
    cifs: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write decoded samples: ``grids.npz``, ``atoms.json`` and ``cif/sample_NNNN.cif``.

    - ``grids.npz`` (compressed): ``z`` (n, latent), ``density`` (n, B, B, B) Å^-3,
      ``species`` (n, B, B, B) uint8, and ``condition``/``condition_z`` when conditional.
    - ``atoms.json``: ``spec``, ``frame`` (box Å), ``samples`` (``index``, ``n_atoms``,
      ``numbers``, ``positions`` (Å), ``min_distance`` (Å), ``cif`` (a path relative to
      ``out_dir``, ``None`` for a sample without atoms), ``condition_z``), plus ``extra``.
    - One CIF per sample with atoms, in the cubic box frame
      (:func:`~crystalgrid.models.decode.write_cif`: the box is a frame, not a lattice).

    Returns:
        ``{"grids": path, "atoms": path, "cif": folder}`` (those written).
    """
    from crystalgrid.models.decode import write_cif

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if grids:
        arrays: dict[str, np.ndarray] = {
            "z": samples.z,
            "density": samples.density,
            "species": samples.species,
        }
        if samples.condition is not None:
            arrays["condition"] = samples.condition
        if samples.condition_z is not None:
            arrays["condition_z"] = samples.condition_z
        paths["grids"] = out / "grids.npz"
        np.savez_compressed(paths["grids"], **cast(dict[str, Any], arrays))
    cif_dir = out / "cif"
    if cifs:
        cif_dir.mkdir(exist_ok=True)
        paths["cif"] = cif_dir
    records = []
    width = max(4, len(str(len(samples) - 1)))
    for i, (pos, num) in enumerate(zip(samples.positions, samples.numbers, strict=True)):
        cif = None
        if cifs and len(num):
            name = f"sample_{i:0{width}d}.cif"
            write_cif(cif_dir / name, pos, num, spec)
            cif = f"cif/{name}"
        records.append(
            {
                "index": i,
                "n_atoms": len(num),
                "numbers": [int(v) for v in num],
                "positions": np.round(np.asarray(pos, dtype=float), 5).tolist(),
                "min_distance": _finite(min_distance(pos)),
                "cif": cif,
                "condition_z": None if samples.condition_z is None else int(samples.condition_z[i]),
            }
        )
    doc = {
        "spec": spec.to_dict(),
        "frame": (
            "box: Cartesian Å in the grid's cube [0, side)^3; no lattice (a box is not a period)"
        ),
        **(extra or {}),
        "samples": records,
    }
    paths["atoms"] = out / "atoms.json"
    paths["atoms"].write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return paths
