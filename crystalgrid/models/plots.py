"""Pictures as PNG files: a sample (target density slices, species, atoms in 3-D), target vs
reconstruction with a parity plot (paper Figs. 3E, S6), interpolation strips (Figs. 4B, S9)
and the nearest-neighbour spacing histogram (Fig. 5A).

Every function draws on its own ``matplotlib.figure.Figure`` with an Agg canvas attached
inside the function: nothing touches pyplot's global state or the process's backend, so this
works headless and inside other programs' plotting sessions. Pixel sizes are fixed
(``figsize * dpi``, never cropped), as each function's docstring states.

Conventions: grid axis 0 is x, 1 is y, 2 is z; a slice is drawn with x to the right and y
(or the second named axis) up, in Å of the box. Density slices are central (index
``bins // 2``); the species panel is the projection along z (the largest atomic number in
each column of voxels), so every atom's footprint shows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crystalgrid.spec import GridSpec

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "INTERPOLATION_COLUMN",
    "SHOW_SIZE",
    "SHOW_SIZE_WITH_RECONSTRUCTION",
    "SPACING_SIZE",
    "draws_beside_real",
    "interpolation_strip",
    "show_sample",
    "spacing_plot",
]

#: Pixel size (width, height) of :func:`show_sample` without a reconstruction (dpi 100).
SHOW_SIZE = (1500, 330)
#: ... and with one (two rows and the parity plot).
SHOW_SIZE_WITH_RECONSTRUCTION = (1800, 640)
#: Pixel size of :func:`spacing_plot` (dpi 100).
SPACING_SIZE = (640, 400)
#: Width of one column of :func:`interpolation_strip` and the strip's height, pixels (dpi 100).
INTERPOLATION_COLUMN = (180, 420)

_BACKGROUND = (1.0, 1.0, 1.0, 1.0)


@contextlib.contextmanager
def _figure(size_px: tuple[int, int], dpi: int) -> Iterator[Figure]:
    """A Figure of exactly ``size_px`` pixels at ``dpi`` with an Agg canvas (no pyplot)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    # savefig.bbox "standard": never crop (a user's rcParams may say "tight").
    with matplotlib.rc_context({"savefig.bbox": "standard"}):
        yield fig


def _save(fig: Figure, out: str | Path, dpi: int) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format="png", facecolor="white")
    return out


def _species_colours(zs: Iterable[int]) -> dict[int, tuple[float, float, float, float]]:
    """A fixed colour per atomic number present (tab10/tab20 order by ascending Z)."""
    from matplotlib import colormaps

    zs = sorted({int(z) for z in zs if int(z) > 0})
    cmap = colormaps["tab10" if len(zs) <= 10 else "tab20"]
    return {z: tuple(cmap(i % cmap.N)) for i, z in enumerate(zs)}  # type: ignore[misc]


def _symbol(z: int) -> str:
    from pymatgen.core.periodic_table import Element

    return Element.from_Z(int(z)).symbol if 1 <= int(z) <= 118 else str(z)


def _atoms(n: int) -> str:
    return f"{n} atom" if n == 1 else f"{n} atoms"


def _short(end: dict[str, Any], width: int = 24) -> str:
    name = str(end.get("material_id") or end.get("index"))
    return name if len(name) <= width else name[: width - 1] + "…"


def _slices(density: np.ndarray) -> list[tuple[str, np.ndarray, str, str]]:
    """Central xy, xz and yz slices as (title, 2-D array [horizontal, vertical], h, v)."""
    m = density.shape[0] // 2
    return [
        (f"xy, z = {m}", density[:, :, m], "x", "y"),
        (f"xz, y = {m}", density[:, m, :], "x", "z"),
        (f"yz, x = {m}", density[m, :, :], "y", "z"),
    ]


def _density_image(ax: Axes, arr: np.ndarray, side: float, vmax: float) -> Any:
    """A 2-D density array ``[horizontal, vertical]`` over the box, one colour scale."""
    return ax.imshow(
        np.asarray(arr).T,
        origin="lower",
        extent=(0, side, 0, side),
        cmap="magma",
        vmin=0.0,
        vmax=vmax,
        interpolation="nearest",
    )


def _draw_slice(ax: Axes, arr: np.ndarray, side: float, vmax: float, title: str, h: str, v: str):
    im = _density_image(ax, arr, side, vmax)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"{h} (Å)", fontsize=8)
    ax.set_ylabel(f"{v} (Å)", fontsize=8)
    ax.tick_params(labelsize=7)
    return im


