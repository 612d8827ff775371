"""CLI verbs over the latent space (docs/latent.md): ``fit-prior``, ``sample``, ``interpolate``,
``realism`` and ``show``."""

from __future__ import annotations

from pathlib import Path

import click

from crystalgrid.cli._common import (
    UNET_DECODERS,
    load_model,
    open_store,
    pct,
    precision_option,
    split_of,
)
from crystalgrid.cli.app import main, user_errors
from crystalgrid.errors import BadInputError, CrystalgridError
from crystalgrid.jsonio import write_results


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
@click.option(
    "--spread",
    type=float,
    default=1.0,
    show_default=True,
    help="The posterior spread fitted, as a share of the encoder's: 1 fits posterior draws, "
    "0 the posterior means.",
)
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
    spread: float,
    quiet: bool,
) -> None:
    """Fit a learned prior to CHECKPOINT's latent grid on a store's training split.

    Random draws (`crystalgrid sample`, the Python model's sample()) then come from where
    the encoder puts real crystals instead of N(0, 1). Minutes on 2 CPU cores.
    """
    ckpt = load_model(checkpoint)
    from tqdm.auto import tqdm

    from crystalgrid.models.checkpoint import SHIPPED
    from crystalgrid.models.latent.prior import fit_prior, prior_path, save_prior

    if out is None:
        if str(checkpoint) in SHIPPED:
            raise CrystalgridError("a shipped model's folder is not written to: give --out")
        out = prior_path(ckpt.path)
    if steps < 1:
        raise CrystalgridError(f"--steps must be >= 1, got {steps}")
    dataset = open_store(data)
    bar = tqdm(total=steps, desc="fit prior", disable=quiet, leave=False)

    def progress(step: int, loss: float) -> None:
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(nll=f"{loss:.1f}")

    fit = fit_prior(
        ckpt,
        split_of(dataset, split),
        split_of(dataset, val_split) if val_split else None,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        spread=spread,
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
    if novelty and data is None:
        raise BadInputError("--novelty compares with a store's training split: give --data")
    ckpt = load_model(checkpoint)
    from crystalgrid.models.latent.draws import draws_report, random_draws, write_samples
    from crystalgrid.models.plots import spacing_plot

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
    about = {
        "checkpoint": str(checkpoint),
        "sha256": ckpt.sha256,
        "seed": seed,
        "n_draws": n,
        "prior": samples.prior,
        "temperature": temperature if samples.prior == "learned" else None,
        "decoder": decoder,
    }
    write_samples(samples, out, ckpt.spec, grids=grids, cifs=cifs, extra=about)
    dataset = open_store(data) if data is not None else None
    report = draws_report(
        samples,
        ckpt,
        real=split_of(dataset, split) if dataset is not None else None,
        real_limit=real_limit,
        training=split_of(dataset, "train") if dataset is not None and novelty else None,
        within=within,
        about=about,
    )
    if dataset is not None:
        report["real"].update(data=str(data), split=split)
    write_results(out / "report.json", report)
    validity, real_validity = report["validity"]["samples"], report["validity"]["real"]
    spacing_plot(
        report["spacing"]["samples"],
        report["spacing"]["real"],
        out / "spacing.png",
        validity=validity,
        real_validity=real_validity,
    )
    line = f"{len(samples)} samples written to {out}; valid (CDVAE): {pct(validity['fraction'])}"
    if real_validity is not None:
        line += f" (real crystals: {pct(real_validity['fraction'])})"
    click.echo(line)
    if "conditional" in report:
        check = report["conditional"]
        r = check["pearson_r"]
        click.echo(
            f"largest Z generated vs requested: exact {pct(check['fraction_exact'])}, "
            f"within ±{within} {pct(check['fraction_within'])}, "
            f"r = {'n/a' if r is None else f'{r:.3f}'}"
        )


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
    ckpt = load_model(checkpoint)
    from crystalgrid.models.latent.interpolate import (
        interpolate,
        resolve_sample,
        write_interpolation,
    )

    dataset = open_store(data)
    a, b = resolve_sample(dataset, from_), resolve_sample(dataset, to)
    whole = dataset.all()
    result = interpolate(ckpt, whole[a], whole[b], steps=steps, device=device, precision=precision)
    extra = {"checkpoint": str(checkpoint), "data": str(data)}
    paths = write_interpolation(result, out, ckpt.spec, extra=extra)
    counts = ", ".join(str(len(x)) for x in result.numbers)
    click.echo(f"{steps} steps from sample {a} to {b}; atoms per step: {counts}")
    click.echo(f"written to {out} (strip: {paths['strip']})")


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
    ckpt = load_model(checkpoint)
    from crystalgrid.models.latent.realism import (
        load_scorer,
        save_scorer,
        score_report,
        train_realism,
    )

    dataset = open_store(data)
    from crystalgrid.models.scoring.evaluate import check_spec

    check_spec(ckpt, None, dataset.spec)
    if scorer is not None:
        trained = load_scorer(scorer, device="cpu" if device == "auto" else device)
    else:
        trained = train_realism(
            ckpt,
            split_of(dataset, train_split),
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
        p.stem if p.stem not in ("last", "best") else p.parent.name: load_model(p)
        for p in generators
    }
    report = score_report(
        trained,
        ckpt,
        split_of(dataset, eval_split),
        n=n,
        seed=seed,
        generators=others,
        device=device,
        precision=precision,
    )
    report["data"] = {"path": str(data), "eval_split": eval_split}
    write_results(out / "realism.json", report)
    for key in ("real", "real_decoded", "random_draws", "noise", "shuffled"):
        s = report[key]
        click.echo(f"{key:>14}: {s['mean']:.3f} ± {s['std']:.3f} (n = {s['n']})")
    click.echo(f"written to {out}")


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

    dataset = open_store(store)
    sample = dataset.all()[resolve_sample(dataset, index)]
    recon = species = None
    if checkpoint is not None:
        ckpt = load_model(checkpoint)
        from crystalgrid.models.scoring.evaluate import check_spec

        check_spec(ckpt, None, dataset.spec)
        recon, species = reconstruct_one(ckpt, sample["density"])
    path = show_sample(
        sample, dataset.spec, out, reconstruction=recon, predicted_species=species, dpi=dpi
    )
    click.echo(f"written {path}")
