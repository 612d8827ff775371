"""CLI verbs (registered on ``crystalgrid.cli.main``): ``train`` and ``evaluate``.

torch and the model code are imported inside the verbs, so ``crystalgrid --help`` stays fast
and works without the ``models`` extra; a verb run without torch says how to install it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from crystalgrid.cli import main, user_errors
from crystalgrid.errors import CrystalgridError

_INSTALL_HINT = "the reference models need torch: pip install 'crystalgrid[models]'"


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CrystalgridError(_INSTALL_HINT) from None


def _open_store(path: Path) -> Any:
    if not path.exists():
        raise CrystalgridError(f"dataset store not found: {path}")
    import crystalgrid

    opener = getattr(crystalgrid, "open_dataset", None)
    if opener is None:
        raise CrystalgridError("this crystalgrid has no open_dataset (dataset support missing)")
    return opener(path)


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
    type=click.Path(path_type=Path),
    help="Dataset store built by `crystalgrid build`.",
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
@click.option("--device", help="auto (default), cpu, cuda, cuda:N.")
@click.option(
    "--precision", type=click.Choice(["auto", "fp32", "bf16"]), help="auto: bf16 on CUDA."
)
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
    data: Path,
    config_path: Path | None,
    out_dir: Path,
    epochs: int | None,
    max_steps: int | None,
    batch_size: int | None,
    lr: float | None,
    beta: float | None,
    gamma: float | None,
    seed: int | None,
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
    from crystalgrid.models.config import TrainConfig
    from crystalgrid.models.train import checkpoint_config, train

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
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", "data", required=True, type=click.Path(path_type=Path))
@click.option("--split", "split", default="test", show_default=True)
@click.option("--out", "out", type=click.Path(path_type=Path), help="Write the scores as JSON.")
@click.option("--markdown", is_flag=True, help="Print the scores as markdown tables.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), help="Default: the run's.")
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
    checkpoint: Path,
    data: Path,
    split: str,
    out: Path | None,
    markdown: bool,
    batch_size: int,
    device: str,
    precision: str | None,
    limit: int | None,
    ceiling: bool,
    quiet: bool,
) -> None:
    """Score CHECKPOINT on a split with the paper's metrics (JSON; --markdown for tables).

    Prints the JSON unless --out or --markdown is given.
    """
    _require_torch()
    if not checkpoint.is_file():
        raise CrystalgridError(f"checkpoint not found: {checkpoint}")
    from crystalgrid.models.evaluate import evaluate
    from crystalgrid.models.metrics import to_json, to_markdown
    from crystalgrid.models.train import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    dataset = _open_store(data)
    view = _split(dataset, split)
    result = evaluate(
        ckpt,
        view,
        spec=dataset.spec,
        batch_size=batch_size,
        device=device,
        precision=precision,
        limit=limit,
        ceiling=ceiling,
        quiet=quiet,
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
        title = f"{checkpoint} on {data} ({split})"
        click.echo(to_markdown(result, title=title), nl=False)
    elif out is None:
        click.echo(to_json(result))
    else:
        within = result["true_within_radius"]
        click.echo(
            f"{result['n_samples']} samples scored; true atoms within 0.5 Å: "
            f"{'n/a' if within is None else f'{100 * within:.1f}%'}; written to {out}"
        )
