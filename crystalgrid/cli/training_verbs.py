"""CLI verb ``crystalgrid train``: the reference model on a dataset store (a thin call of
:func:`crystalgrid.models.training.loop.train`)."""

from __future__ import annotations

from pathlib import Path

import click

from crystalgrid.cli._common import (
    PRECISION_HELP,
    open_store,
    precision_option,
    require_torch,
    split_of,
)
from crystalgrid.cli.app import main, user_errors


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
    help="A JSON training configuration file, or a shipped one by name (vae-unet-single, "
    "baseline-1h-cpu-single, tiny-cpu, ...: crystalgrid/models/configs/).",
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
@precision_option(None, PRECISION_HELP + " Default: the configuration's (auto).")
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
    require_torch()
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
    dataset = open_store(data)
    view_train = split_of(dataset, train_split)
    view_val = None if val_split.lower() == "none" else split_of(dataset, val_split)
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
