"""The block task: make and write the samples of one block of crystals (runs on a worker)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import zarr

from crystalgrid.build_timings import BuildTimings
from crystalgrid.builder._config import BuildConfig
from crystalgrid.grids.placement import Crystal, placements
from crystalgrid.lock import LockGuard
from crystalgrid.samples import sample_from_placement
from crystalgrid.store import ChunkWriter, StoreMeta, open_group, read_crystals, write_block

#: The task is named ``_grid_block``: its Dask keys (``_grid_block-<hash>``) say what runs.
__all__ = ["_grid_block"]


def _grid_block(
    location: str,
    storage_options: dict[str, Any] | None,
    block: int,
    config_dict: dict[str, Any],
    *,
    guard: LockGuard | None = None,
) -> tuple[int, BuildTimings]:
    """Make and write the samples of one block of crystals; return the crystals done and
    the seconds of each stage. With ``guard``, the build's lock is checked before writing."""
    from threadpoolctl import threadpool_limits

    times = BuildTimings()
    config = BuildConfig.from_dict(config_dict)
    S, spec = config.samples_per_crystal, config.spec
    first = block * config.block_crystals
    with times.stage("read"):
        group = open_group(location, mode="r+", storage_options=storage_options)
        meta = StoreMeta.read(group)
        arrays = _opened_arrays(location, storage_options, meta)
        offsets, frac, number, lattice, ids, split = read_crystals(
            group, first, first + config.block_crystals, arrays=arrays
        )
    last = first + len(lattice)

    n = (last - first) * S
    bins = spec.bins
    density = np.zeros((n, bins, bins, bins), dtype=config.dtype)
    species = np.zeros((n, bins, bins, bins), dtype=np.uint8)
    transform = np.zeros((n, 4, 4))
    n_atoms = np.zeros(n, dtype=np.int32)
    n_outside = np.zeros(n, dtype=np.int32)
    positions, numbers = [], []
    with threadpool_limits(1):
        for c in range(last - first):
            lo, hi = offsets[c] - offsets[0], offsets[c + 1] - offsets[0]
            crystal = Crystal(lattice[c], frac[lo:hi], number[lo:hi])
            with times.stage("placement"):
                found = placements(
                    crystal,
                    str(ids[c]),
                    config.representation,
                    spec,
                    n_samples=S,
                    seed=config.seed,
                    rotate=config.rotate,
                )
            for k, placement in enumerate(found):
                i = c * S + k
                with times.stage("grids"):
                    sample = sample_from_placement(placement, str(ids[c]), spec)
                density[i] = sample.density
                species[i] = sample.species
                transform[i] = sample.transform
                n_atoms[i] = len(sample.atom_numbers)
                n_outside[i] = sample.n_outside
                positions.append(sample.atom_positions.astype(np.float32))
                numbers.append(sample.atom_numbers)

    start = first * S
    if guard is not None:
        guard.check()  # a build whose lock was taken over writes no more blocks
    with (
        times.stage("write"),
        zarr.config.set({"array.write_empty_chunks": True}),  # verify expects every chunk
    ):
        write_block(
            group,
            block,
            start=start,
            n=n,
            pos_num=(positions, numbers),
            values={
                "density": density,
                "species": species,
                "samples/crystal": np.repeat(np.arange(first, last, dtype=np.int32), S),
                "samples/material_id": np.repeat(ids, S),
                "samples/split": np.repeat(split, S),
                "samples/transform": transform,
                "samples/n_atoms": n_atoms,
                "samples/n_outside": n_outside,
            },
            writer=lambda array: ChunkWriter(array, location).write,
            checksum=meta.checksum,
            arrays=arrays,
        )
    return last - first, times


#: The arrays that build tasks opened in this process, by store: opening one reads its
#: metadata (~0.5 ms locally, a request remotely), and a worker grids many blocks of a store.
_OPENED: dict[tuple[str, str, str, str], dict[str, zarr.Array]] = {}


def _opened_arrays(
    location: str, storage_options: dict[str, Any] | None, meta: StoreMeta
) -> dict[str, zarr.Array]:
    """The cache of opened arrays of the store at ``location`` as it is now: keyed by its
    fingerprint and creation time too, so a store built anew there gets a fresh one."""
    key = (
        location,
        json.dumps(storage_options, sort_keys=True, default=str),
        meta.fingerprint,
        meta.created,
    )
    if key not in _OPENED:
        if len(_OPENED) >= 4:  # a process builds one or two stores at a time
            _OPENED.pop(next(iter(_OPENED)))
        _OPENED[key] = {}
    return _OPENED[key]