def _draw_species(
    ax: Axes, species: np.ndarray, side: float, colours: dict[int, Any], title: str
) -> None:
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    proj = np.asarray(species).max(axis=2)
    keys = sorted(colours)
    index = np.zeros(proj.shape, dtype=np.int64)
    for i, z in enumerate(keys, start=1):
        index[proj == z] = i
    cmap = ListedColormap([_BACKGROUND, *[colours[z] for z in keys]])
    ax.imshow(
        index.T,
        origin="lower",
        extent=(0, side, 0, side),
        cmap=cmap,
        vmin=-0.5,
        vmax=len(keys) + 0.5,
        interpolation="nearest",
    )
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (Å)", fontsize=8)
    ax.set_ylabel("y (Å)", fontsize=8)
    ax.tick_params(labelsize=7)
    present = [z for z in keys if (proj == z).any()]
    if present:
        ax.legend(
            handles=[Patch(color=colours[z], label=_symbol(z)) for z in present[:8]],
            fontsize=6,
            loc="upper right",
            framealpha=0.7,
        )


def _draw_atoms(
    ax: Any,
    positions: np.ndarray,
    numbers: np.ndarray,
    side: float,
    colours: dict[int, Any],
    title: str,
) -> None:
    p = np.asarray(positions, dtype=float).reshape(-1, 3)
    z = np.asarray(numbers, dtype=int).reshape(-1)
    if len(p):
        ax.scatter(
            p[:, 0],
            p[:, 1],
            p[:, 2],
            c=[colours.get(int(v), (0.3, 0.3, 0.3, 1.0)) for v in z],
            s=12 + 1.2 * z,
            depthshade=True,
            edgecolors="black",
            linewidths=0.3,
        )
    ax.set_xlim(0, side)
    ax.set_ylim(0, side)
    ax.set_zlim(0, side)
    ax.set_title(f"{title} ({_atoms(len(p))})", fontsize=9)
    ax.tick_params(labelsize=6)
    ax.set_xlabel("x", fontsize=7)
    ax.set_ylabel("y", fontsize=7)
    ax.set_zlabel("z", fontsize=7)


def show_sample(
    sample: dict[str, Any],
    spec: GridSpec,
    out: str | Path,
    *,
    reconstruction: np.ndarray | None = None,
    predicted_species: np.ndarray | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """A sample as a PNG: target density slices, species, atoms; optionally its reconstruction.

    Without a reconstruction: one row of 5 panels (density xy, xz, yz central slices; species
    projected along z; the true atoms in 3-D), ``SHOW_SIZE`` pixels (1500 x 330 at dpi 100).
    With one: a second row for the reconstruction (its density slices, the U-Net's species,
    the decoded atoms) and a parity plot of predicted vs target voxel density (Å^-3), with
    the MSE, ``SHOW_SIZE_WITH_RECONSTRUCTION`` pixels (1800 x 640 at dpi 100). Target and
    reconstruction share one colour scale.

    Args:
        sample: a sample dict (``density`` (B, B, B) Å^-3, ``species`` (B, B, B),
            ``atom_positions`` (n, 3) box Å, ``atom_numbers``; ``material_id`` and ``index``
            label it).
        spec: the grid geometry.
        out: the PNG path (parents created).
        reconstruction: ``(B, B, B)`` decoded density, Å^-3.
        predicted_species: ``(B, B, B)`` the U-Net's atomic numbers for the reconstruction.
        title: the figure title (default: material id and index).
        dpi: pixels per inch (the pixel size scales with it).

    Returns:
        ``out``.
    """
    from crystalgrid.models.decoding.segmentation import decode_atoms

    density = np.asarray(sample["density"], dtype=np.float32)
    species = np.asarray(sample["species"])
    positions = np.asarray(sample.get("atom_positions", np.zeros((0, 3))), dtype=float)
    numbers = np.asarray(sample.get("atom_numbers", np.zeros(0)), dtype=int)
    with_recon = reconstruction is not None
    pred_pos = pred_num = None
    if with_recon and predicted_species is not None:
        pred_pos, pred_num = decode_atoms(np.asarray(predicted_species), spec)
    zs = set(np.unique(species).tolist()) | set(numbers.tolist())
    if predicted_species is not None:
        zs |= set(np.unique(predicted_species).tolist())
    colours = _species_colours(zs)
    vmax = float(density.max())
    if with_recon and reconstruction is not None:
        vmax = max(vmax, float(np.max(reconstruction)))
    vmax = vmax if vmax > 0 else 1.0
    scale = dpi / 100
    size = SHOW_SIZE_WITH_RECONSTRUCTION if with_recon else SHOW_SIZE
    size = (round(size[0] * scale), round(size[1] * scale))
    label = title or f"{sample.get('material_id', '')}  (sample {sample.get('index', '?')})"
    rows: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]] = [
        ("target", density, species, positions, numbers)
    ]
    if with_recon:
        rec = np.asarray(reconstruction, dtype=np.float32)
        rows.append(
            (
                "reconstruction",
                rec,
                None if predicted_species is None else np.asarray(predicted_species),
                np.zeros((0, 3)) if pred_pos is None else pred_pos,
                np.zeros(0, dtype=int) if pred_num is None else pred_num,
            )
        )
    with _figure(size, dpi) as fig:
        ncols = 6 if with_recon else 5
        grid = fig.add_gridspec(
            len(rows),
            ncols,
            left=0.04,
            right=0.98,
            bottom=0.14 if not with_recon else 0.08,
            top=0.80 if not with_recon else 0.88,
            wspace=0.45,
            hspace=0.45,
        )
        fig.suptitle(label, fontsize=11)
        for r, (name, dens, spc, pos, num) in enumerate(rows):
            im = None
            for k, (t, arr, h, v) in enumerate(_slices(dens)):
                ax = fig.add_subplot(grid[r, k])
                im = _draw_slice(ax, arr, spec.side, vmax, f"{name}: {t}", h, v)
            if im is not None:
                cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
                cbar.ax.tick_params(labelsize=6)
                cbar.set_label("Å$^{-3}$", fontsize=7)
            ax = fig.add_subplot(grid[r, 3])
            if spc is not None:
                _draw_species(ax, spc, spec.side, colours, f"{name}: species (max along z)")
            else:
                ax.set_axis_off()
            ax3 = fig.add_subplot(grid[r, 4], projection="3d")
            _draw_atoms(ax3, pos, num, spec.side, colours, f"{name}: atoms")
        if with_recon:
            ax = fig.add_subplot(grid[:, 5])
            _parity(ax, density, np.asarray(reconstruction, dtype=np.float32))
        return _save(fig, out, dpi)


