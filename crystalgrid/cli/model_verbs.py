"""CLI verbs (registered on ``crystalgrid.cli.main``): ``train``, ``evaluate`` and
``tune-threshold``; and over the latent space (docs/latent.md): ``sample``, ``interpolate``,
``realism``, ``match``, ``show``.

torch and the model code are imported inside the verbs, so ``crystalgrid --help`` stays fast
and works without the ``models`` extra; a verb run without torch says how to install it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from crystalgrid.cli.app import main, user_errors
from crystalgrid.errors import CrystalgridError, NotFoundError

#: The decoders that read the U-Net (``crystalgrid.models.scoring.evaluate.UNET_DECODERS``,
#: named here so that the command line imports no torch; a test keeps the two equal).
UNET_DECODERS = ("unet-peaks", "unet-components", "unet-amplitudes", "unet-cell")

_INSTALL_HINT = "the reference models need torch: pip install 'crystalgrid[models]'"


#: What ``--precision`` means for every verb that runs a network.
_PRECISION_HELP = (
    "auto: bf16 autocast where the processor runs bf16 natively (a GPU, a CPU with "
    "AVX512-BF16 or AMX), fp32 elsewhere."
)


def precision_option(default: str | None = "auto", text: str = _PRECISION_HELP) -> Any:
    """The ``--precision`` option (auto, fp32, bf16) of a verb that runs a network."""
    return click.option(
        "--precision",
        type=click.Choice(["auto", "fp32", "bf16"]),
        default=default,
        show_default=default is not None,
        help=text,
    )


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CrystalgridError(_INSTALL_HINT) from None


def _open_store(location: str) -> Any:
    """The store at a local path or a URL (``s3://...``), opened."""
    from crystalgrid.dataset import open_dataset
    from crystalgrid.remote import is_url

    if not is_url(location) and not Path(location).exists():
        raise NotFoundError(f"dataset store not found: {location}")
    return open_dataset(location)


def _split(dataset: Any, name: str) -> Any:
    try:
        return dataset.split(name)
    except (KeyError, ValueError) as exc:
        raise CrystalgridError(f"the store has no split {name!r}: {exc}") from None


@main.command("train")
@click.option(
    "--data",
    "data",
    required=True,
    metavar="PATH|URL",
    help="Dataset store built by `crystalgrid build` (a folder or an s3:// URL).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="JSON training configuration (e.g. models/vae-unet-single.json).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for log.jsonl, last.pt, best.pt.",
)
@click.option("--epochs", type=int, help="Passes over the training split.")
@click.option("--max-steps", type=int, help="Stop after this many optimiser steps in total.")
@click.option("--batch-size", type=int, help="Samples per step (paper: 24).")
@click.option("--lr", type=float, help="Adam learning rate (paper: 1e-5).")
@click.option("--beta", type=float, help="KL weight.")
@click.option("--gamma", type=float, help="Cross-entropy weight (paper: 0.1).")
@click.option("--seed", type=int, help="Seed of the weights and the shuffle.")
@click.option(
    "--conditional/--no-conditional",
    default=None,
    help="Conditional VAE on the largest density (appendix G.1); `sample --condition Z`.",
)
@click.option("--device", help="auto (default), cpu, cuda, cuda:N.")
@precision_option(None, _PRECISION_HELP + " Default: the configuration's (auto).")
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the step.")
@click.option("--train-split", default="train", show_default=True)
@click.option(
    "--val-split", default="val", show_default=True, help="Validation split; 'none' to skip."
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    help="Continue from this checkpoint (its config unless --config is given).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def train_cmd(
    data: str,
    config_path: Path | None,
    out_dir: Path,
    epochs: int | None,
    max_steps: int | None,
    batch_size: int | None,
    lr: float | None,
    beta: float | None,
    gamma: float | None,
    seed: int | None,
    conditional: bool | None,
    device: str | None,
    precision: str | None,
    compile_: bool | None,
    train_split: str,
    val_split: str,
    resume: Path | None,
    quiet: bool,
) -> None:
    """Train the paper's VAE + attention U-Net on a dataset store."""
    _require_torch()
    from crystalgrid.models.checkpoint import checkpoint_config
    from crystalgrid.models.config import TrainConfig
    from crystalgrid.models.training.loop import train

    if resume is not None and config_path is None:
        config = checkpoint_config(resume)
    elif config_path is not None:
        config = TrainConfig.from_file(config_path)
    else:
        config = TrainConfig()
    config = config.with_overrides(
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        beta=beta,
        gamma=gamma,
        seed=seed,
        conditional=conditional,
        device=device,
        precision=precision,
        compile=compile_,
    )
    dataset = _open_store(data)
    view_train = _split(dataset, train_split)
    view_val = None if val_split.lower() == "none" else _split(dataset, val_split)
    metadata = {
        "data": str(data),
        "representation": getattr(dataset, "representation", None),
        "train_split": train_split,
        "val_split": None if view_val is None else val_split,
        "config_file": str(config_path) if config_path else None,
    }
    last = train(
        config,
        view_train,
        view_val,
        out_dir=out_dir,
        resume=resume,
        quiet=quiet,
        spec=dataset.spec,
        metadata=metadata,
    )
    click.echo(f"last checkpoint: {last}")


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
        _require_torch()
        from crystalgrid.models.checkpoint import resolve_checkpoint

        checkpoint = resolve_checkpoint(checkpoint)
    if predictions is not None and not predictions.is_file():
        raise NotFoundError(f"predictions file not found: {predictions}")
    ckpt = None
    if checkpoint is not None:
        _require_torch()
        from crystalgrid.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
    dataset = _open_store(data)
    view = _split(dataset, split)
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
        to_json,
        to_markdown,
    )

    result["data"] = {
        "path": str(data),
        "split": split,
        "representation": getattr(dataset, "representation", None),
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(to_json(result) + "\n")
    if markdown:
        title = f"{title_of} on {data} ({split})"
        crops = getattr(dataset, "representation", None) == "repeated"
        paper = PAPER_REPEATED if crops else PAPER_SINGLE
        click.echo(to_markdown(result, title=title, reference=paper), nl=False)
    elif out is None:
        click.echo(to_json(result))
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
    ckpt = _load(checkpoint)
    if write:  # refuse a shipped model before the work, not after
        from crystalgrid.models.checkpoint import writable_checkpoint

        writable_checkpoint(checkpoint)
    from crystalgrid.models.scoring.threshold import (
        record_tuning,
        split_element_counts,
        tune_threshold,
        tuning_table,
    )

    dataset = _open_store(data)
    prior = split_element_counts(dataset.split("train")) if "train" in dataset.splits else None
    tuning = tune_threshold(
        ckpt,
        _split(dataset, split),
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
        _write_json(out, tuning)
    for line in tuning_table(tuning):
        click.echo(line)
    if write:
        record_tuning(checkpoint, tuning)
        click.echo(f"threshold {tuning['threshold']:g} recorded in {checkpoint}")
    else:
        click.echo(f"best threshold: {tuning['threshold']:g} (--write records it)")


# ---- latent space: sample, interpolate, realism, match, show ----------------------


def _load(checkpoint: Path) -> Any:
    """A checkpoint file or shipped model name, loaded."""
    _require_torch()
    from crystalgrid.models.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)


def _write_json(path: Path, data: Any) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


@main.command("fit-prior")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", "data", required=True, metavar="PATH|URL", help="The model's store.")
@click.option("--split", default="train", show_default=True, help="The split to fit on.")
@click.option(
    "--val-split", default="val", show_default=True, help="Reported on, not fitted ('' for none)."
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    help="The prior file; default NAME.prior.pt beside the checkpoint NAME.pt, where loading "
    "the model finds it.",
)
@click.option("--steps", type=int, default=2000, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def fit_prior_cmd(
    checkpoint: Path,
    data: str,
    split: str,
    val_split: str,
    out: Path | None,
    steps: int,
    batch_size: int,
    seed: int,
    quiet: bool,
) -> None:
    """Fit a learned prior to CHECKPOINT's latent grid on a store's training split.

    Random draws (`crystalgrid sample`, the Python model's sample()) then come from where
    the encoder puts real crystals instead of N(0, 1). Minutes on 2 CPU cores.
    """
    ckpt = _load(checkpoint)
    from tqdm.auto import tqdm

    from crystalgrid.models.checkpoint import SHIPPED
    from crystalgrid.models.latent.prior import fit_prior, prior_path, save_prior

    if out is None:
        if str(checkpoint) in SHIPPED:
            raise CrystalgridError("a shipped model's folder is not written to: give --out")
        out = prior_path(ckpt.path)
    if steps < 1:
        raise CrystalgridError(f"--steps must be >= 1, got {steps}")
    dataset = _open_store(data)
    bar = tqdm(total=steps, desc="fit prior", disable=quiet, leave=False)

    def progress(step: int, loss: float) -> None:
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(nll=f"{loss:.1f}")

    fit = fit_prior(
        ckpt,
        _split(dataset, split),
        _split(dataset, val_split) if val_split else None,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    bar.close()
    fit.record["data"] = {"path": str(data), "split": split, "val_split": val_split or None}
    save_prior(fit, out)
    record = fit.record
    val = f", validation {record['val_nll']:.1f}" if "val_nll" in record else ""
    click.echo(
        f"prior fitted in {record['seconds']:.0f} s: {record['train_nll']:.1f} nats a sample on "
        f"the training split{val}; written to {out}"
    )


@main.command("sample")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-n", "n", type=int, default=16, show_default=True, help="Latent draws.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data",
    metavar="PATH|URL",
    help="Store whose real crystals the spacing is compared with.",
)
@click.option("--split", default="train", show_default=True, help="Split of --data for reals.")
@click.option(
    "--real-limit", type=int, default=2000, show_default=True, help="Real samples to read."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws.")
@click.option(
    "--condition",
    "conditions",
    type=int,
    multiple=True,
    help="Conditional models: the largest atomic number to generate; repeat for several "
    "(n draws each, the same z for every value).",
)
@click.option(
    "--within", type=int, default=2, show_default=True, help="Tolerance of the condition check."
)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@precision_option()
@click.option(
    "--prior",
    type=click.Choice(["auto", "learned", "normal"]),
    default="auto",
    show_default=True,
    help="Draw z from the model's learned prior (`crystalgrid fit-prior`), the paper's "
    "N(0, 1), or the learned one where the model has one.",
)
@click.option(
    "--temperature",
    type=float,
    default=1.0,
    show_default=True,
    help="Scales the learned prior's widths.",
)
@click.option(
    "--decoder",
    type=click.Choice(UNET_DECODERS),
    default="unet-components",
    show_default=True,
    help="How a draw becomes atoms (as in `crystalgrid evaluate`; unet-cell reads each "
    "draw's species together).",
)
@click.option(
    "--novelty",
    is_flag=True,
    help="Also report the draws' uniqueness and novelty (StructureMatcher against the "
    "training split of --data, the box as the lattice).",
)
@click.option("--grids/--no-grids", default=True, show_default=True, help="Write grids.npz.")
@click.option("--cif/--no-cif", "cifs", default=True, show_default=True, help="One CIF each.")
@user_errors
def sample_cmd(
    checkpoint: Path,
    n: int,
    out: Path,
    data: str | None,
    split: str,
    real_limit: int,
    seed: int,
    conditions: tuple[int, ...],
    within: int,
    batch_size: int,
    device: str,
    precision: str,
    prior: str,
    temperature: float,
    decoder: str,
    novelty: bool,
    grids: bool,
    cifs: bool,
) -> None:
    """Decode N random latent vectors into grids, atoms and CIFs.

    z comes from the model's learned prior where it has one (saved beside its weights by
    `crystalgrid fit-prior`), else from the paper's N(0, 1); --prior chooses.

    Writes grids.npz, atoms.json, cif/, report.json (nearest-neighbour spacing of the samples
    and, with --data, of the real crystals; CDVAE structural validity; with --condition, how
    the generated largest atomic number follows the requested one) and spacing.png.
    """
    ckpt = _load(checkpoint)
    from crystalgrid.models.latent.draws import random_draws, write_samples
    from crystalgrid.models.plots import spacing_plot
    from crystalgrid.models.scoring.generated import (
        atom_counts,
        charge_balance,
        conditional_check,
        real_atoms,
        spacing_distribution,
        structural_validity,
        uniqueness_and_novelty,
    )

    samples = random_draws(
        ckpt,
        n,
        seed=seed,
        condition_z=conditions or None,
        batch_size=batch_size,
        device=device,
        precision=precision,
        prior=prior,
        temperature=temperature,
        decoder=decoder,
    )
    extra = {
        "checkpoint": str(checkpoint),
        "sha256": ckpt.sha256,
        "seed": seed,
        "n_draws": n,
        "prior": samples.prior,
        "temperature": temperature if samples.prior == "learned" else None,
        "decoder": decoder,
    }
    write_samples(samples, out, ckpt.spec, grids=grids, cifs=cifs, extra=extra)
    validity = structural_validity(samples.positions)
    report: dict[str, Any] = {
        **extra,
        "n_samples": len(samples),
        "spacing": {"samples": spacing_distribution(samples.positions), "real": None},
        "validity": {"samples": _summary(validity), "real": None},
        "atoms_per_sample": {"samples": atom_counts(samples.positions), "real": None},
        "charge_balance": {"samples": charge_balance(samples.numbers), "real": None},
    }
    real_validity = None
    if data is not None:
        dataset = _open_store(data)
        real, real_numbers = real_atoms(_split(dataset, split), limit=real_limit)
        real_validity = structural_validity(real)
        report["spacing"]["real"] = spacing_distribution(real)
        report["validity"]["real"] = _summary(real_validity)
        report["atoms_per_sample"]["real"] = atom_counts(real)
        report["charge_balance"]["real"] = charge_balance(real_numbers)
        report["real"] = {"data": str(data), "split": split, "samples": len(real)}
        if novelty:
            training = real_atoms(_split(dataset, "train"), limit=None)
            report["uniqueness_novelty"] = uniqueness_and_novelty(
                samples.positions, samples.numbers, training, side=ckpt.spec.side
            )
    elif novelty:
        raise CrystalgridError("--novelty compares with a store's training split: give --data")
    if samples.condition_z is not None:
        max_density = samples.density.reshape(len(samples), -1).max(axis=1)
        report["conditional"] = conditional_check(
            samples.condition_z.tolist(),
            samples.numbers,
            within=within,
            requested_c=None if samples.condition is None else samples.condition.tolist(),
            max_density=max_density * ckpt.config.density_scale,
        )
        calib = ckpt.metadata.get("condition_calibration")
        report["conditional"]["calibration"] = (
            "training split (checkpoint metadata)" if calib else "isolated-atom peak"
        )
    _write_json(out / "report.json", report)
    spacing_plot(
        report["spacing"]["samples"],
        report["spacing"]["real"],
        out / "spacing.png",
        validity=validity,
        real_validity=real_validity,
    )
    line = f"{len(samples)} samples written to {out}; valid (CDVAE): {_pct(validity['fraction'])}"
    if real_validity is not None:
        line += f" (real crystals: {_pct(real_validity['fraction'])})"
    click.echo(line)
    if "conditional" in report:
        check = report["conditional"]
        r = check["pearson_r"]
        click.echo(
            f"largest Z generated vs requested: exact {_pct(check['fraction_exact'])}, "
            f"within ±{within} {_pct(check['fraction_within'])}, "
            f"r = {'n/a' if r is None else f'{r:.3f}'}"
        )


def _summary(validity: dict[str, Any]) -> dict[str, Any]:
    """Validity without the per-sample lists (those go to atoms.json)."""
    return {k: v for k, v in validity.items() if k not in ("valid", "min_distance")}


@main.command("interpolate")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", "data", required=True, metavar="PATH|URL", help="Dataset store.")
@click.option("--from", "from_", required=True, help="Store sample index or material id.")
@click.option("--to", "to", required=True, help="Store sample index or material id.")
@click.option("--steps", type=int, default=8, show_default=True, help="Points, ends included.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path))
@click.option("--device", default="cpu", show_default=True)
@precision_option()
@user_errors
def interpolate_cmd(
    checkpoint: Path,
    data: str,
    from_: str,
    to: str,
    steps: int,
    out: Path,
    device: str,
    precision: str,
) -> None:
    """Decode a straight line in latent space between two samples' encodings.

    Writes interpolation.npz, atoms.json, cif/ and strip.png (central slices per step).
    """
    ckpt = _load(checkpoint)
    from crystalgrid.models.latent.interpolate import (
        interpolate,
        resolve_sample,
        write_interpolation,
    )

    dataset = _open_store(data)
    a, b = resolve_sample(dataset, from_), resolve_sample(dataset, to)
    whole = dataset.all()
    result = interpolate(ckpt, whole[a], whole[b], steps=steps, device=device, precision=precision)
    extra = {"checkpoint": str(checkpoint), "data": str(data)}
    paths = write_interpolation(result, out, ckpt.spec, extra=extra)
    counts = ", ".join(str(len(x)) for x in result.numbers)
    click.echo(f"{steps} steps from sample {a} to {b}; atoms per step: {counts}")
    click.echo(f"written to {out} (strip: {paths['strip']})")


@main.command("show")
@click.argument("store", metavar="STORE")
@click.argument("index")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="PNG file.")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Also show the reconstruction and a parity plot.",
)
@click.option("--dpi", type=int, default=100, show_default=True)
@user_errors
def show_cmd(store: str, index: str, out: Path, checkpoint: Path | None, dpi: int) -> None:
    """Picture of sample INDEX (store index or material id) of STORE as a PNG.

    Target density slices, species and atoms in 3-D; with --checkpoint the reconstruction
    beside it and a parity plot of predicted vs target voxel density.
    """
    from crystalgrid.models.inference import reconstruct_one
    from crystalgrid.models.latent.interpolate import resolve_sample
    from crystalgrid.models.plots import show_sample

    dataset = _open_store(store)
    sample = dataset.all()[resolve_sample(dataset, index)]
    recon = species = None
    if checkpoint is not None:
        ckpt = _load(checkpoint)
        if ckpt.spec != dataset.spec:
            raise CrystalgridError("the store's grid spec differs from the checkpoint's")
        recon, species = reconstruct_one(ckpt, sample["density"])
    path = show_sample(
        sample, dataset.spec, out, reconstruction=recon, predicted_species=species, dpi=dpi
    )
    click.echo(f"written {path}")


@main.command("realism")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", "data", required=True, metavar="PATH|URL", help="Dataset store.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path))
@click.option("--train-split", default="train", show_default=True)
@click.option("--eval-split", default="test", show_default=True)
@click.option("--steps", type=int, default=2000, show_default=True, help="Training steps.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("-n", "n", type=int, default=256, show_default=True, help="Grids per category.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--scorer",
    type=click.Path(path_type=Path),
    help="Score with this trained scorer instead of training one.",
)
@click.option(
    "--generator",
    "generators",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Also score this checkpoint's random draws and reconstructions (repeatable).",
)
@click.option("--device", default="cpu", show_default=True)
@precision_option()
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def realism_cmd(
    checkpoint: Path,
    data: str,
    out: Path,
    train_split: str,
    eval_split: str,
    steps: int,
    batch_size: int,
    lr: float,
    n: int,
    seed: int,
    scorer: Path | None,
    generators: tuple[Path, ...],
    device: str,
    precision: str,
    quiet: bool,
) -> None:
    """Train (or load) the appendix-G realism scorer on CHECKPOINT, a low-beta autoencoder.

    Writes realism.pt (unless --scorer) and realism.json: mean scores (1 - predicted lambda)
    of real grids, real decoded, random draws, noise and shuffled grids.
    """
    ckpt = _load(checkpoint)
    from crystalgrid.models.latent.realism import (
        load_scorer,
        save_scorer,
        score_report,
        train_realism,
    )

    dataset = _open_store(data)
    if ckpt.spec != dataset.spec:
        raise CrystalgridError("the store's grid spec differs from the checkpoint's")
    if scorer is not None:
        trained = load_scorer(scorer, device="cpu" if device == "auto" else device)
    else:
        trained = train_realism(
            ckpt,
            _split(dataset, train_split),
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            precision=precision,
            quiet=quiet,
        )
        save_scorer(trained, out / "realism.pt")
    others = {
        p.stem if p.stem not in ("last", "best") else p.parent.name: _load(p) for p in generators
    }
    report = score_report(
        trained,
        ckpt,
        _split(dataset, eval_split),
        n=n,
        seed=seed,
        generators=others,
        device=device,
        precision=precision,
    )
    report["data"] = {"path": str(data), "eval_split": eval_split}
    _write_json(out / "realism.json", report)
    for key in ("real", "real_decoded", "random_draws", "noise", "shuffled"):
        s = report[key]
        click.echo(f"{key:>14}: {s['mean']:.3f} ± {s['std']:.3f} (n = {s['n']})")
    click.echo(f"written to {out}")


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
    ckpt = _load(checkpoint)
    from crystalgrid.models.scoring.matching import LATTICE_NOTE, match_checkpoint

    dataset = _open_store(data)
    view = _split(dataset, split)
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
        import json

        click.echo(json.dumps(result, indent=1, allow_nan=False))
        return
    _write_json(out, result)
    rms = result["rms_mean"]
    click.echo(
        f"match rate {_pct(result['match_rate'])} of {result['n_samples']} samples, "
        f"RMS {'n/a' if rms is None else f'{rms:.4f}'}"
        + (
            f"; ceiling (true species grids) {_pct(result['ceiling']['match_rate'])}"
            if "ceiling" in result
            else ""
        )
        + (
            f"; random baseline {_pct(result['random_baseline']['match_rate'])}"
            if "random_baseline" in result
            else ""
        )
    )
    click.echo(f"note: {LATTICE_NOTE}")
    click.echo(f"written to {out}")


