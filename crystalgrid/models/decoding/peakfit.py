"""Atoms from a density grid alone, without training: peaks, then a least-squares fit.

The density of Eq. (1) is a sum of Gaussians of known width whose amplitudes are the atomic
numbers, so a grid can be decoded by fitting that sum back to it:

1. **Peaks.** The grid's white-noise level is estimated from its finest detail (the median
   absolute value of the grid minus a 1-voxel smoothing of it: an Eq. (1) density varies
   over ~3 voxels and has little of it). Peaks are searched in a copy smoothed by a Gaussian
   of ``smooth`` voxels, which keeps each atom's peak where it is and divides the noise by
   ~6: every voxel of it that is the largest of its 3x3x3 neighbourhood and holds more than
   ``threshold`` (in units of the density of one electron at an atom's centre,
   ``spec.norm``), and more than 5 standard deviations of the smoothed noise, is an atom
   candidate. Its position is refined per axis by the vertex of the parabola through the
   logarithms of the three values around it (exact for one isolated Gaussian).
2. **Amplitudes.** With the positions fixed, the grid is linear in the amplitudes: a
   non-negative least-squares fit of the (unsmoothed) grid gives each candidate's ``Z``
   (electrons).
3. **Refinement.** Positions, amplitudes and one Gaussian width shared by every atom are
   fitted together by a few Levenberg-Marquardt steps (up to :data:`REFINE_MAX_ATOMS`
   candidates). The width lets a grid blurred as a whole (a model's output) keep its atoms'
   electrons: each Gaussian integrates to its amplitude whatever its width. Candidates that
   end within 0.5 Å of each other are merged, and so is a satellite (under 5% of a
   neighbour's electrons, within 1.2 sigma of it), which noise lets absorb part of a heavy
   atom. The fits leave out the outermost voxel layer, where a smoothed grid is least
   faithful.
4. **Residual rounds.** Two atoms closer than ``2 sigma`` (2 Å) make one peak, so the peaks of
   the smoothed residual (grid minus fit) above the same thresholds are added as new
   candidates and steps 2-3 repeated, up to ``rounds`` times.
5. **Clipped noise.** A grid with exactly-zero voxels was clipped at zero after noise was
   added (an Eq. (1) density is positive everywhere): the noise's positive mean where the
   density is low would otherwise look like atoms. Its level is estimated from the zeros and
   their neighbours (:func:`clipped_noise_level`), and the refinement and the residual rounds
   fit the expected clipped density ``E[max(model + noise, 0)]`` instead of the model.
6. Candidates whose fitted amplitude is below ``min_z``, or below 5 standard deviations of
   an amplitude fitted to the noise alone, are dropped; the others become atoms
   with ``Z = round(amplitude)``; candidates outside the box are dropped (the ground truth
   holds only atoms inside it, while the density also carries the tails of atoms just
   outside).

This is what the density carries by itself:
:func:`~crystalgrid.models.scoring.decoders.score_peak_fit` scores it on the true densities of
any split (no model), :func:`~crystalgrid.models.scoring.evaluate.evaluate` on a VAE's
reconstructions, with the same scorer as the U-Net's decoding. It does not import torch.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage, optimize, special

from crystalgrid.spec import GridSpec

__all__ = [
    "REFINE_MAX_ATOMS",
    "atomic_numbers",
    "clipped_noise_level",
    "fit_amplitudes",
    "fit_atoms",
    "fitted_electrons",
    "noise_level",
]

_TINY = 1e-12
#: Candidates closer than this (Å) after refinement are one atom.
_MERGE = 0.5
#: Candidates beyond which the joint refinement of positions is skipped.
REFINE_MAX_ATOMS = 96
#: Most Levenberg-Marquardt steps of the position refinement.
_REFINE_STEPS = 10
#: Candidates must stand this many noise standard deviations above the noise.
_SIGNIFICANCE = 5.0
#: A candidate with less than this share of a neighbour's electrons, closer to it than
#: ``_SATELLITE_RADIUS`` sigma, cannot be told from a slight misfit of that neighbour (noise
#: lets a small Gaussian beside a heavy atom absorb part of it) and is merged into it. Real
#: neighbours this close are H beside C, N or O (ratio >= 1/8, beyond this share).
_SATELLITE_RATIO = 0.05
_SATELLITE_RADIUS = 1.2
#: The range of the fitted Gaussian width, in units of ``spec.sigma``.
_WIDTH_RANGE = (0.8, 2.0)


def _peaks(grid: np.ndarray, spec: GridSpec, threshold: float, limit: int) -> np.ndarray:
    """Sub-voxel positions ``(n, 3)`` Å of the (at most ``limit``) highest local maxima of
    ``grid`` above ``threshold``."""
    local_max = ndimage.maximum_filter(grid, size=3, mode="constant", cval=-np.inf) == grid
    ijk = np.argwhere(local_max & (grid > threshold))
    if len(ijk) > limit:
        heights = grid[tuple(ijk.T)]
        ijk = ijk[np.sort(np.argsort(-heights, kind="stable")[:limit])]
    if len(ijk) == 0:
        return np.zeros((0, 3))
    padded = np.pad(np.maximum(grid, _TINY), 1, mode="edge")
    log = np.log(padded)
    offsets = np.zeros((len(ijk), 3))
    centre = log[ijk[:, 0] + 1, ijk[:, 1] + 1, ijk[:, 2] + 1]
    for axis in range(3):
        step = np.zeros(3, dtype=int)
        step[axis] = 1
        lo = log[tuple((ijk - step + 1).T)]
        hi = log[tuple((ijk + step + 1).T)]
        curvature = lo - 2 * centre + hi
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(curvature < 0, 0.5 * (lo - hi) / curvature, 0.0)
        offsets[:, axis] = np.clip(shift, -0.5, 0.5)
    return (ijk + 0.5 + offsets) * spec.voxel


def _design(positions: np.ndarray, spec: GridSpec, width: float | None = None) -> np.ndarray:
    """``(bins^3, n)``: the density of one electron at each position, per voxel.

    ``width`` (Å, default ``spec.sigma``) is the Gaussians' standard deviation; each column
    integrates to one electron whatever the width, so amplitudes stay electrons.
    """
    width = spec.sigma if width is None else width
    centres = (np.arange(spec.bins) + 0.5) * spec.voxel
    # (n, bins) factors per axis; the Gaussian factorises over x, y, z.
    f = np.exp(-((centres[None, None, :] - positions[:, :, None]) ** 2) / (2 * width**2))
    norm = spec.norm * (spec.sigma / width) ** 3
    cols = norm * np.einsum("ni,nj,nk->ijkn", f[:, 0], f[:, 1], f[:, 2])
    return cols.reshape(-1, len(positions))


@functools.cache
def _noise_gains(smooth: float) -> tuple[float, float]:
    """Standard deviation of white noise of unit standard deviation after (grid - 1-voxel
    smoothing) and after the ``smooth``-voxel smoothing."""
    impulse = np.zeros((25, 25, 25))
    impulse[12, 12, 12] = 1.0
    detail = impulse - ndimage.gaussian_filter(impulse, 1.0, mode="constant")
    smoothed = ndimage.gaussian_filter(impulse, smooth, mode="constant") if smooth else impulse
    return float(np.sqrt((detail**2).sum())), float(np.sqrt((smoothed**2).sum()))


def noise_level(grid: np.ndarray) -> float:
    """A robust estimate of a grid's white-noise standard deviation (the grid's units).

    Eq. (1) densities vary over ~3 voxels, so what differs from a 1-voxel smoothing is mostly
    noise; the median absolute deviation keeps the atoms' own detail out of the estimate.
    """
    grid = np.asarray(grid, dtype=np.float64)
    detail = grid - ndimage.gaussian_filter(grid, 1.0, mode="constant")
    mad = float(np.median(np.abs(detail - np.median(detail))))
    return 1.4826 * mad / _noise_gains(0.0)[0]


def clipped_noise_level(grid: np.ndarray, *, min_zeros: float = 0.05) -> float:
    """The standard deviation of white noise that was added to a grid and then clipped at zero
    (the grid's units), or 0 for a grid that was not clipped.

    A grid is taken as clipped when at least ``min_zeros`` of its voxels are exactly 0 (an
    Eq. (1) density is positive everywhere). Where the density is ~0, clipped noise is 0
    half of the time and half-normal otherwise, so its squares average ``sigma^2 / 2``: the
    zero voxels and their neighbours are such a region.
    """
    values = np.asarray(grid, dtype=np.float64)
    zero = values == 0
    if np.count_nonzero(zero) < min_zeros * values.size:
        return 0.0
    region = ndimage.binary_dilation(zero)
    return float(np.sqrt(2 * np.mean(values[region] ** 2)))


def _clipped_mean(x: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``E[max(x + n, 0)]`` for ``n ~ N(0, sigma^2)``, and its derivative in ``x``
    (``x`` and the derivative unchanged for ``sigma`` 0)."""
    if sigma <= 0:
        return x, np.ones_like(x)
    t = x / sigma
    cdf = special.ndtr(t)
    return x * cdf + sigma * np.exp(-0.5 * t**2) / np.sqrt(2 * np.pi), cdf


def fit_amplitudes(
    density: np.ndarray,
    positions: np.ndarray,
    spec: GridSpec,
    *,
    fit_width: bool = False,
    border: int = 0,
    offset: float = 0.0,
) -> np.ndarray:
    """Atomic numbers of atoms at known positions, from the amplitudes of Eq. (1).

    With the positions fixed, a density grid is linear in the atoms' amplitudes: the
    non-negative least-squares fit of one Gaussian per position gives each atom's electrons
    (:func:`fitted_electrons`), plus ``offset``, rounded to the nearest atomic number. This
    lets a segmenter that places atoms well take their species from the density it segmented
    (amplitudes are what a density carries Z in).

    Args:
        density: ``(bins, bins, bins)`` Å^-3.
        positions: ``(n, 3)`` box Å.
        spec: the grid geometry.
        fit_width: see :func:`fitted_electrons`.
        border: voxels this close to a face are left out of the fit.
        offset: electrons added to every fitted amplitude before rounding: a model's
            reconstructions hold fewer electrons than the atoms they decode (a calibration
            tuned on a validation split, :func:`~crystalgrid.models.scoring.threshold.
            tune_threshold`); 0 for a true density.

    Returns:
        ``(n,)`` uint8 atomic numbers in ``[1, 118]``.
    """
    electrons = fitted_electrons(density, positions, spec, fit_width=fit_width, border=border)
    return atomic_numbers(electrons + offset)


def fitted_electrons(
    density: np.ndarray,
    positions: np.ndarray,
    spec: GridSpec,
    *,
    fit_width: bool = False,
    border: int = 0,
) -> np.ndarray:
    """The electrons of atoms at known positions: the non-negative least-squares amplitudes
    of one Eq. (1) Gaussian per position.

    Args:
        density: ``(bins, bins, bins)`` Å^-3.
        positions: ``(n, 3)`` box Å.
        spec: the grid geometry.
        fit_width: choose the one Gaussian width (in ``[0.8, 2] sigma``) that fits the grid
            best, so that a blurred grid's electrons are integrated rather than read off its
            lowered peaks. Off by default: where the positions are a segmenter's, misplaced
            atoms widen the fitted width (on the shipped single-cell model's reconstructions
            it lowered the exact species from 8.9% to 5.6% of 150 test samples).
        border: voxels this close to a face are left out of the fit.

    Returns:
        ``(n,)`` float64 electrons.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(positions) == 0:
        return np.zeros(0)
    grid = np.asarray(density, dtype=np.float64)
    if grid.shape != spec.shape:
        raise ValueError(f"grid shape {grid.shape} does not match the spec's {spec.shape}")
    rows = _interior(spec.bins, border)
    target = grid.ravel()[rows]

    def fit(width: float) -> tuple[np.ndarray, float]:
        return optimize.nnls(_design(positions, spec, width)[rows], target)

    width = spec.sigma
    if fit_width:
        low, high = _WIDTH_RANGE[0] * spec.sigma, _WIDTH_RANGE[1] * spec.sigma
        best = optimize.minimize_scalar(
            lambda w: fit(w)[1], bounds=(low, high), method="bounded", options={"xatol": 1e-3}
        )
        width = float(best.x)
    return np.asarray(fit(width)[0], dtype=np.float64)


def fit_atoms(
    density: np.ndarray,
    spec: GridSpec,
    *,
    threshold: float = 0.5,
    min_z: float = 0.5,
    rounds: int = 2,
    refine: bool = True,
    max_atoms: int = 400,
    smooth: float = 1.0,
    fit_width: bool = True,
    border: int = 1,
    clipped: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Atoms recovered from one density grid by peaks and a least-squares fit (module doc).

    Args:
        density: ``(bins, bins, bins)`` Å^-3 (a true grid or a reconstruction).
        spec: the grid geometry (voxel, sigma).
        threshold: smallest peak, in electrons at an atom's centre (``density / spec.norm``).
        min_z: candidates with a smaller fitted amplitude (electrons) are dropped.
        rounds: residual rounds after the first fit.
        refine: fit positions and amplitudes together after each round (slower; needed
            for atoms whose peaks overlap). Skipped for more than :data:`REFINE_MAX_ATOMS`
            candidates, where its cost grows as their square.
        max_atoms: the most candidates kept (the highest peaks), so that a noisy
            reconstruction cannot make the fit explode.
        smooth: Gaussian smoothing (voxels) of the grid in which peaks are searched; 0: none.
        fit_width: fit one Gaussian width shared by all atoms with the positions (in
            ``[0.8, 2] sigma``), for grids blurred as a whole, as reconstructions are;
            amplitudes stay integrated electrons. Needs ``refine``.
        border: voxels this close to a face are left out of the fits (still searched for
            peaks): a smoothed grid is least faithful at its faces, where its filter had
            to guess what lies beyond.
        clipped: for a grid whose noise was clipped at zero (:func:`clipped_noise_level`
            finds it; any non-negative output is such a grid), fit the expected clipped
            density ``E[max(model + noise, 0)]`` instead of the model itself, so that the
            noise's positive mean where the density is low does not become extra atoms.

    Returns:
        ``(positions (n, 3) float64 box Å, numbers (n,) uint8)``.

    Raises:
        ValueError: for a grid whose shape is not the spec's, or that is not finite.
    """
    grid = np.asarray(density, dtype=np.float64)
    if grid.shape != spec.shape:
        raise ValueError(f"grid shape {grid.shape} does not match the spec's {spec.shape}")
    if not np.all(np.isfinite(grid)):
        raise ValueError("the density grid holds NaN or infinite values")
    target = grid.ravel()
    rows = _interior(spec.bins, border)
    clip_sigma = clipped_noise_level(grid) if clipped else 0.0
    noise = max(noise_level(grid), clip_sigma)
    floor = max(threshold, _SIGNIFICANCE * noise * _noise_gains(smooth)[1] / spec.norm)
    # An amplitude fitted to noise alone has this standard deviation (electrons): the noise
    # over the root of the summed squares of one electron's Gaussian on the grid.
    amp_noise = noise / np.sqrt(spec.norm**2 * np.pi**1.5 * spec.sigma**3 / spec.voxel**3)
    keep = max(min_z, _SIGNIFICANCE * amp_noise)

    def peaks_of(values: np.ndarray, limit: int) -> np.ndarray:
        smoothed = ndimage.gaussian_filter(values, smooth, mode="constant") if smooth else values
        return _peaks(smoothed / spec.norm, spec, floor, limit)

    positions = peaks_of(grid, max_atoms)
    amplitudes = np.zeros(0)
    width = spec.sigma
    for round_ in range(rounds + 1):
        if len(positions) == 0:
            break
        amplitudes, _ = optimize.nnls(_design(positions, spec, width)[rows], target[rows])
        if refine and len(positions) <= REFINE_MAX_ATOMS:
            positions, amplitudes, width = _refine(
                positions, amplitudes, target, rows, spec, width, fit_width, clip_sigma
            )
        positions, amplitudes = _merge(positions, amplitudes, keep, spec.sigma)
        if round_ == rounds or len(positions) == 0:
            break
        fitted, _ = _clipped_mean(_design(positions, spec, width) @ amplitudes, clip_sigma)
        extra = peaks_of((target - fitted).reshape(spec.shape), max_atoms - len(positions))
        if len(extra) == 0:
            break
        positions = np.concatenate([positions, extra])
        amplitudes = np.concatenate([amplitudes, np.zeros(len(extra))])
    inside = np.all((positions >= 0) & (positions < spec.side), axis=1)
    return positions[inside], atomic_numbers(amplitudes[inside])


@functools.cache
def _interior(bins: int, border: int) -> np.ndarray:
    """Flat indices of the voxels of a ``bins^3`` grid at least ``border`` voxels from a face."""
    inner = np.arange(border, bins - border)
    i, j, k = np.meshgrid(inner, inner, inner, indexing="ij")
    return np.ravel_multi_index((i.ravel(), j.ravel(), k.ravel()), (bins, bins, bins))


def atomic_numbers(electrons: np.ndarray) -> np.ndarray:
    """Fitted amplitudes (electrons) -> atomic numbers, ``uint8`` in ``[1, 118]``."""
    return np.clip(np.rint(electrons), 1, 118).astype(np.uint8)


def _refine(
    positions: np.ndarray,
    amplitudes: np.ndarray,
    target: np.ndarray,
    rows: np.ndarray,
    spec: GridSpec,
    width: float,
    fit_width: bool,
    clip_sigma: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares fit of positions, amplitudes and (``fit_width``) the one Gaussian width
    all atoms share, together (a few Levenberg-Marquardt steps), over the voxels ``rows``
    (flat indices) of the grid ``target`` (flat); with ``clip_sigma`` the model is the
    expected density of noise of that level clipped at zero (:func:`_clipped_mean`).

    Returns ``(positions (n, 3) Å, amplitudes (n,) electrons, width Å)``.
    """
    centres = (np.arange(spec.bins) + 0.5) * spec.voxel
    n = len(positions)
    low, high = _WIDTH_RANGE[0] * spec.sigma, _WIDTH_RANGE[1] * spec.sigma

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        return theta[: 3 * n].reshape(n, 3), theta[3 * n : 4 * n], float(theta[4 * n])

    def model(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos, _, w = unpack(theta)
        delta = centres[None, None, :] - pos[:, :, None]  # (n, 3, bins)
        f = np.exp(-(delta**2) / (2 * w**2))
        norm = spec.norm * (spec.sigma / w) ** 3
        g = norm * np.einsum("ni,nj,nk->ijkn", f[:, 0], f[:, 1], f[:, 2]).reshape(-1, n)
        return g, delta

    def residual(theta: np.ndarray) -> np.ndarray:
        g, _ = model(theta)
        expected, _ = _clipped_mean(g @ unpack(theta)[1], clip_sigma)
        return (expected - target)[rows]

    def jacobian(theta: np.ndarray) -> np.ndarray:
        g, delta = model(theta)
        _, amp, w = unpack(theta)
        b = spec.bins
        cols = 4 * n + (1 if fit_width else 0)
        jac = np.empty((b**3, cols))
        r2 = np.zeros((b, b, b, n))
        for axis in range(3):
            shape = [1, 1, 1, n]
            shape[axis] = b
            d = delta[:, axis, :].T.reshape(shape)
            jac[:, axis : 3 * n : 3] = (g.reshape(b, b, b, n) * d / w**2).reshape(-1, n) * amp
            r2 = r2 + d**2
        jac[:, 3 * n : 4 * n] = g
        if fit_width:  # d g / d w = g (r^2 / w^3 - 3 / w), summed over the atoms
            jac[:, 4 * n] = (g * (r2.reshape(-1, n) / w**3 - 3 / w)) @ amp
        if clip_sigma > 0:  # the chain rule through the clipped mean
            jac *= _clipped_mean(g @ amp, clip_sigma)[1][:, None]
        return jac[rows]

    # Levenberg-Marquardt on the normal equations (4n + 1 unknowns, bins^3 residuals).
    theta = np.concatenate([positions.ravel(), amplitudes, [width]])
    free = 4 * n + (1 if fit_width else 0)
    res = residual(theta)
    cost = res @ res
    damping = 1e-3
    for _ in range(_REFINE_STEPS):
        jac = jacobian(theta)
        jtj = jac.T @ jac
        grad = jac.T @ res
        while True:
            try:
                step = np.linalg.solve(jtj + damping * np.diag(np.diag(jtj) + _TINY), -grad)
            except np.linalg.LinAlgError:
                step = np.zeros(free)
            trial = theta.copy()
            trial[:free] += step
            # Candidates stay near the box, amplitudes non-negative, the width in its range.
            trial[: 3 * n] = np.clip(trial[: 3 * n], -spec.side / 2, 1.5 * spec.side)
            trial[3 * n : 4 * n] = np.maximum(trial[3 * n : 4 * n], 0.0)
            trial[4 * n] = np.clip(trial[4 * n], low, high)
            res_trial = residual(trial)
            cost_trial = res_trial @ res_trial
            if (np.isfinite(cost_trial) and cost_trial < cost) or damping > 1e6:
                break
            damping *= 10
        if not (np.isfinite(cost_trial) and cost_trial < cost):
            break
        converged = cost - cost_trial < 1e-8 * cost
        theta, res, cost = trial, res_trial, cost_trial
        damping = max(damping / 10, 1e-7)
        if converged:
            break
    return unpack(theta)


def _merge(
    positions: np.ndarray, amplitudes: np.ndarray, min_z: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Drop candidates below ``min_z``; merge candidates that converged onto one atom, and
    satellites (a small share of a close neighbour's electrons) into that neighbour."""
    keep = amplitudes >= min_z
    positions, amplitudes = positions[keep], amplitudes[keep]
    order = np.argsort(-amplitudes, kind="stable")
    kept: list[int] = []
    for i in order:
        close = [
            k
            for k in kept
            if (d := np.linalg.norm(positions[k] - positions[i])) < _MERGE
            or (d < _SATELLITE_RADIUS * sigma and amplitudes[i] < _SATELLITE_RATIO * amplitudes[k])
        ]
        if close:
            amplitudes[close[0]] += amplitudes[i]
        else:
            kept.append(int(i))
    kept.sort()
    return positions[kept], amplitudes[kept]
