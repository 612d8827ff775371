"""Random draws from the latent space (paper section 4), decoded into grids and atoms.

``z`` from the model's learned prior (:mod:`~crystalgrid.models.latent.prior`) where it has
one, else the paper's ``N(0, 1)`` (a seeded ``torch.Generator`` on the CPU either way, so the
same seed gives the same draws on any machine), decoded by the VAE, segmented by the U-Net
and turned into atoms by :func:`~crystalgrid.models.decoding.segmentation.decode_atoms`
(positions in Å in the 10 Å box frame).

Conditional generation (appendix G.1). :func:`random_draws` with ``condition_z`` asks a
conditional checkpoint for a largest atomic number through the calibration of
:mod:`~crystalgrid.models.latent.conditioning`;
:func:`~crystalgrid.models.scoring.generated.conditional_check` reports how closely the
generated largest atomic number follows the requested one (paper Fig. S10A).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from crystalgrid.contracts import ViewLike
from crystalgrid.errors import BadInputError
from crystalgrid.jsonio import write_results
from crystalgrid.models.latent.conditioning import condition_for_z
from crystalgrid.models.scoring.distances import min_distance
from crystalgrid.spec import GridSpec

if TYPE_CHECKING:
    import torch

    from crystalgrid.models.checkpoint import Checkpoint
    from crystalgrid.models.nets.model import ReferenceModel
    from crystalgrid.models.runtime import Runtime

__all__ = ["Samples", "decode_latents", "draws_report", "random_draws", "write_samples"]


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
        prior: where ``z`` was drawn from: ``"learned"`` or ``"normal"``.
    """

    z: np.ndarray
    density: np.ndarray
    species: np.ndarray
    positions: list[np.ndarray]
    numbers: list[np.ndarray]
    condition: np.ndarray | None = None
    condition_z: np.ndarray | None = None
    prior: str = "normal"

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
    read_atoms: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Decode, segment and turn into atoms a batch of latent vectors, ``batch_size`` at a time.

    Args:
        model: the networks (eval mode).
        z: ``(n, latent)``; c: ``(n,)`` scaled conditions (conditional models only).
        spec: the model's grid geometry.
        runtime: device and precision (default: the model's device, fp32).
        batch_size: vectors per forward pass.
        read_atoms: ``read_atoms(U-Net logits (classes, B, B, B), density (B, B, B) Å^-3)``
            gives one sample's ``(positions, numbers)`` (e.g. a checkpoint's tuned decoder,
            :func:`~crystalgrid.models.scoring.evaluate.decode_sample`); default the paper's
            connected components of the argmax segmentation.

    Returns:
        ``(density (n, B, B, B) float32 Å^-3, species (n, B, B, B) uint8, positions,
        numbers)`` with one ``(k, 3)`` / ``(k,)`` array per sample.
    """
    import contextlib

    import torch

    from crystalgrid.models.decoding.segmentation import decode_atoms

    device = next(model.parameters()).device
    ctx = runtime.autocast if runtime is not None else contextlib.nullcontext
    densities, species = [], []
    positions: list[np.ndarray] = []
    numbers: list[np.ndarray] = []
    for a in range(0, len(z), batch_size):
        zb = z[a : a + batch_size].to(device)
        cb = None if c is None else c[a : a + batch_size].to(device)
        with torch.no_grad(), ctx():
            recon = model.vae.decode(zb, cb)
            logits = model.class_log_probs(model.unet(recon))
            d = model.unscale(recon).reshape(len(zb), *spec.shape)
            s = model.z_of_class[logits.argmax(dim=1)]
        grids = d.float().cpu().numpy()
        labels = s.to(torch.uint8).cpu().numpy()
        densities.append(grids)
        species.append(labels)
        scores = logits.float().cpu().numpy() if read_atoms is not None else None
        for i in range(len(zb)):
            if scores is not None and read_atoms is not None:
                p, n = read_atoms(scores[i], grids[i])
            else:
                p, n = decode_atoms(labels[i], spec)
            positions.append(p)
            numbers.append(n)
    bins = spec.bins
    dens = np.concatenate(densities) if densities else np.zeros((0, bins, bins, bins), np.float32)
    spc = np.concatenate(species) if species else np.zeros((0, bins, bins, bins), np.uint8)
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
    prior: str = "auto",
    temperature: float = 1.0,
    decoder: str = "unet-components",
) -> Samples:
    """Decode random latents into grids, segmentations and atoms.

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
        device, precision: where and how to run (``precision``: ``"auto"``, ``"fp32"``,
            ``"bf16"``; default ``"auto"``: bf16 where the processor runs it natively, see
            :func:`~crystalgrid.models.runtime.resolve_runtime`).
        prior: ``"learned"``: the prior fitted to the model's posteriors and saved beside its
            weights (:mod:`~crystalgrid.models.latent.prior`); ``"normal"``: the paper's
            ``N(0, 1)``; ``"auto"``: learned where the model has one.
        temperature: scales the learned prior's widths.
        decoder: how a decoded density becomes atoms: the paper's ``"unet-components"``, or
            another U-Net decoder of :data:`~crystalgrid.models.scoring.evaluate.DECODERS`
            with the checkpoint's tuned settings (``"unet-cell"`` reads species per cell).

    Raises:
        BadInputError: ``n < 1``, an unknown ``decoder``, a conditional checkpoint without
            ``condition_z``, or a condition for an unconditional one.
        NotFoundError: ``prior="learned"`` for a model without one.
    """
    import torch

    from crystalgrid.models.checkpoint import as_checkpoint
    from crystalgrid.models.latent.prior import draw_latents, prior_for
    from crystalgrid.models.runtime import resolve_runtime

    if n < 1:
        raise BadInputError(f"the number of samples must be >= 1, got {n}")
    ckpt = as_checkpoint(checkpoint)
    runtime = resolve_runtime(device, precision or "auto", compile=False)
    model = runtime.place(ckpt.model).eval()
    conditional = bool(ckpt.config.conditional)
    if conditional and not condition_z:
        raise BadInputError(
            "this checkpoint is a conditional model: give the largest atomic number to "
            "generate (--condition Z)"
        )
    if condition_z and not conditional:
        raise BadInputError(
            "this checkpoint is not conditional (trained with conditional=False); drop --condition"
        )
    learned = prior_for(ckpt) if prior != "normal" else None
    z, source = draw_latents(
        learned, n, ckpt.config.latent_dim, seed=seed, prior=prior, temperature=temperature
    )
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
    read_atoms = None
    if decoder != "unet-components":
        from crystalgrid.models.scoring.evaluate import UNET_DECODERS, decode_sample

        if decoder not in UNET_DECODERS:
            raise BadInputError(
                f"decoder must be one of {', '.join(UNET_DECODERS)}, got {decoder!r}"
            )

        def read_atoms(logits: np.ndarray, density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return decode_sample(decoder, logits, density, ckpt)

    dens, spc, pos, num = decode_latents(
        model, z, c, spec=ckpt.spec, runtime=runtime, batch_size=batch_size, read_atoms=read_atoms
    )
    return Samples(
        prior=source,
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
      (:func:`~crystalgrid.models.decoding.structure.write_cif`: the box is a frame, not a lattice).

    Returns:
        ``{"grids": path, "atoms": path, "cif": folder}`` (those written).
    """
    from crystalgrid.models.decoding.structure import write_cif

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
            write_cif(cif_dir / name, pos, num, spec=spec)
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
    paths["atoms"] = write_results(out / "atoms.json", doc)
    return paths


