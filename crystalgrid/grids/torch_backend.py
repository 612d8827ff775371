"""Density and species grids in torch, batched, on any device: the torch backend.

The same math as the numpy builder (:mod:`crystalgrid.grids.placement`,
:mod:`crystalgrid.grids.numpy_backend`), for a whole batch of samples at once, so a trainer
can draw fresh rotations and crops of the stored structures every epoch instead of reading
fixed samples:

- :func:`place_batch`: atoms of ``B`` samples in the box, from each crystal's lattice and
  fractional sites and a (B, 4, 4) transform (crystal Cartesian Å -> box Å). ``single`` places
  the wrapped unit cell; ``repeated`` builds every periodic image within ``spec.cutoff`` of a
  voxel centre, with the CPU builder's image ranges, vectorised over the batch (ragged
  candidates, then one compaction to a padded (B, M) batch). float64, like the CPU builder.
- :func:`density_grids`: Eq. (1), separable. Per-axis factors (B, N, bins) with the exponent
  clipped at -25 like the CPU code, then per block of atoms the (B, N, bins^2) plane
  ``fy (x) fz`` and one batched fp32 product ``fx^T @ plane`` accumulated into the grids.
  TF32 is switched off for these products (:func:`exact_fp32_matmul`): with TF32 the error
  reaches 3e-4 of the maximum (measured on an H100), above the 1e-4 bound.
- :func:`species_grids`: the nearest atom within ``spec.species_radius``, ties to the lower
  atom index, exactly the CPU rule: the same float64 distances, a scatter-min of the distance
  (its IEEE bit pattern as int64, which orders non-negative doubles exactly, so no
  quantisation) and a second scatter-min of the atom index among the atoms at that distance.
  The builder labels only the ground-truth atoms (inside the box): pass
  ``BatchPlacement.inside`` as the mask, as :class:`GridSampler` does.
- :func:`random_transforms` / :func:`random_rotations`: draws from a ``torch.Generator``
  (rotations Haar-distributed, via normalised Gaussian quaternions, as the CPU builder).

The sampler that uses these functions to draw fresh grids every step is
:class:`crystalgrid.grids.sampler.GridSampler`.

Reproducibility: a seeded ``torch.Generator`` gives the same transforms, hence the same
grids, every time on the same device type; CPU and CUDA generators give different streams,
and neither is the CPU builder's numpy stream (:func:`crystalgrid.grids.placement.crystal_rng`).
To recompute stored samples exactly, pass their stored transforms
(``samples/transform``) to :meth:`GridSampler.grids` or :func:`place_batch`.

Shapes: ``B`` samples, ``S`` (padded) sites per crystal, ``N``/``M`` (padded) atoms per sample,
``bins`` voxels per axis. Positions are Å. Padding is given by boolean masks; padded entries
may hold anything finite.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from crystalgrid.grids.common import SMALLEST_EXPONENT, check_representation, quaternion_matrix
from crystalgrid.spec import GridSpec

__all__ = [
    "BatchPlacement",
    "compact_rows",
    "density_grids",
    "density_grids_naive",
    "exact_fp32_matmul",
    "place_batch",
    "random_rotations",
    "random_transforms",
    "species_grids",
]


#: Default atoms per contraction pass of :func:`density_grids`.
DEFAULT_CHUNK = 256
#: Default budget (bytes) of the (samples, atoms, bins^2) fp32 plane of one pass.
DEFAULT_MAX_BYTES = 1 << 30


# --------------------------------------------------------------------------------------
# fp32 matmul precision


@contextmanager
def exact_fp32_matmul() -> Iterator[None]:
    """Full-precision (IEEE fp32) matrix products inside the block; settings restored after.

    Switches off TF32 on CUDA (cuBLAS) and reduced-precision fp32 in oneDNN on CPU (bf16 or
    TF32 under ``torch.set_float32_matmul_precision("high"/"medium")``). With the
    ``fp32_precision`` settings of torch >= 2.9 only those are touched (reading the legacy
    ``allow_tf32`` after them raises in torch); older torch uses ``allow_tf32`` and
    ``set_float32_matmul_precision``. These are process-wide settings, so another thread's
    matmuls run at full precision too while the block runs.
    """
    backends = [
        b
        for b in (torch.backends.cuda.matmul, getattr(torch.backends.mkldnn, "matmul", None))
        if b is not None and hasattr(b, "fp32_precision")
    ]
    if backends:
        saved = [b.fp32_precision for b in backends]
        try:
            for b in backends:
                b.fp32_precision = "ieee"
            yield
        finally:
            for b, value in zip(backends, saved, strict=True):
                b.fp32_precision = value
        return
    # torch < 2.9: the legacy switches.
    saved_tf32 = torch.backends.cuda.matmul.allow_tf32
    saved_precision = torch.get_float32_matmul_precision()
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved_tf32
        torch.set_float32_matmul_precision(saved_precision)


# --------------------------------------------------------------------------------------
# Helpers


def _check_atoms(
    positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if positions.ndim != 3 or positions.shape[-1] != 3:
        raise ValueError(f"positions must be (B, N, 3), got {tuple(positions.shape)}")
    if numbers.shape != positions.shape[:2]:
        raise ValueError(
            f"numbers must be (B, N) = {tuple(positions.shape[:2])}, got {tuple(numbers.shape)}"
        )
    if mask is None:
        mask = torch.ones(numbers.shape, dtype=torch.bool, device=positions.device)
    elif mask.shape != numbers.shape:
        raise ValueError(f"mask must be (B, N) = {tuple(numbers.shape)}, got {tuple(mask.shape)}")
    mask = mask.to(torch.bool)
    if numbers.is_floating_point():
        raise TypeError("numbers must be an integer tensor of atomic numbers")
    if not positions.is_floating_point():
        raise TypeError("positions must be a floating-point tensor (Å)")
    return positions, numbers, mask


def compact_rows(mask: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Move each row's masked-in entries to the front, in order (a stable partition).

    Returns ``(mask, *tensors)`` reordered along dim 1; a no-op when every row is already a
    prefix mask.
    """
    if mask.shape[1] == 0:
        return (mask, *tensors)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    out = [torch.gather(mask, 1, order)]
    for t in tensors:
        index = order.view(*order.shape, *([1] * (t.ndim - 2))).expand_as(t)
        out.append(torch.gather(t, 1, index))
    return tuple(out)


