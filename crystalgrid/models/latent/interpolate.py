"""Linear interpolation in the latent space between two samples (paper Figs. 4B, S9).

Both samples are encoded (posterior means), ``z(t) = (1 - t) z_a + t z_b`` for ``K`` values of
``t`` evenly spaced in [0, 1] (both ends included), and each ``z(t)`` is decoded, segmented
and turned into atoms (box Å). A conditional model interpolates its condition the same way.

:func:`interpolation_survey` walks many such lines and reports how physical the points
between the ends stay: their structural validity, atoms per point and, for a model with a
learned prior, the prior's log-density along the line.

Samples are named by their index in the store (``view[i]["index"]``, the number
``crystalgrid show`` takes) or by material id (the first sample of that crystal).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from crystalgrid.errors import BadInputError
from crystalgrid.jsonio import write_results

__all__ = [
    "Interpolation",
    "interpolate",
    "interpolation_survey",
    "resolve_sample",
    "write_interpolation",
]


def resolve_sample(dataset: Any, ident: str | int) -> int:
    """The store index of a sample named by its index or its material id.

    Args:
        dataset: an open store (``crystalgrid.open_dataset``).
        ident: an integer (or a string of digits): the sample's index in the whole store;
            anything else: a material id, resolved to the first sample of that crystal.

    Raises:
        BadInputError: an index out of range, or an id the store does not hold.
    """
    n = len(dataset)
    text = str(ident).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < n:
            raise BadInputError(f"sample index {index} is out of range (the store has {n})")
        return index
    for i, mid in enumerate(dataset.per_sample("material_id")):
        if str(mid) == text:
            return i
    raise BadInputError(f"no sample with material id {text!r} in {dataset.location}")


@dataclass
class Interpolation:
    """Decoded points along a latent line.

    Attributes:
        t: ``(K,)`` positions along the line, 0 (sample a) .. 1 (sample b).
        z: ``(K, latent)`` float32 latent vectors.
        density: ``(K, B, B, B)`` float32 decoded density, Å^-3.
        species: ``(K, B, B, B)`` uint8 segmentation (atomic numbers, 0: no atom).
        positions, numbers: per step the decoded atoms (box Å, atomic numbers).
        targets: ``(2, B, B, B)`` float32 the two input grids (Å^-3).
        target_species: ``(2, B, B, B)`` uint8 their stored species grids.
        ends: the two samples (``index``, ``material_id``, ``n_atoms``).
        condition: ``(K,)`` float32 the interpolated condition (conditional models) or None.
    """

    t: np.ndarray
    z: np.ndarray
    density: np.ndarray
    species: np.ndarray
    positions: list[np.ndarray]
    numbers: list[np.ndarray]
    targets: np.ndarray
    target_species: np.ndarray
    ends: list[dict[str, Any]]
    condition: np.ndarray | None = None


def interpolate(
    checkpoint: Any,
    sample_a: dict[str, Any],
    sample_b: dict[str, Any],
    *,
    steps: int = 8,
    device: str = "cpu",
    precision: str = "auto",
) -> Interpolation:
    """Decode ``steps`` points of the line between two samples' encodings.

    Args:
        checkpoint: a path or a loaded :class:`~crystalgrid.models.checkpoint.Checkpoint`.
        sample_a, sample_b: sample dicts (``view[i]``: ``density`` (B, B, B) Å^-3, and
            optionally ``species``, ``index``, ``material_id``, ``atom_numbers``).
        steps: points along the line, ends included (>= 2).
        device: where to run.
        precision: ``"auto"`` (bf16 autocast where the processor runs it natively, else fp32),
            ``"fp32"`` or ``"bf16"``.

    Raises:
        BadInputError: fewer than two steps, or grids of the wrong size.
    """
    import torch

    from crystalgrid.models.checkpoint import as_checkpoint
    from crystalgrid.models.latent.draws import decode_latents
    from crystalgrid.models.runtime import resolve_runtime

    if steps < 2:
        raise BadInputError(f"steps must be >= 2 (both ends are included), got {steps}")
    ckpt = as_checkpoint(checkpoint)
    runtime = resolve_runtime(device, precision, compile=False)
    model = runtime.place(ckpt.model).eval()
    targets = np.stack([np.asarray(s["density"], dtype=np.float32) for s in (sample_a, sample_b)])
    if targets.shape[1:] != ckpt.spec.shape:
        raise BadInputError(
            f"grids of shape {targets.shape[1:]} do not fit a model of {ckpt.spec.shape}"
        )
    with torch.no_grad():
        mu, _, c_ends = model.posterior(torch.from_numpy(targets).to(runtime.device))
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float32, device=mu.device)
    z = (1 - t)[:, None] * mu[0] + t[:, None] * mu[1]
    c = None if c_ends is None else (1 - t) * c_ends[0] + t * c_ends[1]
    dens, spc, pos, num = decode_latents(model, z, c, spec=ckpt.spec, runtime=runtime)
    zeros = np.zeros(ckpt.spec.shape, dtype=np.uint8)
    ends = [
        {
            "index": None if s.get("index") is None else int(s["index"]),
            "material_id": s.get("material_id"),
            "n_atoms": None if s.get("atom_numbers") is None else len(s["atom_numbers"]),
        }
        for s in (sample_a, sample_b)
    ]
    return Interpolation(
        t=t.cpu().numpy(),
        z=z.cpu().numpy().astype(np.float32),
        density=dens,
        species=spc,
        positions=pos,
        numbers=num,
        targets=targets,
        target_species=np.stack(
            [np.asarray(s.get("species", zeros), dtype=np.uint8) for s in (sample_a, sample_b)]
        ),
        ends=ends,
        condition=None if c is None else c.cpu().numpy().astype(np.float32),
    )


def interpolation_survey(
    checkpoint: Any,
    view: Any,
    *,
    pairs: int = 50,
    steps: int = 8,
    batch_size: int = 64,
    device: str = "cpu",
    precision: str = "auto",
) -> dict[str, Any]:
    """How physical straight lines in the latent space stay between real samples.

    The first ``2 * pairs`` samples of ``view`` are encoded (posterior means) and paired
    (0 with 1, 2 with 3, ...); each line is decoded at ``steps`` points, ends included, and
    the points strictly between the ends are scored.

    Returns:
        ``{"n_pairs", "steps", "validity": structural_validity of the inner points (without
        the per-sample lists), "atoms_per_point": atom_counts of the inner points,
        "ends": the same two for the ends, "prior_log_density": mean nats at each t (a model
        with a learned prior; else None), "t"}``.

    Raises:
        BadInputError: fewer than three steps, fewer than two samples, or a conditional
            model.
    """
    import torch

    from crystalgrid.contracts import iter_view
    from crystalgrid.models.checkpoint import as_checkpoint
    from crystalgrid.models.latent.draws import decode_latents
    from crystalgrid.models.latent.prior import prior_for
    from crystalgrid.models.runtime import resolve_runtime
    from crystalgrid.models.scoring.generated import atom_counts, structural_validity

    if steps < 3:
        raise BadInputError(f"steps must be >= 3 (ends and a point between), got {steps}")
    ckpt = as_checkpoint(checkpoint)
    if ckpt.config.conditional:
        raise BadInputError("the survey walks an unconditional model's latent space")
    runtime = resolve_runtime(device, precision, compile=False)
    model = runtime.place(ckpt.model).eval()
    means = []
    for batch in iter_view(view, batch_size, limit=2 * pairs, fields=("density",)):
        grids = torch.from_numpy(np.ascontiguousarray(batch["density"], dtype=np.float32))
        with torch.no_grad(), runtime.autocast():
            mu, _, _ = model.posterior(grids.to(runtime.device))
        means.append(mu.float().cpu())
    if not means or sum(len(m) for m in means) < 2:
        raise BadInputError("the survey needs at least two samples")
    mu = torch.cat(means)
    n_pairs = len(mu) // 2
    a, b = mu[0 : 2 * n_pairs : 2], mu[1 : 2 * n_pairs : 2]
    t = torch.linspace(0.0, 1.0, steps)
    z = (1 - t)[None, :, None] * a[:, None] + t[None, :, None] * b[:, None]  # (pairs, steps, L)
    _, _, positions, _ = decode_latents(
        model, z.reshape(-1, z.shape[-1]), spec=ckpt.spec, runtime=runtime, batch_size=batch_size
    )
    inner = [p for k, p in enumerate(positions) if 0 < k % steps < steps - 1]
    ends = [p for k, p in enumerate(positions) if k % steps in (0, steps - 1)]
    prior = prior_for(ckpt)
    density = None
    if prior is not None:
        log_p = prior.log_prob(z.reshape(-1, z.shape[-1])).reshape(n_pairs, steps)
        density = [round(float(v), 1) for v in log_p.mean(0)]

    def summary(sets: list[np.ndarray]) -> dict[str, Any]:
        valid = structural_validity(sets)
        return {k: v for k, v in valid.items() if k not in ("valid", "min_distance")}

    return {
        "n_pairs": n_pairs,
        "steps": steps,
        "t": [round(float(v), 4) for v in t],
        "validity": summary(inner),
        "atoms_per_point": atom_counts(inner),
        "ends": {"validity": summary(ends), "atoms_per_point": atom_counts(ends)},
        "prior_log_density": density,
    }


def write_interpolation(
    result: Interpolation, out_dir: str | Path, spec: Any, *, extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``interpolation.npz``, ``atoms.json``, ``strip.png`` and a CIF per step.

    - ``interpolation.npz``: ``t``, ``z``, ``density``, ``species``, ``targets``,
      ``target_species`` (and ``condition``).
    - ``atoms.json``: the two ends and per step ``t``, ``n_atoms``, ``numbers``, ``positions``
      (box Å), ``formula`` (element counts) and its ``cif`` (``None`` without atoms).
    - ``strip.png``: central slices per step (:func:`crystalgrid.models.plots.interpolation_strip`).
    - ``cif/step_NN.cif``: the atoms of each step in the box frame.
    """
    from crystalgrid.models.decoding.structure import write_cif
    from crystalgrid.models.plots import interpolation_strip

    out = Path(out_dir)
    (out / "cif").mkdir(parents=True, exist_ok=True)
    arrays = {
        "t": result.t,
        "z": result.z,
        "density": result.density,
        "species": result.species,
        "targets": result.targets,
        "target_species": result.target_species,
    }
    if result.condition is not None:
        arrays["condition"] = result.condition
    np.savez_compressed(out / "interpolation.npz", **cast(dict[str, Any], arrays))
    steps = []
    for k, (pos, num) in enumerate(zip(result.positions, result.numbers, strict=True)):
        cif = None
        if len(num):
            cif = f"cif/step_{k:02d}.cif"
            write_cif(out / cif, pos, num, spec=spec)
        steps.append(
            {
                "step": k,
                "t": float(result.t[k]),
                "n_atoms": len(num),
                "formula": _formula(num),
                "numbers": [int(v) for v in num],
                "positions": np.round(np.asarray(pos, dtype=float), 5).tolist(),
                "cif": cif,
            }
        )
    doc = {"ends": result.ends, **(extra or {}), "frame": "box Å", "steps": steps}
    write_results(out / "atoms.json", doc)
    strip = interpolation_strip(result, out / "strip.png", spec=spec)
    return {
        "npz": out / "interpolation.npz",
        "atoms": out / "atoms.json",
        "strip": strip,
        "cif": out / "cif",
    }


def _formula(numbers: np.ndarray) -> str:
    """Element counts, e.g. ``"O3 Sr1 Ti1"`` (symbols sorted); ``""`` for no atom."""
    from pymatgen.core.periodic_table import Element

    zs, counts = np.unique(np.asarray(numbers, dtype=int), return_counts=True)
    parts = sorted(
        f"{Element.from_Z(int(z)).symbol}{int(c)}" for z, c in zip(zs, counts, strict=True)
    )
    return " ".join(parts)
