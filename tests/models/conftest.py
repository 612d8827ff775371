"""Fixtures for the reference-model tests: modest torch threads and an in-memory split.

``FakeView`` implements the part of the dataset API the trainer and the evaluator consume
(``len``, ``[i]``, ``[a:b]``, ``iter_batches``, ``spec``) over grids made from a few
Gaussians, so these tests do not depend on the Zarr store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from crystalgrid.spec import GridSpec

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def paint(
    positions: np.ndarray, numbers: np.ndarray, spec: GridSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Density (Eq. 1) and species grids of atoms in the box, the slow exact way.

    Returns:
        ``(density (n, n, n) float32 Å^-3, species (n, n, n) uint8)``.
    """
    c = spec.centres()
    grid = np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1)  # (n, n, n, 3)
    density = np.zeros(spec.shape)
    species = np.zeros(spec.shape, dtype=np.uint8)
    best = np.full(spec.shape, np.inf)
    for p, z in zip(positions, numbers, strict=True):
        d2 = ((grid - p) ** 2).sum(-1)
        density += z * spec.norm * np.exp(-d2 / (2 * spec.sigma**2))
        hit = (d2 <= spec.species_radius**2) & (d2 < best)
        species[hit] = z
        best = np.where(hit, d2, best)
    return density.astype(np.float32), species


class FakeView:
    """A split of ``n`` random crystals-in-a-box (1-4 atoms each, at least 2 Å apart)."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        spec: GridSpec | None = None,
        species: tuple[int, ...] = (8, 26),
        max_atoms: int = 4,
    ) -> None:
        self.spec = spec or GridSpec()
        rng = np.random.default_rng(seed)
        self.samples: list[dict[str, Any]] = []
        side = self.spec.side
        for i in range(n):
            k = int(rng.integers(1, max_atoms + 1))
            pos: list[np.ndarray] = []
            while len(pos) < k:
                p = rng.uniform(0.2 * side, 0.8 * side, size=3)
                if all(np.linalg.norm(p - q) >= 2.0 for q in pos):
                    pos.append(p)
            positions = np.array(pos)
            numbers = rng.choice(np.array(species, dtype=np.uint8), size=k)
            density, sp = paint(positions, numbers, self.spec)
            self.samples.append(
                {
                    "density": density,
                    "species": sp,
                    "atom_positions": positions,
                    "atom_numbers": numbers,
                    "material_id": f"fake-{i}",
                    "transform": np.eye(4),
                    "index": i,
                }
            )

    def __len__(self) -> int:
        return len(self.samples)

    def _collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "density": np.stack([s["density"] for s in items]),
            "species": np.stack([s["species"] for s in items]),
            "atom_positions": [s["atom_positions"] for s in items],
            "atom_numbers": [s["atom_numbers"] for s in items],
            "material_id": [s["material_id"] for s in items],
            "transform": np.stack([s["transform"] for s in items]),
            "index": np.array([s["index"] for s in items]),
        }

    def __getitem__(self, key: int | slice) -> dict[str, Any]:
        if isinstance(key, slice):
            return self._collate(self.samples[key])
        return self.samples[key]

    def iter_batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False
    ) -> Iterator[dict[str, Any]]:
        order = np.arange(len(self))
        if shuffle:
            order = np.random.default_rng(seed).permutation(len(self))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if drop_last and len(idx) < batch_size:
                return
            yield self._collate([self.samples[i] for i in idx])


@pytest.fixture(scope="session")
def make_view() -> Callable[..., FakeView]:
    """``make_view(n, seed=0, **kwargs)`` -> a :class:`FakeView`."""
    return FakeView


@pytest.fixture(scope="session")
def paint_atoms() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """``paint_atoms(positions, numbers, spec)`` -> ``(density, species)`` grids."""
    return paint


@pytest.fixture
def tiny_config():
    """A small, fast configuration of the paper's architecture for CPU tests."""
    from crystalgrid.models.config import TrainConfig

    return TrainConfig(
        latent_dim=16,
        encoder_channels=(4, 4, 8, 8),
        decoder_channels=(8, 4, 4),
        unet_base_channels=4,
        unet_levels=2,
        lr=3e-3,
        batch_size=4,
        beta=1e-4,
        epochs=1,
        seed=0,
        device="cpu",
        precision="fp32",  # the same arithmetic, and speed, on every CPU
        log_every=1,
        prefetch=1,
    )


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """The embedded demo crystals as a single-cell store, one sample each (built once, ~3 s)."""
    import crystalgrid

    path = tmp_path_factory.mktemp("demo-store") / "single.zarr"
    config = crystalgrid.BuildConfig(representation="single", samples_per_crystal=1)
    crystalgrid.build(None, path, config=config, quiet=True)
    return path


def save_tiny_checkpoint(path, **config):
    """An untrained tiny model (classes O, Ti, Sr; ``config`` overrides the settings) saved
    at ``path``: for tests of the verbs' plumbing, not quality."""
    torch = pytest.importorskip("torch")
    from crystalgrid.models.checkpoint import save_checkpoint
    from crystalgrid.models.config import TrainConfig
    from crystalgrid.models.nets.classes import ClassMap
    from crystalgrid.models.nets.model import ReferenceModel
    from crystalgrid.spec import GridSpec

    settings = {
        "latent_dim": 8,
        "encoder_channels": (2, 2, 4, 4),
        "decoder_channels": (4, 2, 2),
        "unet_base_channels": 2,
        "unet_levels": 1,
        "classes": (8, 22, 38),
        "device": "cpu",
        **config,
    }
    tiny = TrainConfig(**settings)
    torch.manual_seed(0)
    model = ReferenceModel(tiny, 30, ClassMap(tiny.classes))
    return save_checkpoint(path, model, spec=GridSpec())


@pytest.fixture(scope="session")
def tiny_checkpoint_at():
    """``tiny_checkpoint_at(path, **config)``: :func:`save_tiny_checkpoint`."""
    return save_tiny_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """An untrained tiny model saved as a checkpoint: tests of the verbs' plumbing, not quality."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-ckpt") / "tiny.pt")