def _parity(ax: Axes, target: np.ndarray, pred: np.ndarray) -> None:
    t = target.ravel()
    p = pred.ravel()
    hi = float(max(t.max(), p.max(), 1e-6))
    ax.hexbin(t, p, gridsize=40, bins="log", mincnt=1, cmap="viridis", extent=(0, hi, 0, hi))
    ax.plot([0, hi], [0, hi], color="red", lw=0.8, ls="--")
    mse = float(np.mean((t - p) ** 2))
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("target density (Å$^{-3}$)", fontsize=8)
    ax.set_ylabel("predicted density (Å$^{-3}$)", fontsize=8)
    ax.set_title(f"parity, every voxel\nMSE {mse:.3g} Å$^{{-6}}$", fontsize=9)
    ax.tick_params(labelsize=7)


def interpolation_strip(
    result: Any, out: str | Path, *, spec: GridSpec | None = None, dpi: int = 100
) -> Path:
    """A strip of central xy density slices (top) and species projections (bottom).

    Columns: target A, each interpolation step (``t`` and the number of decoded atoms in the
    title), target B. Size: ``INTERPOLATION_COLUMN[0] * (K + 2)`` x ``INTERPOLATION_COLUMN[1]``
    pixels at dpi 100 (K steps). One colour scale for all density panels.

    Args:
        result: an :class:`~crystalgrid.models.latent.interpolate.Interpolation`.
        out: the PNG path.
        spec: the grid geometry (axes in Å; default the paper's 10 Å box).
    """
    k = len(result.t)
    scale = dpi / 100
    size = (
        round(INTERPOLATION_COLUMN[0] * (k + 2) * scale),
        round(INTERPOLATION_COLUMN[1] * scale),
    )
    side = (spec or GridSpec()).side
    dens = [result.targets[0], *result.density, result.targets[1]]
    spcs = [result.target_species[0], *result.species, result.target_species[1]]
    names = [
        f"A: {_short(result.ends[0])}",
        *[f"t = {t:.2f}\n{_atoms(len(n))}" for t, n in zip(result.t, result.numbers, strict=True)],
        f"B: {_short(result.ends[1])}",
    ]
    vmax = max(float(np.max(d)) for d in dens) or 1.0
    zs: set[int] = set()
    for s in spcs:
        zs |= set(np.unique(s).tolist())
    colours = _species_colours(zs)
    m = result.targets.shape[1] // 2
    with _figure(size, dpi) as fig:
        grid = fig.add_gridspec(2, k + 2, left=0.01, right=0.99, bottom=0.02, top=0.84, wspace=0.08)
        for j, (d, s, name) in enumerate(zip(dens, spcs, names, strict=True)):
            ax = fig.add_subplot(grid[0, j])
            _density_image(ax, np.asarray(d)[:, :, m], side, vmax)
            ax.set_title(name, fontsize=7)
            ax.set_axis_off()
            ax = fig.add_subplot(grid[1, j])
            _draw_species(ax, s, side, colours, "")
            ax.set_axis_off()
            legend = ax.get_legend()
            if legend is not None and j not in (0, k + 1):
                legend.remove()
        fig.suptitle("latent interpolation: density (xy, central) and species (max along z)")
        return _save(fig, out, dpi)


