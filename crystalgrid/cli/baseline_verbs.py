"""CLI verb ``crystalgrid baseline``: build, train, score and report a reference model in one
budget (a thin call of :func:`crystalgrid.baseline.run_baseline`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from crystalgrid.baseline.budgets import BUDGETS
from crystalgrid.cli._common import (
    PRECISION_HELP,
    pct,
    precision_option,
    require_torch,
)
from crystalgrid.cli.app import main, user_errors


@main.command("baseline")
@click.option(
    "--budget",
    type=click.Choice(list(BUDGETS)),
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
@precision_option(None, "Override the budget's precision. " + PRECISION_HELP)
@click.option(
    "--licence",
    default=None,
    help="Licence of the source data, when the source does not state it (e.g. CC-BY-4.0).",
)
@click.option("--citation", default=None, help="How to cite the source data.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted baseline run in OUT from each training run's last.pt.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@user_errors
def baseline_cmd(
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
    require_torch()
    from crystalgrid.baseline import run_baseline

    results = run_baseline(
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
            f"{pct(scores['true_within_radius'])}, exact counts {pct(scores['count_exact'])}, "
            f"species exact {pct(scores['species_exact'])}"
        )
    click.echo(f"written to {out / 'results.md'} in {results['wall_time_s']:.0f} s")


def _renamed(**kwargs: Any) -> None:
    click.echo(
        "crystalgrid: warning: `crystalgrid benchmark` is now `crystalgrid baseline` "
        "(benchmarks/ and docs/benchmarks.md time the code); running it",
        err=True,
    )
    baseline_cmd.callback(**kwargs)  # type: ignore[misc]


#: The verb's old name, kept so that the commands recorded in older results still run.
main.add_command(
    click.Command(
        "benchmark",
        callback=_renamed,
        params=baseline_cmd.params,
        hidden=True,
        help="Renamed: see `crystalgrid baseline`.",
    )
)
