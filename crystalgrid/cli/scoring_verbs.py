"""CLI verbs that score a model on a store: ``evaluate`` (the paper's metrics),
``tune-threshold`` (the decoder's settings on validation) and ``match`` (StructureMatcher)."""

from __future__ import annotations

from pathlib import Path

import click

from crystalgrid.cli._common import (
    UNET_DECODERS,
    load_model,
    open_store,
    pct,
    precision_option,
    require_torch,
    split_of,
)
from crystalgrid.cli.app import main, user_errors
from crystalgrid.errors import CrystalgridError, NotFoundError
from crystalgrid.jsonio import results_json, write_results


@main.command("evaluate")
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--data", "data", required=True, metavar="PATH|URL", help="Dataset store.")
@click.option("--split", "split", default="test", show_default=True)
@click.option(
    "--predictions",
    type=click.Path(path_type=Path),
    help="Score another model's output (.npz: index + species/density grids or atoms; "
    "docs/models.md) instead of a CHECKPOINT.",
)
@click.option(
    "--decoder",
    type=click.Choice([*UNET_DECODERS, "peakfit"]),
    default="unet-peaks",
    show_default=True,
    help="Atoms from the reconstruction: peaks of the U-Net's atom log-odds, the paper's "
    "connected components of the U-Net's argmax, the U-Net's peaks with species from the "
    "reconstruction's fitted amplitudes, the U-Net's peaks with each cell's species read "
    "together (amplitudes, U-Net scores, a prior over elements), or the training-free peak fit.",
)
@click.option(
    "--input",
    "source",
    type=click.Choice(["reconstruction", "truth"]),
    default="reconstruction",
    show_default=True,
    help="What the decoder reads: the VAE's reconstruction (the model's score), or the true "
    "density (the U-Net or the peak fit alone, without the VAE's errors).",
)
@click.option(
    "--threshold",
    type=float,
    help="Atom log-odds above which a U-Net peak is an atom. Default: the one tuned on "
    "validation and recorded with the checkpoint (`crystalgrid tune-threshold --write`), else 0.",
)
@click.option("--out", "out", type=click.Path(path_type=Path), help="Write the scores as JSON.")
@click.option("--markdown", is_flag=True, help="Print the scores as markdown tables.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@precision_option()
@click.option("--limit", type=int, help="Score only the first N samples of the split.")
@click.option(
    "--ceiling/--no-ceiling",
    default=True,
    show_default=True,
    help="Also score the true species grids (what a perfect segmentation would reach).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def evaluate_cmd(
    checkpoint: Path | None,
    data: str,
    split: str,
    predictions: Path | None,
    decoder: str,
    source: str,
    threshold: float | None,
    out: Path | None,
    markdown: bool,
    batch_size: int,
    device: str,
    precision: str | None,
    limit: int | None,
    ceiling: bool,
    quiet: bool,
) -> None:
    """Score CHECKPOINT (or --predictions) on a split with the paper's metrics.

    Prints the JSON unless --out or --markdown is given.
    """
    if (checkpoint is None) == (predictions is None):
        raise CrystalgridError("give either a CHECKPOINT or --predictions FILE (one of them)")
    if predictions is not None and (source != "reconstruction" or threshold is not None):
        raise CrystalgridError(
            "--input and --threshold are for a CHECKPOINT; --predictions are scored as given"
        )
    if checkpoint is not None:
        require_torch()
        from crystalgrid.models.checkpoint import resolve_checkpoint

        checkpoint = resolve_checkpoint(checkpoint)
    if predictions is not None and not predictions.is_file():
        raise NotFoundError(f"predictions file not found: {predictions}")
    ckpt = None
    if checkpoint is not None:
        require_torch()
        from crystalgrid.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
    dataset = open_store(data)
    view = split_of(dataset, split)
    if predictions is not None:
        from crystalgrid.models.scoring.predictions import score_predictions

        result = score_predictions(predictions, view, limit=limit, quiet=quiet)
        title_of = str(predictions)
    else:
        from crystalgrid.models.scoring.evaluate import evaluate

        assert ckpt is not None  # a checkpoint was given (checked above)
        result = evaluate(
            ckpt,
            view,
            spec=dataset.spec,
            batch_size=batch_size,
            device=device,
            precision=precision,
            limit=limit,
            ceiling=ceiling,
            decoder=decoder,
            source=source,
            threshold=threshold,
            quiet=quiet,
        )
        title_of = str(checkpoint) + (" on the true densities" if source == "truth" else "")
    from crystalgrid.models.scoring.metrics import (
        PAPER_REPEATED,
        PAPER_SINGLE,
        to_markdown,
    )

    result["data"] = {
        "path": str(data),
        "split": split,
        "representation": getattr(dataset, "representation", None),
    }
    if out is not None:
        write_results(out, result)
    if markdown:
        title = f"{title_of} on {data} ({split})"
        crops = getattr(dataset, "representation", None) == "repeated"
        paper = PAPER_REPEATED if crops else PAPER_SINGLE
        click.echo(to_markdown(result, title=title, reference=paper), nl=False)
    elif out is None:
        click.echo(results_json(result))
    else:
        within = result["true_within_radius"]
        click.echo(
            f"{result['n_samples']} samples scored; true atoms within 0.5 Å: "
            f"{'n/a' if within is None else f'{100 * within:.1f}%'}; written to {out}"
        )


@main.command("tune-threshold")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", "data", required=True, metavar="PATH|URL", help="Dataset store.")
@click.option(
    "--split",
    default="val",
    show_default=True,
    help="The split to tune on: not the one whose scores are reported.",
)
@click.option("--limit", type=int, default=200, show_default=True, help="Its first N samples.")
@click.option(
    "--input",
    "source",
    type=click.Choice(["reconstruction", "truth"]),
    default="reconstruction",
    show_default=True,
    help="What the U-Net reads: the VAE's reconstruction (the model's chain) or the true density.",
)
@click.option(
    "--write",
    is_flag=True,
    help="Record the best threshold in CHECKPOINT (rewritten atomically); `crystalgrid "
    "evaluate` then uses it.",
)
@click.option("--out", type=click.Path(path_type=Path), help="Write the table as JSON.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--device", default="auto", show_default=True)
@precision_option()
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def tune_threshold_cmd(
    checkpoint: Path,
    data: str,
    split: str,
    limit: int,
    source: str,
    write: bool,
    out: Path | None,
    batch_size: int,
    device: str,
    precision: str,
    quiet: bool,
) -> None:
    """Tune the U-Net peak decoder's threshold on a split (best F1 of atoms within 0.5 Å).

    Prints each candidate's recall, precision, F1 and exact counts.
    """
    ckpt = load_model(checkpoint)
    if write:  # refuse a shipped model before the work, not after
        from crystalgrid.models.checkpoint import writable_checkpoint

        writable_checkpoint(checkpoint)
    from crystalgrid.models.scoring.threshold import (
        record_tuning,
        split_element_counts,
        tune_threshold,
        tuning_table,
    )

    dataset = open_store(data)
    prior = split_element_counts(dataset.split("train")) if "train" in dataset.splits else None
    tuning = tune_threshold(
        ckpt,
        split_of(dataset, split),
        element_prior=prior,
        limit=limit,
        batch_size=batch_size,
        device=device,
        precision=precision,
        source=source,
        quiet=quiet,
    )
    tuning["data"] = {"path": str(data), "split": split}
    if out is not None:
        write_results(out, tuning)
    for line in tuning_table(tuning):
        click.echo(line)
    if write:
        record_tuning(checkpoint, tuning)
        click.echo(f"threshold {tuning['threshold']:g} recorded in {checkpoint}")
    else:
        click.echo(f"best threshold: {tuning['threshold']:g} (--write records it)")


@main.command("match")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", "data", required=True, metavar="PATH|URL", help="Dataset store.")
@click.option("--split", default="test", show_default=True)
@click.option("--limit", type=int, help="Score only the first N samples.")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Write the scores as JSON.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@precision_option()
@click.option(
    "--ceiling/--no-ceiling",
    default=True,
    show_default=True,
    help="Also match the true species grids decoded (what a perfect model would reach).",
)
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="Also match random positions with the true species in the true lattice.",
)
@click.option(
    "--decoder",
    type=click.Choice(UNET_DECODERS),
    default="unet-components",
    show_default=True,
    help="How a reconstruction becomes atoms (as in `crystalgrid evaluate`).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def match_cmd(
    checkpoint: Path,
    data: str,
    split: str,
    limit: int | None,
    out: Path | None,
    batch_size: int,
    device: str,
    precision: str,
    ceiling: bool,
    baseline: bool,
    decoder: str,
    quiet: bool,
) -> None:
    """CDVAE's StructureMatcher scores of CHECKPOINT's reconstructions of single cells.

    The LATTICE IS GIVEN: decoded atoms are mapped back with each sample's inverse transform
    into the crystal's true lattice; only the atoms are scored. Prints JSON unless --out.
    """
    ckpt = load_model(checkpoint)
    from crystalgrid.models.scoring.matching import LATTICE_NOTE, match_checkpoint

    dataset = open_store(data)
    view = split_of(dataset, split)
    result = match_checkpoint(
        ckpt,
        view,
        limit=limit,
        batch_size=batch_size,
        device=device,
        precision=precision,
        ceiling=ceiling,
        baseline=baseline,
        decoder=decoder,
        quiet=quiet,
    )
    result["data"] = {"path": str(data), "split": split}
    if out is None:
        click.echo(results_json(result))
        return
    write_results(out, result)
    rms = result["rms_mean"]
    click.echo(
        f"match rate {pct(result['match_rate'])} of {result['n_samples']} samples, "
        f"RMS {'n/a' if rms is None else f'{rms:.4f}'}"
        + (
            f"; ceiling (true species grids) {pct(result['ceiling']['match_rate'])}"
            if "ceiling" in result
            else ""
        )
        + (
            f"; random baseline {pct(result['random_baseline']['match_rate'])}"
            if "random_baseline" in result
            else ""
        )
    )
    click.echo(f"note: {LATTICE_NOTE}")
    click.echo(f"written to {out}")