def draws_beside_real(
    draws: np.ndarray,
    real: np.ndarray,
    out: str | Path,
    *,
    spec: GridSpec | None = None,
    counts: tuple[Sequence[int], Sequence[int]] | None = None,
    dpi: int = 100,
) -> Path:
    """Real cells (top row) above random draws (bottom row): each grid's density summed along
    z, one colour scale per row.

    Args:
        draws: ``(k, B, B, B)`` decoded densities of random draws, Å^-3.
        real: ``(k, B, B, B)`` densities of real cells, Å^-3.
        out: the PNG path (``160 k`` x 360 pixels at dpi 100).
        spec: the grid geometry (default the paper's 10 Å box).
        counts: the atoms of each real cell and each draw, shown in the titles.
    """
    k = len(draws)
    if k == 0 or len(real) != k:
        raise ValueError(f"give as many real cells as draws (>= 1), got {len(real)} and {k}")
    side = (spec or GridSpec()).side
    scale = dpi / 100
    with _figure((round(160 * k * scale), round(360 * scale)), dpi) as fig:
        grid = fig.add_gridspec(2, k, left=0.01, right=0.99, bottom=0.02, top=0.86, hspace=0.25)
        for row, (grids, name) in enumerate(((real, "real"), (draws, "draw"))):
            projections = [np.asarray(g, dtype=np.float64).sum(axis=2) for g in grids]
            vmax = max(float(p.max()) for p in projections) or 1.0
            for j, p in enumerate(projections):
                ax = fig.add_subplot(grid[row, j])
                _density_image(ax, p, side, vmax)
                title = f"{name} {j + 1}"
                if counts is not None:
                    title += f": {_atoms(int(counts[row][j]))}"
                ax.set_title(title, fontsize=7)
                ax.set_axis_off()
        fig.suptitle("real cells (top) and random draws (bottom): density summed along z")
        return _save(fig, out, dpi)


def spacing_plot(
    samples: dict[str, Any],
    real: dict[str, Any] | None,
    out: str | Path,
    *,
    validity: dict[str, Any] | None = None,
    real_validity: dict[str, Any] | None = None,
    min_distance: float = 0.5,
    dpi: int = 100,
) -> Path:
    """Nearest-neighbour spacing histograms of the samples and of real crystals (Fig. 5A).

    Args:
        samples, real: :func:`crystalgrid.models.scoring.generated.spacing_distribution` results
            (``real`` may be ``None``); drawn as densities (per Å) so different counts
            compare.
        out: the PNG path; ``SPACING_SIZE`` pixels (640 x 400) at dpi 100.
        validity, real_validity: :func:`~crystalgrid.models.scoring.generated.structural_validity`
            results, for the legend.
        min_distance: where the validity threshold line is drawn, Å.
    """
    scale = dpi / 100
    size = (round(SPACING_SIZE[0] * scale), round(SPACING_SIZE[1] * scale))
    with _figure(size, dpi) as fig:
        ax = fig.add_subplot(1, 1, 1)
        fig.subplots_adjust(left=0.11, right=0.97, bottom=0.13, top=0.9)
        for name, hist, val, colour in (
            ("random draws", samples, validity, "tab:red"),
            ("real crystals", real, real_validity, "tab:blue"),
        ):
            if not hist:
                continue
            if not hist.get("n_spacings"):
                ax.plot(
                    [],
                    [],
                    color=colour,
                    label=f"{name}: no sample with 2+ atoms ({hist.get('n_samples', 0)} samples)",
                )
                continue
            edges = np.asarray(hist["edges"])
            frac = np.asarray(hist["fraction"]) / np.diff(edges)
            label = f"{name} ({hist['n_spacings']} atoms, {hist['n_samples']} samples"
            if val and val.get("fraction") is not None:
                label += f", {100 * val['fraction']:.0f}% valid"
            ax.stairs(frac, edges, label=label + ")", color=colour, lw=1.5)
        ax.axvline(min_distance, color="gray", ls="--", lw=0.8)
        ax.text(min_distance, ax.get_ylim()[1] * 0.95, f" {min_distance} Å", fontsize=7, va="top")
        ax.set_xlabel("distance to the nearest other atom in the box (Å)")
        ax.set_ylabel("density (per Å)")
        ax.set_title("nearest-neighbour spacing")
        ax.legend(fontsize=8)
        return _save(fig, out, dpi)