def _to_padded(
    sample: torch.Tensor, batch: int, *values: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Ragged rows (``sample`` sorted ascending, (K,)) to a padded batch.

    Returns ``(mask (B, M), padded values (B, M, ...))``, each sample's entries in order.
    """
    counts = torch.bincount(sample, minlength=batch)
    width = int(counts.max()) if batch and len(sample) else 0
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(sample), device=sample.device) - start[sample]
    mask = torch.zeros(batch, width, dtype=torch.bool, device=sample.device)
    mask[sample, rank] = True
    out = []
    for v in values:
        padded = torch.zeros((batch, width, *v.shape[1:]), dtype=v.dtype, device=v.device)
        padded[sample, rank] = v
        out.append(padded)
    return mask, tuple(out)


def _gap2(positions: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """Squared distance (Å^2) from each point (..., 3) to the cube of voxel centres.

    The same operations, in the same order, as the CPU code (float64 there and here).
    """
    lo, hi = 0.5 * spec.voxel, spec.side - 0.5 * spec.voxel
    gap = torch.clamp_min(torch.maximum(lo - positions, positions - hi), 0.0)
    g = gap * gap
    return g[..., 0] + g[..., 1] + g[..., 2]


# --------------------------------------------------------------------------------------
# Density


@torch.no_grad()
def density_grids(
    positions: torch.Tensor,
    numbers: torch.Tensor,
    mask: torch.Tensor | None = None,
    spec: GridSpec | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> torch.Tensor:
    """Density grids of a padded batch, (B, bins, bins, bins) float32, electrons per Å^3.

    ``M[b, i, j, k] = sum_m Z_m exp(-|r_m - c_ijk|^2 / (2 sigma^2)) / (sigma^3 (2 pi)^(3/2))``
    over the atoms with ``mask[b, m]``; every atom given is evaluated in full (the cutoff is
    the placement's business, as on the CPU).

    Work per sample is ``bins^3`` multiply-adds per atom, in batched fp32 matrix products with
    TF32 off, one per block of ``chunk`` atoms and group of samples (no loop over samples).
    When it saves more than 10% of the work, samples are sorted by atom count so that a block
    of atoms is contracted only for the samples that still have atoms there (padding then
    costs little even in mixed batches).

    Args:
        positions: (B, N, 3) box Å, float32 or float64 (float64 gives the CPU builder's
            exact factors; the products are fp32 either way).
        numbers: (B, N) integer atomic numbers.
        mask: (B, N) bool, True for real atoms; all True if None.
        spec: grid geometry (the paper's defaults if None).
        chunk: atoms per contraction pass.
        max_bytes: bound on the (samples, chunk, bins^2) fp32 plane of one pass; the batch is
            split into groups of samples to stay under it.

    Returns:
        (B, bins, bins, bins) float32 on the device of ``positions``.
    """
    spec = spec or GridSpec()
    positions, numbers, mask = _check_atoms(positions, numbers, mask)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    batch, bins, device = positions.shape[0], spec.bins, positions.device
    if batch == 0 or positions.shape[1] == 0:
        return torch.zeros(batch, bins, bins, bins, dtype=torch.float32, device=device)

    counts = mask.sum(1)
    prefix = torch.arange(positions.shape[1], device=device) < counts[:, None]
    if not torch.equal(prefix, mask):  # padding between atoms: move the atoms to the front
        mask, positions, numbers = compact_rows(mask, positions, numbers)
    weights = numbers.to(torch.float64) * spec.norm
    weights = torch.where(mask, weights, 0.0).to(torch.float32)
    positions = torch.where(mask[..., None], positions, 0.0)
    counts_host = counts.tolist()  # one host sync: the pass plan
    per_pass = max(1, max_bytes // (min(chunk, max(max(counts_host), 1)) * bins * bins * 4))

    # Sorted by atom count, a block of atoms is contracted only for the samples that have
    # atoms there; worth a permutation of the batch when padding would cost > 10% more work.
    order_host = sorted(range(batch), key=lambda i: -counts_host[i])
    sorted_plan = _plan([counts_host[i] for i in order_host], chunk, per_pass, sorted_=True)
    plain_plan = _plan(counts_host, chunk, per_pass, sorted_=False)
    use_sorted = _work(sorted_plan) < 0.9 * _work(plain_plan)
    if use_sorted:
        order = torch.tensor(order_host, device=device)
        positions, weights = positions[order], weights[order]
    centres = torch.as_tensor(spec.centres(), dtype=positions.dtype, device=device)
    scale = -0.5 / spec.sigma**2
    # The first block of atoms of each sample writes its grid (no zero fill, no read of the
    # output), later blocks add to it; samples without atoms are zeroed.
    out = torch.empty(batch, bins, bins * bins, dtype=torch.float32, device=device)
    in_order = [counts_host[i] for i in order_host] if use_sorted else counts_host
    empty = [i for i, c in enumerate(in_order) if c == 0]
    if empty:
        out.index_fill_(0, torch.tensor(empty, device=device), 0.0)
    with exact_fp32_matmul():
        for b0, b1, start, n in sorted_plan if use_sorted else plain_plan:
            fx, plane = _factors(
                positions[b0:b1, start : start + n],
                weights[b0:b1, start : start + n],
                centres,
                scale,
                bins,
            )
            _accumulate(out[b0:b1], fx, plane, first=start == 0)
    if use_sorted:
        out = out[torch.argsort(order)]
    return out.view(batch, bins, bins, bins)


def _plan(
    counts: list[int], chunk: int, per_pass: int, *, sorted_: bool
) -> list[tuple[int, int, int, int]]:
    """Passes ``(b0, b1, start, n)``: atoms ``start:start + n`` of samples ``b0:b1``.

    ``counts`` are the samples' atom counts in processing order; when ``sorted_`` (descending)
    only the samples that still hold atoms at ``start`` are contracted.
    """
    plan = []
    for start in range(0, max(counts, default=0), chunk):
        active = sum(1 for c in counts if c > start) if sorted_ else len(counts)
        for b0 in range(0, active, per_pass):
            b1 = min(active, b0 + per_pass)
            n = min(chunk, max(counts[b0:b1]) - start)
            if n > 0:
                plan.append((b0, b1, start, n))
    return plan


def _work(plan: list[tuple[int, int, int, int]]) -> int:
    return sum((b1 - b0) * n for b0, b1, _, n in plan)


def _factors(
    positions: torch.Tensor, weights: torch.Tensor, centres: torch.Tensor, scale: float, bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted x factors (b, bins, n) and the y-z plane (b, n, bins^2), fp32.

    As the CPU: the squared offset in the positions' dtype, then fp32 exponent, clipped at
    -25, then exp.
    """
    delta = positions[..., None] - centres  # (b, n, 3, bins)
    e = (delta * delta).to(torch.float32)
    e *= scale
    e.clamp_min_(SMALLEST_EXPONENT).exp_()
    fx = (e[:, :, 0] * weights[..., None]).transpose(1, 2)  # (b, bins, n)
    plane = (e[:, :, 1, :, None] * e[:, :, 2, None, :]).reshape(e.shape[0], e.shape[1], -1)
    return fx, plane


def _accumulate(out: torch.Tensor, fx: torch.Tensor, plane: torch.Tensor, *, first: bool) -> None:
    """``out = fx @ plane`` (``first``) or ``out += fx @ plane``, batched, in place.

    Called inside :func:`exact_fp32_matmul`; ``out`` is a contiguous slice of the grids.
    """
    if first:
        torch.bmm(fx, plane, out=out)
    else:
        out.baddbmm_(fx, plane)


@torch.no_grad()
def density_grids_naive(
    positions: torch.Tensor,
    numbers: torch.Tensor,
    mask: torch.Tensor | None = None,
    spec: GridSpec | None = None,
    *,
    block: int | None = None,
) -> torch.Tensor:
    """The straightforward evaluation: every atom against every voxel, fp32, no factoring.

    Kept as the yardstick for :func:`density_grids` in the benchmark. ``block`` atoms are
    broadcast against all voxels at a time (B x block x bins^3 floats); by default as many
    as keep that under 2^21 floats on a CPU (cache-sized), 2^26 on a GPU.

    Returns:
        (B, bins, bins, bins) float32, electrons per Å^3.
    """
    spec = spec or GridSpec()
    positions, numbers, mask = _check_atoms(positions, numbers, mask)
    batch, device = positions.shape[0], positions.device
    c = torch.as_tensor(spec.centres(), dtype=torch.float32, device=device)
    x, y, z = (a.reshape(-1) for a in torch.meshgrid(c, c, c, indexing="ij"))  # (V,) each
    weights = torch.where(mask, numbers.to(torch.float32) * spec.norm, 0.0)
    p = torch.where(mask[..., None], positions, 0.0).to(torch.float32)
    grid = torch.zeros(batch, x.shape[0], dtype=torch.float32, device=device)
    if block is None:
        budget = 1 << (21 if device.type == "cpu" else 26)
        block = max(1, budget // max(1, batch * x.shape[0]))
    for start in range(0, positions.shape[1], block):
        q = p[:, start : start + block, None, :]  # (B, block, 1, 3)
        d2 = (x - q[..., 0]) ** 2 + (y - q[..., 1]) ** 2 + (z - q[..., 2]) ** 2  # (B, block, V)
        g = torch.exp(d2 * (-0.5 / spec.sigma**2))
        grid += torch.bmm(weights[:, None, start : start + block], g)[:, 0]
    return grid.view(batch, *spec.shape)


# --------------------------------------------------------------------------------------
# Species


@torch.no_grad()
def species_grids(
    positions: torch.Tensor,
    numbers: torch.Tensor,
    mask: torch.Tensor | None = None,
    spec: GridSpec | None = None,
) -> torch.Tensor:
    """Species grids of a padded batch, (B, bins, bins, bins) uint8.

    A voxel holds the atomic number of the nearest atom within ``spec.species_radius`` (Å)
    of its centre, 0 if none; equal distances go to the atom listed first. Distances are
    computed in the positions' dtype with the CPU code's operations in its order, so float64
    positions give the CPU builder's grid exactly (ties included).

    Args:
        positions: (B, N, 3) box Å (float64 for exact agreement with the CPU builder).
        numbers: (B, N) integer atomic numbers (1..255).
        mask: (B, N) bool, True for real atoms; all True if None.
        spec: grid geometry (the paper's defaults if None).
    """
    spec = spec or GridSpec()
    positions, numbers, mask = _check_atoms(positions, numbers, mask)
    batch, width = numbers.shape
    bins, h, radius = spec.bins, spec.voxel, spec.species_radius
    device = positions.device
    volume = bins**3
    grid = torch.zeros(batch * volume, dtype=torch.uint8, device=device)
    if batch == 0 or width == 0 or radius == 0:
        return grid.view(batch, *spec.shape)
    # Only atoms within the radius of the cube of voxel centres can mark a voxel.
    near = mask & (_gap2(positions, spec) <= radius * radius)
    b_idx, m_idx = near.nonzero(as_tuple=True)  # sorted by sample, then atom index
    if len(b_idx) == 0:
        return grid.view(batch, *spec.shape)
    p = positions[b_idx, m_idx]  # (A, 3)
    # Candidate voxels of each atom: indices whose centres lie within +-radius per axis.
    first = torch.ceil((p - radius) / h - 0.5).to(torch.int64)
    span = math.floor(2 * radius / h + 1e-9) + 1
    r = torch.arange(span, device=device)
    steps = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    idx = first[:, None, :] + steps  # (A, span^3, 3)
    offset = (idx.to(p.dtype) + 0.5) * h - p[:, None, :]
    o = offset * offset
    dist2 = o[..., 0] + o[..., 1] + o[..., 2]
    valid = ((idx >= 0) & (idx < bins)).all(-1) & (dist2 <= radius * radius)
    # Keep the candidates within the radius (about 14 of 64 at the defaults): the scatters
    # below then touch only real voxels (no shared dump slot to contend for on a GPU).
    atom_of, cand = valid.nonzero(as_tuple=True)
    idx = idx[atom_of, cand]
    flat = (idx[:, 0] * bins + idx[:, 1]) * bins + idx[:, 2] + b_idx[atom_of] * volume
    # Nearest first: the bit pattern of a non-negative double orders like the double itself,
    # so an int64 scatter-min finds each voxel's smallest distance exactly (no quantisation).
    key = dist2[atom_of, cand].to(torch.float64).view(torch.int64)
    best = torch.full((batch * volume,), torch.iinfo(torch.int64).max, device=device)
    best.scatter_reduce_(0, flat, key, "amin")
    # Among the candidates at that distance, the lowest atom index wins (the CPU's tie-break).
    atom = m_idx[atom_of].to(torch.int32)
    top = torch.iinfo(torch.int32).max
    contender = torch.where(key == best[flat], atom, top)
    winner = torch.full((batch * volume,), top, dtype=torch.int32, device=device)
    winner.scatter_reduce_(0, flat, contender, "amin")
    won = contender == winner[flat]  # one candidate per marked voxel
    z = numbers[b_idx[atom_of], m_idx[atom_of]].to(torch.uint8)
    # Losers write to one spare slot past the end (plain stores, no atomics), then dropped.
    dump = batch * volume
    grid = torch.zeros(dump + 1, dtype=torch.uint8, device=device)
    grid[torch.where(won, flat, dump)] = z
    return grid[:dump].view(batch, *spec.shape)


# --------------------------------------------------------------------------------------
# Placement


@dataclass(frozen=True)
class BatchPlacement:
    """Atoms of ``B`` samples in the box, padded to ``M`` atoms.

    Attributes:
        positions: (B, M, 3) float64 box Å of every atom within ``spec.cutoff`` of a voxel
            centre (periodic images included for ``repeated``), in the CPU builder's order.
        numbers: (B, M) atomic numbers (the dtype given).
        mask: (B, M) bool, True for real atoms.
        inside: (B, M) bool, True for real atoms inside the box ``[0, side)^3`` (the ground
            truth).
        n_outside: (B,) int64, for ``single`` the cell's atoms outside the box; 0 for
            ``repeated``.
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    mask: torch.Tensor
    inside: torch.Tensor
    n_outside: torch.Tensor


#: Fractional slack of the image ranges against rounding of the box corners.
_RANGE_SLACK = 1e-9


def _box_corners(spec: GridSpec, device: torch.device) -> torch.Tensor:
    reach = spec.cutoff + 0.5 * spec.voxel
    lo, hi = -reach, spec.side + reach
    return torch.tensor(
        [[x, y, z] for x in (lo, hi) for y in (lo, hi) for z in (lo, hi)],
        dtype=torch.float64,
        device=device,
    )


def _image_ranges(
    lattice: torch.Tensor, transforms: torch.Tensor, spec: GridSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """First image index (B, 3) and images per axis (B, 3), int64.

    The box grown by the cutoff (plus half a voxel), mapped back to fractional coordinates,
    has the bounding box ``[lo, hi]``. A site of image ``s`` has fractional coordinates
    ``s + f`` with ``f`` in ``[0, 1]`` (``remainder`` can round up to 1), so only images
    ``ceil(lo) - 1 .. floor(hi)`` can reach the box; ``_RANGE_SLACK`` absorbs the rounding of
    the corners. The CPU builder scans ``floor(lo) - 1 .. ceil(hi)``, one more layer per side;
    those layers hold no atom within the cutoff, so the atoms kept, and their order, are the
    same, from up to (n + 2)^3 / n^3 fewer candidates.
    """
    corners = _box_corners(spec, lattice.device)
    inverse = torch.linalg.inv(transforms)
    crystal = corners @ inverse[:, :3, :3].transpose(1, 2) + inverse[:, None, :3, 3]
    corner_frac = torch.linalg.solve(lattice.transpose(1, 2), crystal.transpose(1, 2)).transpose(
        1, 2
    )
    first = torch.ceil(corner_frac.amin(1) - _RANGE_SLACK) - 1
    last = torch.floor(corner_frac.amax(1) + _RANGE_SLACK)
    return first.to(torch.int64), (last - first + 1).to(torch.int64)


@torch.no_grad()
def place_batch(
    lattice: torch.Tensor,
    frac: torch.Tensor,
    numbers: torch.Tensor,
    mask: torch.Tensor | None,
    transforms: torch.Tensor,
    representation: str,
    spec: GridSpec | None = None,
) -> BatchPlacement:
    """Atoms of ``B`` samples in the box, as :func:`crystalgrid.grids.placement.place_single` /
    :func:`~crystalgrid.grids.placement.place_repeated` place them, for the given transforms.

    ``single``: the wrapped unit cell, ``box = T @ [r, 1]``, no images. ``repeated``: every
    periodic image with ``T`` applied, over the CPU builder's image range per sample (the box
    grown by the cutoff, mapped to fractional coordinates), kept where within ``spec.cutoff``
    of the cube of voxel centres. Candidates are built ragged (their number per sample is
    images x sites of that sample), so a batch mixing small and large cells costs the sum of
    its samples, not the largest times the batch. Atoms keep the CPU builder's order (image
    index lexicographic, then site), which the species tie-break depends on.

    Args:
        lattice: (B, 3, 3) lattice vectors as rows, Å (one per sample).
        frac: (B, S, 3) fractional coordinates (padded).
        numbers: (B, S) integer atomic numbers.
        mask: (B, S) bool, True for real sites; all True if None.
        transforms: (B, 4, 4) crystal Cartesian Å -> box Å (as the CPU builder's
            ``Placement.transform`` / stored ``samples/transform``).
        representation: ``"single"`` or ``"repeated"``.
        spec: grid geometry (the paper's defaults if None).

    Returns:
        A :class:`BatchPlacement`, float64 positions on the lattice's device.
    """
    spec = spec or GridSpec()
    check_representation(representation)
    batch = lattice.shape[0]
    if lattice.shape != (batch, 3, 3) or transforms.shape != (batch, 4, 4):
        raise ValueError(
            f"lattice must be (B, 3, 3) and transforms (B, 4, 4), got {tuple(lattice.shape)} "
            f"and {tuple(transforms.shape)}"
        )
    if frac.ndim != 3 or frac.shape[0] != batch or frac.shape[2] != 3:
        raise ValueError(f"frac must be (B, S, 3) with B = {batch}, got {tuple(frac.shape)}")
    if numbers.shape != frac.shape[:2]:
        raise ValueError(f"numbers must be {tuple(frac.shape[:2])}, got {tuple(numbers.shape)}")
    device = lattice.device
    f64 = torch.float64
    lattice, transforms, frac = lattice.to(f64), transforms.to(device, f64), frac.to(device, f64)
    numbers = numbers.to(device)
    if mask is None:
        mask = torch.ones(numbers.shape, dtype=torch.bool, device=device)
    mask, frac, numbers = compact_rows(mask.to(device, torch.bool), frac, numbers)
    sites = mask.sum(1)  # (B,)
    rotation, translation = transforms[:, :3, :3], transforms[:, :3, 3]
    # Each site's offset from its cell's origin, in the box frame: (B, S, 3).
    base = torch.remainder(frac, 1.0)
    atom_offset = torch.bmm(torch.bmm(base, lattice), rotation.transpose(1, 2))

    if representation == "repeated":
        first, per_axis = _image_ranges(lattice, transforms, spec)
    else:
        first = torch.zeros(batch, 3, dtype=torch.int64, device=device)
        per_axis = torch.ones(batch, 3, dtype=torch.int64, device=device)
    images = per_axis.prod(1)  # (B,)

    # Ragged images: (sample, image index) for every image of every sample. Gathers are
    # index_select on flat tensors (much faster than multi-tensor indexing on a CPU).
    n_images = int(images.sum())
    image_sample = torch.repeat_interleave(torch.arange(batch, device=device), images)
    image_start = torch.cumsum(images, 0) - images
    k = torch.arange(n_images, device=device) - image_start.index_select(0, image_sample)
    per_image = per_axis.index_select(0, image_sample)
    ny, nz = per_image[:, 1], per_image[:, 2]
    shift = first.index_select(0, image_sample) + torch.stack(
        (k // (ny * nz), (k // nz) % ny, k % nz), -1
    )
    if representation == "repeated":
        cart = torch.bmm(shift.to(f64)[:, None, :], lattice.index_select(0, image_sample))
        turn = rotation.index_select(0, image_sample).transpose(1, 2)
        origin = torch.bmm(cart, turn)[:, 0] + translation.index_select(0, image_sample)
    else:
        origin = translation  # one image per sample, shift 0: T @ 0 = t, as the CPU

    # Ragged candidates: every (image, site) of every sample, image-major like the CPU.
    per_sample = images * sites
    n_candidates = int(per_sample.sum())
    sample = torch.repeat_interleave(torch.arange(batch, device=device), per_sample)
    local = torch.arange(n_candidates, device=device) - (
        torch.cumsum(per_sample, 0) - per_sample
    ).index_select(0, sample)
    n_sites = sites.clamp_min(1).index_select(0, sample)
    image = image_start.index_select(0, sample) + local // n_sites
    site = sample * frac.shape[1] + local % n_sites  # flat (sample, site) index
    positions = origin.index_select(0, image) + atom_offset.reshape(-1, 3).index_select(0, site)
    # The CPU compares the distance (a square root) with the cutoff; the same test exactly.
    keep = torch.sqrt(_gap2(positions, spec)) <= spec.cutoff
    n_outside = torch.zeros(batch, dtype=torch.int64, device=device)
    if representation == "single":  # the cell's atoms outside the box, near or not
        outside = ~((positions >= 0.0) & (positions < spec.side)).all(-1)
        n_outside.index_add_(0, sample, outside.to(torch.int64))
    kept = keep.nonzero()[:, 0]
    sample, site, positions = (t.index_select(0, kept) for t in (sample, site, positions))
    inside = ((positions >= 0.0) & (positions < spec.side)).all(-1)
    out_mask, (out_positions, out_numbers, out_inside) = _to_padded(
        sample, batch, positions, numbers.reshape(-1).index_select(0, site), inside
    )
    return BatchPlacement(out_positions, out_numbers, out_mask, out_inside, n_outside)


# --------------------------------------------------------------------------------------
# Random transforms


def random_rotations(
    n: int,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """(n, 3, 3) rotations drawn uniformly (Haar measure on SO(3)).

    A normalised 4-D Gaussian is a uniform unit quaternion, as in
    :func:`crystalgrid.grids.placement.random_rotation`. ``generator`` must live on ``device``.
    """
    device = generator.device if generator is not None and device is None else device
    q = torch.randn(n, 4, generator=generator, device=device, dtype=dtype)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return quaternion_matrix(q, torch)


def random_transforms(
    lattice: torch.Tensor,
    representation: str,
    spec: GridSpec | None = None,
    *,
    generator: torch.Generator | None = None,
    rotate: bool | None = None,
    shift: bool = True,
) -> torch.Tensor:
    """Fresh (B, 4, 4) transforms for crystals ``lattice`` (B, 3, 3), as the CPU builder's.

    ``single``: the cell's centre to the box centre, under a Haar-random rotation (``rotate``
    defaults to True). ``repeated``: a uniformly random fractional offset put at the box corner
    (unless ``shift`` is False: the cell origin there, like sample 0 of the CPU builder), rotated
    about the corner when ``rotate`` (default False). Each call draws B quaternions then
    B x 3 offsets from ``generator`` whatever the options, so the stream's use is fixed.
    Reproducible for a seed on one device type; not the CPU builder's numpy stream.
    """
    spec = spec or GridSpec()
    check_representation(representation)
    rotate = (representation == "single") if rotate is None else rotate
    batch, device = lattice.shape[0], lattice.device
    lattice = lattice.to(torch.float64)
    rotation = random_rotations(batch, generator, device=device)
    offset = torch.rand(batch, 3, generator=generator, device=device, dtype=torch.float64)
    if not rotate:
        rotation = torch.eye(3, dtype=torch.float64, device=device).expand(batch, 3, 3)
    if representation == "single":
        before = -torch.bmm(
            torch.full((batch, 1, 3), 0.5, dtype=torch.float64, device=device), lattice
        )
        after = torch.full((batch, 3), 0.5 * spec.side, dtype=torch.float64, device=device)
    else:
        before = (
            -torch.bmm(offset[:, None, :], lattice) if shift else torch.zeros_like(offset)[:, None]
        )
        after = torch.zeros(batch, 3, dtype=torch.float64, device=device)
    t = torch.eye(4, dtype=torch.float64, device=device).repeat(batch, 1, 1)
    t[:, :3, :3] = rotation
    t[:, :3, 3] = torch.bmm(rotation, before.transpose(1, 2))[..., 0] + after
    return t