def draws_report(
    samples: Samples,
    ckpt: Any,
    *,
    real: ViewLike | None = None,
    real_limit: int | None = 2000,
    training: ViewLike | None = None,
    within: int = 2,
    about: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``crystalgrid sample`` writes to ``report.json``: the draws beside real crystals.

    Args:
        samples: the draws (:func:`random_draws`).
        ckpt: their checkpoint (grid spec, density scale, condition calibration).
        real: a split of real crystals to compare with (spacing, validity, atoms per cell,
            charge balance); ``None``: the draws alone.
        real_limit: samples of ``real`` read (``None``: all).
        training: a training split for uniqueness and novelty (StructureMatcher, the box as
            the lattice); ``None``: not measured.
        within: tolerance (in Z) of a conditional model's check.
        about: facts put first in the report (checkpoint, seed, prior, ...).

    Returns:
        ``spacing``, ``validity``, ``atoms_per_sample`` and ``charge_balance`` (each with
        ``samples`` and ``real``), ``uniqueness_novelty`` with ``training``, ``conditional``
        for a conditional model's draws; ``validity`` keeps its per-sample lists out (they go
        to ``atoms.json``).
    """
    from crystalgrid.models.scoring.generated import (
        atom_counts,
        charge_balance,
        conditional_check,
        real_atoms,
        spacing_distribution,
        structural_validity,
        uniqueness_and_novelty,
    )

    def summary(validity: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in validity.items() if k not in ("valid", "min_distance")}

    validity = structural_validity(samples.positions)
    report: dict[str, Any] = {
        **(about or {}),
        "n_samples": len(samples),
        "spacing": {"samples": spacing_distribution(samples.positions), "real": None},
        "validity": {"samples": summary(validity), "real": None},
        "atoms_per_sample": {"samples": atom_counts(samples.positions), "real": None},
        "charge_balance": {"samples": charge_balance(samples.numbers), "real": None},
    }
    if real is not None:
        positions, numbers = real_atoms(real, limit=real_limit)
        report["spacing"]["real"] = spacing_distribution(positions)
        report["validity"]["real"] = summary(structural_validity(positions))
        report["atoms_per_sample"]["real"] = atom_counts(positions)
        report["charge_balance"]["real"] = charge_balance(numbers)
        report["real"] = {"samples": len(positions)}
    if training is not None:
        report["uniqueness_novelty"] = uniqueness_and_novelty(
            samples.positions,
            samples.numbers,
            real_atoms(training, limit=None),
            side=ckpt.spec.side,
        )
    if samples.condition_z is not None:
        max_density = samples.density.reshape(len(samples), -1).max(axis=1)
        report["conditional"] = conditional_check(
            samples.condition_z.tolist(),
            samples.numbers,
            within=within,
            requested_c=None if samples.condition is None else samples.condition.tolist(),
            max_density=max_density * ckpt.config.density_scale,
        )
        calibrated = ckpt.metadata.get("condition_calibration")
        report["conditional"]["calibration"] = (
            "training split (checkpoint metadata)" if calibrated else "isolated-atom peak"
        )
    return report
