"""A store described for people: what ``crystalgrid info`` prints (counts, splits, rejects by
reason, the grid, the source's provenance and licence)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from crystalgrid.store._meta import StoreMeta
from crystalgrid.store._open import open_array, open_store, read_rows
from crystalgrid.store._schema import UNEXPECTED_ERROR

__all__ = ["describe"]


def describe(path: str | os.PathLike[str]) -> str:
    """The store at ``path`` (a folder or a URL) in lines of ``label  value``.

    Raises:
        NotFoundError, IntegrityError, RemoteStorageError: as :func:`open_store`.
    """
    location = str(path)
    group, attrs = open_store(location)
    meta = StoreMeta.from_attrs(attrs)
    lines = [
        f"dataset        {location}",
        f"state          {meta.state}",
        f"representation {meta.representation}",
        f"crystals       {meta.n_crystals if meta.n_crystals is not None else '?'}",
        f"samples        {meta.n_samples if meta.n_samples is not None else '?'} "
        f"({meta.samples_per_crystal} per crystal)",
    ]
    for name in meta.splits:
        c0, c1 = meta.split_range(name, "crystals")
        s0, s1 = meta.split_range(name)
        lines.append(f"  {name:5s}        {c1 - c0} crystals, {s1 - s0} samples")
    lines.append(f"split by       {meta.split_by}")
    inputs = {k: v for k, v in meta.rejects.items() if k != UNEXPECTED_ERROR}
    lines.append(f"rejected       {sum(inputs.values())}")
    for reason, count in sorted(inputs.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {reason:12s} {count}")
    if meta.rejects.get(UNEXPECTED_ERROR):
        lines.append(
            f"errors         {meta.rejects[UNEXPECTED_ERROR]} left out by an unexpected error "
            "(a bug of crystalgrid or of a library it uses, not of the input)"
        )
        lines.append(f"  first        {_first_error(group, location)}")
    grid, source = meta.grid, meta.source
    lines += [
        f"grid           {grid.get('bins')}^3 voxels over {grid.get('side')} Å, "
        f"sigma {grid.get('sigma')} Å, species radius {grid.get('species_radius')} Å",
        f"density        {meta.density_method}",
        f"seed           {meta.seed}",
        f"source         {source.get('kind')} {source.get('location', '')}",
        *_source_details(source),
        f"licence        {meta.licence or 'not stated by the source'}",
        f"citation       {meta.citation or '-'}",
        f"built with     crystalgrid {meta.crystalgrid_version} on {meta.created}",
        f"fingerprint    {meta.fingerprint}",
    ]
    return "\n".join(lines)


def _first_error(group: Any, path: str) -> str:
    """``"<material id>: <detail>"`` of the store's first reject of reason ``"error"``."""
    reasons = read_rows(open_array(group, "rejects/reason", path), slice(None), path)
    first = int(np.flatnonzero(reasons == UNEXPECTED_ERROR)[0])
    material_id = read_rows(open_array(group, "rejects/material_id", path), first, path)
    detail = read_rows(open_array(group, "rejects/detail", path), first, path)
    return f"{material_id}: {detail}"


def _source_details(source: dict[str, Any]) -> list[str]:
    """What provenance records beyond kind and location: a file's checksum, an OPTIMADE
    provider and its filter."""
    lines = []
    if source.get("sha256"):
        lines.append(f"  sha256       {source['sha256']}")
    if source.get("provider"):
        lines.append(f"  provider     {source['provider']} {source.get('base_url', '')}".rstrip())
    if source.get("filter"):
        lines.append(f"  filter       {source['filter']}")
    return lines
