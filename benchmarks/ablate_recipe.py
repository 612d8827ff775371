"""Ablations of the training recipe: one setting changed at a time, same steps, scored on val.

Each variant is the previous one with one more change (a ladder from the earlier CPU recipe
to the current one), trained for the same number of steps on the same split with the same
seed, then scored by ``crystalgrid.models.scoring.evaluate`` on the first ``--eval-limit``
samples of the validation split (posterior-mean reconstructions, U-Net peaks). One JSON line
per variant goes to ``OUT/ablation.jsonl`` as it finishes (a rerun skips the variants already
there), and the table to ``OUT/ablation.md``.

Run (2 CPU cores, ~10 minutes a variant at 600 steps)::

    crystalgrid build --source ../shared/data/mp_binaries/mp_binaries.json.gz --repr both \\
        --out runs/data/mp --samples 3
    python benchmarks/ablate_recipe.py --data runs/data/mp/single.zarr --steps 600 \\
        --out runs/ablation-single
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crystalgrid.dataset import open_dataset
from crystalgrid.models.config import shipped_config
from crystalgrid.models.scoring.evaluate import evaluate
from crystalgrid.models.training.loop import train

#: The ladder's first rung: the earlier CPU recipe (the shipped configuration
#: baseline-1h-cpu-earlier: beta 1e-4, a dense latent of 32, joint training), run for --steps.
BASE = shipped_config("baseline-1h-cpu-earlier").with_overrides(val_max_batches=2, log_every=50)

#: The ladder: (name, what changes from the previous rung).
LADDER: list[tuple[str, dict[str, Any]]] = [
    ("base (beta 1e-4, latent 32, joint)", {}),
    ("beta 1e-6", {"beta": 1e-6}),
    ("latent 256", {"latent_dim": 256}),
    ("staged: VAE half, then U-Net on recon + truth", {"vae_stage": 0.5, "unet_input": "both"}),
    ("no BatchNorm on the raw density", {"input_norm": False}),
    ("cube-symmetry augmentation", {"augment": "cube"}),
    ("a latent grid of 512 on the encoder's cells", {"latent_dim": 512, "latent_kind": "conv"}),
]


def variants() -> list[tuple[str, dict[str, Any]]]:
    """Each rung's name and its full configuration overrides (cumulative)."""
    settings: dict[str, Any] = {}
    out = []
    for name, change in LADDER:
        settings = {**settings, **change}
        out.append((name, dict(settings)))
    return out


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "ablation.jsonl"
    done = {}
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            row = json.loads(line)
            done[row["variant"]] = row
    ds = open_dataset(args.data)
    train_view, val_view = ds.split("train"), ds.split("val")
    for i, (name, settings) in enumerate(variants()):
        if args.only is not None and i not in args.only:
            continue
        if name in done:
            continue
        config = BASE.with_overrides(**settings, max_steps=args.steps, seed=args.seed)
        run_dir = out / f"v{i}"
        t0 = time.perf_counter()
        last = train(config, train_view, val_view, out_dir=run_dir, quiet=True)
        train_s = time.perf_counter() - t0
        log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        speeds = [r["samples_per_s"] for r in log if r["kind"] == "step"][1:]
        t0 = time.perf_counter()
        scores = evaluate(
            last, val_view, limit=args.eval_limit, device="cpu", ceiling=False, quiet=True
        )
        row = {
            "variant": name,
            "rung": i,
            "settings": settings,
            "steps": args.steps,
            "train_seconds": train_s,
            "samples_per_s_median": float(np.median(speeds)) if speeds else None,
            "eval_seconds": time.perf_counter() - t0,
            "val_samples": scores["n_samples"],
            "voxel_mse_mean": scores["voxel_mse_mean"],
            "true_within_0.5": scores["true_within_radius"],
            "count_exact": scores["count_exact"],
            "species_exact": scores["species_exact"],
            "n_true_atoms": scores["n_true_atoms"],
            "n_pred_atoms": scores["n_pred_atoms"],
        }
        with rows_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    (out / "ablation.md").write_text(table(rows))
    print(table(rows))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def table(rows: list[dict[str, Any]]) -> str:
    """The ablation rows as a markdown table, in ladder order."""
    lines = [
        "| rung | change from the rung above | val voxel MSE | atoms within 0.5 Å | "
        "exact counts | species exact | atoms found / true | samples/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["rung"]):
        lines.append(
            f"| {r['rung']} | {r['variant']} | {r['voxel_mse_mean']:.4f} | "
            f"{_pct(r['true_within_0.5'])} | {_pct(r['count_exact'])} | "
            f"{_pct(r['species_exact'])} | {r['n_pred_atoms']} / {r['n_true_atoms']} | "
            f"{r['samples_per_s_median'] or 0:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a single or repeated store")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-limit", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", type=int, nargs="*", help="rungs to run (default: all)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