# ---- baseline benchmark --------------------------------------------------------------------


@main.command("benchmark")
@click.option(
    "--budget",
    type=click.Choice(["smoke", "overfit-cpu", "1h-cpu", "2h-cpu-repeated", "10m-gpu"]),
    default="smoke",
    show_default=True,
    help="How much work: smoke (<= 2 min on 2 cores), overfit-cpu (proof of learning, "
    "<= 15 min), 1h-cpu (single cells), 2h-cpu-repeated (repeated crops), 10m-gpu "
    "(one H100/H200).",
)
@click.option(
    "--source",
    "source",
    metavar="PATH|URL",
    help="Structures, as for `crystalgrid build --source` (default: the embedded demo set).",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for results.json, results.md, the pictures and the training runs.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Where the stores are built, or reused when they match (default: OUT/stores).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds build and training.")
@click.option(
    "--repr",
    "representation",
    type=click.Choice(["single", "repeated", "both"]),
    help="Run only this representation of the budget (default: the budget's).",
)
@click.option("--steps", type=int, help="Override the budget's training steps (to try it small).")
@click.option(
    "--eval-limit", type=int, help="Score at most N samples of the scored split (the budget's)."
)
@click.option("--crystals", type=int, help="Use only the first N structures of the source.")
@click.option("--device", help="Override the budget's device (auto, cpu, cuda).")
@precision_option(None, "Override the budget's precision. " + _PRECISION_HELP)
@click.option(
    "--licence",
    default=None,
    help="Licence of the source data, when the source does not state it (e.g. CC-BY-4.0).",
)
@click.option("--citation", default=None, help="How to cite the source data.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted benchmark in OUT from each training run's last.pt.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@user_errors
def benchmark_cmd(
    budget: str,
    source: str | None,
    out: Path,
    data_dir: Path | None,
    seed: int,
    representation: str | None,
    steps: int | None,
    eval_limit: int | None,
    crystals: int | None,
    device: str | None,
    precision: str | None,
    licence: str | None,
    citation: str | None,
    resume: bool,
    quiet: bool,
) -> None:
    """Build the stores, train the reference model, score it on the test split, report.

    Writes OUT/results.json, OUT/results.md and the pictures (loss curves, parity,
    atom counts, distance percentiles) beside the paper's numbers and the decoding ceiling.
    """
    _require_torch()
    from crystalgrid.benchmark import run_benchmark

    results = run_benchmark(
        budget,
        out=out,
        source=source,
        data_dir=data_dir,
        seed=seed,
        steps=steps,
        crystals=crystals,
        device=device,
        precision=precision,
        licence=licence,
        citation=citation,
        representations=(
            None
            if representation is None
            else ("single", "repeated")
            if representation == "both"
            else (representation,)
        ),
        eval_limit=eval_limit,
        resume=resume,
        quiet=quiet,
        announce=click.echo,
    )
    for name, rep in results["representations"].items():
        scores = rep["scores"]
        click.echo(
            f"{name}: {rep['train']['steps']} steps; {rep['scored_split']}: "
            f"true atoms within 0.5 Å "
            f"{_pct(scores['true_within_radius'])}, exact counts {_pct(scores['count_exact'])}, "
            f"species exact {_pct(scores['species_exact'])}"
        )
    click.echo(f"written to {out / 'results.md'} in {results['wall_time_s']:.0f} s")
