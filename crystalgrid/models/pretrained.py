"""A trained model from Python: load by name, then structures in, structures out.

>>> from crystalgrid.models import load
>>> model = load("baseline-1h-cpu-single")
>>> rebuilt = model.reconstruct(structure)          # a pymatgen Structure, same lattice
>>> z = model.encode(structure)                      # (latent_dim,) float32
>>> draws = model.sample(8, seed=0)                  # from the model's learned prior
>>> path = model.interpolate(structure, other, steps=6)

Every method takes pymatgen ``Structure`` objects (or ASE ``Atoms``, converted with pymatgen's
adaptor) and returns ``Structure`` objects; the box, its rotation, the grid and the decoders
are handled inside. A structure is placed as the ``single`` representation places it (the
unit cell centred in the 10 Å box, by default unrotated). Decoded atoms live in the box frame:
:meth:`CrystalModel.reconstruct` maps them back into the input's own lattice, while
:meth:`~CrystalModel.decode`, :meth:`~CrystalModel.sample` and
:meth:`~CrystalModel.interpolate` return them in the box itself (a cubic lattice of the
box's side: a frame for the atoms, not a period of a crystal).

Decoding never needs the trainer or a dataset store.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from crystalgrid.errors import BadInputError, RejectedStructure
from crystalgrid.grids import density_grid
from crystalgrid.grids.placement import Crystal, Placement, place_single
from crystalgrid.models.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint
from crystalgrid.models.decoding.structure import atoms_to_structure
from crystalgrid.models.latent.draws import decode_latents
from crystalgrid.models.latent.prior import PRIORS, LatentPrior, draw_latents, prior_for
from crystalgrid.models.runtime import Runtime, resolve_runtime
from crystalgrid.models.scoring.evaluate import UNET_DECODERS, decode_sample, evaluate
from crystalgrid.models.scoring.matching import to_crystal_frame

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["PRIORS", "CrystalModel", "load"]


def load(name_or_path: str | Path, *, device: str = "cpu", precision: str = "auto") -> CrystalModel:
    """A trained model, by shipped name (``"baseline-1h-cpu-single"``) or checkpoint path,
    with its learned prior where one lies beside its weights.

    Raises:
        NotFoundError: an unknown name or a missing file.
        BadInputError: a file that is not a checkpoint.
        IntegrityError: a prior beside the weights that belongs to another model.
    """
    path = resolve_checkpoint(name_or_path)
    return CrystalModel(load_checkpoint(path), device=device, precision=precision)


class CrystalModel:
    """A trained VAE + U-Net with its decoders and prior (module docstring).

    Args:
        checkpoint: the loaded checkpoint.
        device, precision: where and how the networks run
            (:func:`~crystalgrid.models.runtime.resolve_runtime`).
        decoder: how a decoded density becomes atoms (one of
            :data:`~crystalgrid.models.scoring.evaluate.DECODERS` that read the U-Net);
            default ``"unet-cell"`` where the checkpoint carries its tuned species reader,
            else ``"unet-peaks"``.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        device: str = "cpu",
        precision: str = "auto",
        decoder: str | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.spec = checkpoint.spec
        self.runtime: Runtime = resolve_runtime(device, precision, compile=False)
        self.net = self.runtime.place(checkpoint.model).eval()
        if checkpoint.config.conditional:
            raise BadInputError(
                "a conditional model needs its condition at every decode: use random_draws "
                "and interpolate of crystalgrid.models.latent"
            )
        tuned = "cell_species" in checkpoint.metadata.get("decoder", {})
        self.decoder = decoder or ("unet-cell" if tuned else "unet-peaks")
        if self.decoder not in UNET_DECODERS:
            raise BadInputError(
                f"decoder must be one of {', '.join(UNET_DECODERS)}, got {decoder!r}"
            )
        self.prior: LatentPrior | None = prior_for(checkpoint)
        self._latent_dim = int(checkpoint.config.latent_dim)

    def __repr__(self) -> str:
        name = self.checkpoint.path.name if self.checkpoint.path else "checkpoint"
        prior = "learned prior" if self.prior is not None else "no learned prior"
        return f"<CrystalModel {name}: latent {self._latent_dim}, {self.decoder}, {prior}>"

    # ---- structures to grids ---------------------------------------------------------

    def place(self, structure: Any, *, rotation: np.ndarray | None = None) -> Placement:
        """The structure's unit cell centred in the box (``rotation`` ``(3, 3)``, default
        none).

        Raises:
            BadInputError: a structure that is not ordered, or a cell that does not fit the
                box (an atom would fall outside it).
        """
        try:
            crystal = Crystal.from_structure(_as_structure(structure))
        except RejectedStructure as exc:
            raise BadInputError(f"cannot grid the structure: {exc}") from exc
        placement = place_single(crystal, self.spec, rotation)
        if placement.n_outside:
            formula = _as_structure(structure).composition.reduced_formula
            raise BadInputError(
                f"the cell of {formula} does not fit the {self.spec.side:g} Å box: "
                f"{placement.n_outside} of {len(crystal)} atoms fall outside it"
            )
        return placement

    def density(self, structure: Any, *, rotation: np.ndarray | None = None) -> np.ndarray:
        """The structure's density grid ``(bins, bins, bins)`` float32, Å^-3 (Eq. (1))."""
        p = self.place(structure, rotation=rotation)
        return density_grid(p.positions, p.numbers, self.spec)

    # ---- the latent space ------------------------------------------------------------

    def encode(self, structure: Any, *, rotation: np.ndarray | None = None) -> np.ndarray:
        """The posterior mean of a structure's latent, ``(latent_dim,)`` float32."""
        return self._encode(self.density(structure, rotation=rotation)[None])[0]

    def decode(self, z: np.ndarray) -> Structure | list[Structure]:
        """Atoms of latents: ``(latent_dim,)`` gives one Structure, ``(n, latent_dim)`` a list
        (box lattice).

        Raises:
            BadInputError: a latent of the wrong shape or not finite.
        """
        latent = np.asarray(z, dtype=np.float32)
        if latent.ndim not in (1, 2) or latent.shape[-1] != self._latent_dim:
            raise BadInputError(
                f"latents must be ({self._latent_dim},) or (n, {self._latent_dim}), "
                f"got shape {latent.shape}"
            )
        if not np.isfinite(latent).all():
            raise BadInputError("latents must be finite")
        atoms = self.decode_atoms(latent.reshape(-1, self._latent_dim))
        structures = [atoms_to_structure(p, n, self.spec) for p, n in atoms]
        return structures[0] if latent.ndim == 1 else structures

    def reconstruct(self, structure: Any, *, rotation: np.ndarray | None = None) -> Structure:
        """Encode, decode (posterior mean) and read back the atoms, in the structure's own
        lattice (sites wrapped into its cell)."""
        s = _as_structure(structure)
        placement = self.place(s, rotation=rotation)
        grid = density_grid(placement.positions, placement.numbers, self.spec)
        ((positions, numbers),) = self.decode_atoms(self._encode(grid[None]))
        return to_crystal_frame(
            positions, numbers, transform=placement.transform, lattice=s.lattice
        )

    def sample(
        self, n: int, *, seed: int = 0, prior: str = "auto", temperature: float = 1.0
    ) -> list[Structure]:
        """``n`` random draws decoded into Structures (box lattice).

        Args:
            n: draws.
            seed: seeds a CPU generator: the same seed gives the same latents on any device.
            prior: ``"learned"`` (the model's prior), ``"normal"`` (the paper's ``N(0, 1)``)
                or ``"auto"`` (learned where the model has one).
            temperature: scales the learned prior's widths.
        """
        draws = self.decode(self.sample_latents(n, seed=seed, prior=prior, temperature=temperature))
        assert isinstance(draws, list)
        return draws

    def sample_latents(
        self, n: int, *, seed: int = 0, prior: str = "auto", temperature: float = 1.0
    ) -> np.ndarray:
        """``(n, latent_dim)`` float32 latents drawn as :meth:`sample` draws them."""
        z, _ = draw_latents(
            self.prior, n, self._latent_dim, seed=seed, prior=prior, temperature=temperature
        )
        return z.numpy()

    def interpolate(self, a: Any, b: Any, steps: int = 8) -> list[Structure]:
        """Atoms decoded at ``steps`` points of the straight line between two structures'
        latents, ends included (box lattice)."""
        if steps < 2:
            raise BadInputError(f"steps must be >= 2 (both ends are included), got {steps}")
        ends = np.stack([self.encode(a), self.encode(b)])
        t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
        path = self.decode((1 - t) * ends[0] + t * ends[1])
        assert isinstance(path, list)
        return path

    def score(self, split: Any, **options: Any) -> dict[str, Any]:
        """The paper's scores on a dataset split (``open_dataset(path).split("test")``): see
        :func:`~crystalgrid.models.scoring.evaluate.evaluate` for ``options``; the decoder is
        the model's."""
        options.setdefault("decoder", self.decoder)
        options.setdefault("quiet", True)
        return evaluate(self.checkpoint, split, device=str(self.runtime.device), **options)

    # ---- batches of grids and latents ---------------------------------------------------

    def _encode(self, density: np.ndarray) -> np.ndarray:
        """Posterior means ``(n, latent_dim)`` of grids ``(n, bins, bins, bins)`` Å^-3."""
        with torch.no_grad(), self.runtime.autocast():
            mu, _, _ = self.net.posterior(torch.from_numpy(density).to(self.runtime.device))
        return mu.float().cpu().numpy()

    def decode_atoms(
        self, z: np.ndarray, *, batch_size: int = 16
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per latent of ``z`` ``(n, latent_dim)``: ``(positions (k, 3) box Å, atomic numbers
        (k,) uint8)`` by the model's decoder."""

        def read(logits: np.ndarray, density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return decode_sample(self.decoder, logits, density, self.checkpoint)

        latents = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
        _, _, positions, numbers = decode_latents(
            self.net,
            latents,
            spec=self.spec,
            runtime=self.runtime,
            batch_size=batch_size,
            read_atoms=read,
        )
        return list(zip(positions, numbers, strict=True))


def _as_structure(structure: Any) -> Structure:
    """A pymatgen Structure of a Structure or an ASE ``Atoms`` (periodic, with a cell)."""
    from pymatgen.core import Structure

    if isinstance(structure, Structure):
        return structure
    if type(structure).__name__ == "Atoms" and type(structure).__module__.startswith("ase"):
        from pymatgen.io.ase import AseAtomsAdaptor

        if not structure.cell.volume > 0:
            raise BadInputError("the ASE Atoms has no cell (a periodic structure is needed)")
        return AseAtomsAdaptor.get_structure(structure)
    raise BadInputError(
        f"expected a pymatgen Structure or an ASE Atoms, got {type(structure).__name__}"
    )