#: Pixel size of each of :func:`baseline_figures`' pictures (dpi 100).
BASELINE_FIGURE_SIZE = (640, 440)


def baseline_figures(
    prefix: str | Path,
    *,
    log: Sequence[dict[str, Any]],
    count_errors: Sequence[int],
    scores: dict[str, Any],
    paper: dict[str, Any] | None,
    true_density: np.ndarray,
    reconstruction: np.ndarray,
    title: str = "",
    dpi: int = 100,
) -> list[Path]:
    """The four pictures of a benchmark run, written as ``<prefix>-<name>.png``.

    - ``loss``: the training loss terms per logged step (log scale) and, per epoch, the
      validation loss;
    - ``parity``: reconstructed vs true density, every voxel of ``true_density`` ``(B, n, n, n)``;
    - ``counts``: histogram of predicted minus true atom count per scored sample;
    - ``distances``: the percentiles of prediction -> true and true -> prediction distances,
      beside the paper's where it gives them.

    Returns:
        The paths written.
    """
    prefix = Path(prefix)
    paths = []
    steps = [r for r in log if r.get("kind") == "step"]
    epochs = [r for r in log if r.get("kind") in ("epoch", "stop") and r.get("val_loss")]
    with _figure(BASELINE_FIGURE_SIZE, dpi) as fig:
        ax = fig.add_subplot(1, 1, 1)
        x = [r["step"] for r in steps]
        for key, colour in (("loss", "black"), ("mse", "tab:blue"), ("ce", "tab:orange")):
            y = [r.get(key) for r in steps]
            if any(v is not None and v > 0 for v in y):
                ax.plot(x, [v if v and v > 0 else np.nan for v in y], color=colour, label=key)
        if epochs:
            ax.plot(
                [r["step"] for r in epochs],
                [r["val_loss"] for r in epochs],
                "o--",
                color="tab:green",
                label="validation loss",
            )
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{title}: training loss")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        paths.append(_save(fig, prefix.with_name(prefix.name + "-loss.png"), dpi))
    with _figure(BASELINE_FIGURE_SIZE, dpi) as fig:
        _parity(fig.add_subplot(1, 1, 1), np.asarray(true_density), np.asarray(reconstruction))
        paths.append(_save(fig, prefix.with_name(prefix.name + "-parity.png"), dpi))
    with _figure(BASELINE_FIGURE_SIZE, dpi) as fig:
        ax = fig.add_subplot(1, 1, 1)
        errors = np.asarray(count_errors, dtype=int)
        if len(errors):
            lo, hi = min(errors.min(), -3), max(errors.max(), 3)
            ax.hist(errors, bins=np.arange(lo - 0.5, hi + 1.5).tolist(), color="tab:blue")
        ax.axvline(0, color="red", lw=0.8, ls="--")
        ax.set_xlabel("predicted - true atoms per sample")
        ax.set_ylabel("samples")
        exact = scores.get("count_exact")
        note = "" if exact is None else f" (exact: {100 * exact:.1f}%)"
        ax.set_title(f"{title}: atom counts{note}")
        paths.append(_save(fig, prefix.with_name(prefix.name + "-counts.png"), dpi))
    with _figure(BASELINE_FIGURE_SIZE, dpi) as fig:
        ax = fig.add_subplot(1, 1, 1)
        for key, label, style in (
            ("pred_to_true", "prediction → nearest true atom", "-o"),
            ("true_to_pred", "true atom → nearest prediction", "-s"),
        ):
            row = scores.get(key)
            if row:
                ax.plot([int(p) for p in row], list(row.values()), style, label=label)
        if paper and paper.get("pred_to_true"):
            row = paper["pred_to_true"]
            ax.plot([int(p) for p in row], list(row.values()), "k--", label="paper: pred → true")
        ax.set_yscale("log")
        ax.set_xlabel("percentile")
        ax.set_ylabel("distance (Å)")
        ax.set_title(f"{title}: distance percentiles")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no atom predicted", ha="center", transform=ax.transAxes)
        paths.append(_save(fig, prefix.with_name(prefix.name + "-distances.png"), dpi))
    return paths
