"""One command from structures to a scored baseline: build, train, evaluate, report.

:func:`run_baseline` builds (or reuses) the stores of a source, trains the reference model
on each representation's train split, scores it with the paper's metrics on the budget's
scored split (the test split; the train split for ``overfit-cpu``), and writes into ``out``:

- ``results.json``: everything (budget, command, seed, versions, device, wall times, scores,
  the decoding ceiling, the U-Net and the training-free peak fit on the true densities, the
  paper's numbers);
- ``results.md``: the same as tables, the run beside the paper's Table 1 and the ceiling;
- ``<repr>-loss.png``, ``<repr>-parity.png``, ``<repr>-counts.png``, ``<repr>-distances.png``:
  loss curves, reconstructed vs true density per voxel, predicted minus true atom counts, and
  the distance percentiles beside the paper's;
- ``<repr>/``: the training run (``log.jsonl``, ``last.pt``, ``best.pt``).

A budget fixes the work, not the wall time: steps, crystals and samples are set so that the
run fits its time on the machine it names, and the same budget, source and seed give the same
numbers on any machine of that kind.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from crystalgrid.baseline.budgets import BUDGETS, Budget
from crystalgrid.baseline.report import baseline_pictures, write_baseline_results
from crystalgrid.errors import CrystalgridError
from crystalgrid.models.config import TrainConfig
from crystalgrid.models.scoring.metrics import PAPER_REPEATED, PAPER_SINGLE

__all__ = ["run_baseline", "training_seconds"]


class _FirstRecords:
    """The first ``n`` records of a source (a deterministic subset for small budgets)."""

    def __init__(self, source: Any, n: int) -> None:
        self._source = source
        self._n = n
        self.name = f"{source.name} (first {n})"

    def records(self) -> Iterator[Any]:
        for i, record in enumerate(self._source.records()):
            if i >= self._n:
                return
            yield record

    def provenance(self) -> dict[str, Any]:
        return {**self._source.provenance(), "subset": f"first {self._n} records"}

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self._source.fingerprint()}:first{self._n}".encode()).hexdigest()


def _cores() -> int:
    """The CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _versions() -> dict[str, str]:
    import torch

    from crystalgrid._version import __version__

    versions = {"crystalgrid": __version__, "python": platform.python_version()}
    versions["torch"] = str(torch.__version__)
    versions["numpy"] = np.__version__
    return versions


def _machine() -> dict[str, Any]:
    import torch

    from crystalgrid.models.runtime import cpu_capability, cpu_name

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_name(),
        "cpu_capability": cpu_capability(),
        "cpu_cores": _cores(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_baseline(
    budget: str | Budget,
    *,
    out: str | Path,
    source: str | os.PathLike[str] | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    crystals: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    licence: str | None = None,
    citation: str | None = None,
    command: str | None = None,
    representations: tuple[str, ...] | None = None,
    eval_limit: int | None = None,
    resume: bool = False,
    quiet: bool = False,
    announce: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build, train, evaluate and report one budget (module docstring).

    Args:
        budget: a name of :data:`BUDGETS` or a :class:`Budget`.
        out: the results folder (created; a folder holding a finished run is refused).
        source: as ``crystalgrid build --source`` (``None``: the embedded demo set).
        data_dir: where the stores go (reused when they match); default ``out/stores``.
        seed: seeds the build (rotations, splits) and the training.
        steps, crystals, device, precision: override the budget's (to try a budget small,
            or to run it on other hardware).
        licence, citation: of the source data, when the source does not state them (as
            ``crystalgrid build --licence``); recorded in the stores and the results.
        command: the command line to record (default: this process's).
        representations: run only these of the budget's representations (default: all).
        eval_limit: score at most this many samples (default: the budget's).
        resume: continue each representation's training from its ``last.pt`` in ``out``
            (an interrupted run); representations without one start afresh.
        quiet: no progress bars.
        announce: called with one line before each representation's training: its steps and
            the time they are expected to take on this machine (measured over a few steps
            of the budget's networks, :func:`~crystalgrid.models.training.speed.
            measure_stage_rates`; a run of a few steps is not timed); ``None``: not measured.

    Returns:
        What ``results.json`` holds.

    Raises:
        CrystalgridError: for an unknown budget, a bad source, or an ``out`` already used.
    """
    from crystalgrid.builder import BuildConfig, build_representations
    from crystalgrid.dataset import open_dataset
    from crystalgrid.sources import open_source

    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise CrystalgridError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
        budget = BUDGETS[budget]
    if representations is not None:
        unknown = [r for r in representations if r not in budget.representations]
        if unknown or not representations:
            raise CrystalgridError(
                f"the {budget.name} budget trains {', '.join(budget.representations)}, "
                f"not {', '.join(unknown) or 'nothing'}"
            )
        budget = replace(budget, representations=tuple(representations))
    if eval_limit is not None:
        if eval_limit < 1:
            raise CrystalgridError(f"the samples to score must be at least 1, got {eval_limit}")
        budget = replace(budget, eval_limit=eval_limit)
    out = Path(out)
    if (out / "results.json").exists():
        raise CrystalgridError(f"{out} already holds a baseline run (results.json); choose another")
    if not resume and any((out / r / "last.pt").exists() for r in budget.representations):
        raise CrystalgridError(
            f"{out} holds an interrupted baseline run (a last.pt); add --resume to continue it, "
            "or choose another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir is not None else out / "stores"
    overrides = {"max_steps": steps, "device": device, "precision": precision, "seed": seed}
    crystals = crystals if crystals is not None else budget.crystals
    started = time.perf_counter()

    stated = {k: v for k, v in (("licence", licence), ("citation", citation)) if v}
    if stated and source is None:
        raise CrystalgridError(
            "the demo set's licence and citation are fixed; drop --licence/--citation"
        )
    src = open_source(source, **stated)
    if crystals is not None:
        src = _FirstRecords(src, crystals)
    workers = budget.workers or _cores()
    build_config = BuildConfig(
        samples_per_crystal=budget.samples_per_crystal,
        seed=seed,
        split_fractions=budget.split_fractions,
    )
    t0 = time.perf_counter()
    reports = build_representations(
        src,
        {r: data_dir / f"{r}.zarr" for r in budget.representations},
        config=build_config,
        workers=workers,
        quiet=quiet,
    )
    build_s = time.perf_counter() - t0

    results: dict[str, Any] = {
        "budget": budget.name,
        "description": budget.description,
        "command": command or shlex.join(["crystalgrid", *sys.argv[1:]]),
        "seed": seed,
        "source": src.provenance(),
        "versions": _versions(),
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build": {"seconds": build_s, "workers": workers, "stores": {}},
        "representations": {},
    }
    for report, representation in zip(reports, budget.representations, strict=True):
        store = data_dir / f"{representation}.zarr"
        results["build"]["stores"][representation] = {
            "path": str(store),
            "reused": bool(getattr(report, "resumed", False)),
        }
        dataset = open_dataset(store)
        config = budget.config_for(representation).with_overrides(**overrides)
        expected = None
        if announce is not None:
            expected = _expected_training(config, dataset, out / representation, resume)
            announce(f"{representation}: {expected['line']}")
        results["representations"][representation] = _train_and_score(
            budget, config, dataset, representation, out, resume, quiet
        )
        if expected is not None:
            results["representations"][representation]["train"]["expected"] = expected
        results["wall_time_s"] = time.perf_counter() - started
        if len(results["representations"]) < len(budget.representations):
            # What is done so far survives an interrupted run (results.json marks a finished one).
            write_baseline_results(
                out / "results-partial.json", out / "results-partial.md", results
            )
    write_baseline_results(out / "results.json", out / "results.md", results)
    for partial in ("results-partial.json", "results-partial.md"):
        (out / partial).unlink(missing_ok=True)
    return results


#: Runs of at most this many steps are not timed before they start.
_UNTIMED_STEPS = 10


def _expected_training(
    config: TrainConfig, dataset: Any, run_dir: Path, resume: bool
) -> dict[str, Any]:
    """The training's steps and its expected seconds on this machine, with the rates they
    come from and a line for the user."""
    import torch

    from crystalgrid.models.checkpoint import read_checkpoint
    from crystalgrid.models.training.loader import scan_species
    from crystalgrid.models.training.speed import expected_training_seconds, measure_stage_rates

    train_view = dataset.split("train")
    batch = min(config.batch_size, max(1, len(train_view)))
    config = replace(config, batch_size=batch)
    total = (len(train_view) // batch) * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    done = 0
    if resume and (run_dir / "last.pt").exists():
        done = int(read_checkpoint(run_dir / "last.pt")["step"])
    steps = total - done
    if steps <= _UNTIMED_STEPS:
        # Timing the stages would take about as long as training them.
        line = f"{steps:,} training steps of batch {batch} (too few to time first)"
        return {"steps": steps, "seconds": None, "line": line}
    n_classes = len(config.classes) + 1 if config.classes else scan_species(train_view).n_classes
    # A GPU is timed at the run's batch (eager: a compiled run goes faster); a CPU for one step
    # per stage at a batch of at most 8 (a smaller batch runs fewer samples/s on a CPU, a
    # larger one costs seconds of the paper's width to time).
    gpu = config.device.startswith("cuda") or (
        config.device == "auto" and torch.cuda.is_available()
    )
    rates = measure_stage_rates(
        config,
        bins=dataset.spec.bins,
        n_classes=n_classes,
        batch_size=batch if gpu else min(batch, 8),
        steps=5 if gpu else 1,
        warmup=3 if gpu else 1,
    )
    left = expected_training_seconds(config, rates, total_steps=total, done=done)
    names = {"vae": "VAE stage", "unet": "U-Net stage", "joint": "joint step"}
    speeds = ", ".join(f"{names[k]} {v:.1f} samples/s" for k, v in rates.rates.items())
    line = (
        f"{steps:,} training steps of batch {batch}, expected ~{left / 60:.1f} min on "
        f"this machine ({rates.runtime}; {speeds})"
    )
    return {
        "steps": steps,
        "seconds": left,
        **rates.to_dict(),
        "line": line,
    }


def training_seconds(log: list[dict[str, Any]]) -> float:
    """Seconds spent training, summed over a run's sessions (a resumed run has several).

    Each ``start`` record opens a session that lasts until the last record before the next
    ``start``; the time between sessions (a run stopped and resumed later) is not counted.
    """
    total, opened, latest = 0.0, None, None
    for record in log:
        if record["kind"] == "start":
            if opened is not None and latest is not None:
                total += latest - opened
            opened = latest = record["time"]
        elif opened is not None:
            latest = record["time"]
    if opened is not None and latest is not None:
        total += latest - opened
    return total


def _train_and_score(
    budget: Budget,
    config: TrainConfig,
    dataset: Any,
    representation: str,
    out: Path,
    resume: bool,
    quiet: bool,
) -> dict[str, Any]:
    from crystalgrid.models.checkpoint import load_checkpoint
    from crystalgrid.models.scoring.decoders import score_peak_fit
    from crystalgrid.models.scoring.evaluate import evaluate
    from crystalgrid.models.scoring.threshold import record_tuning, tune_threshold
    from crystalgrid.models.training.loop import read_log, train

    train_view, val_view = dataset.split("train"), dataset.split("val")
    test_view = dataset.split(budget.eval_split)
    if len(test_view) == 0:
        raise CrystalgridError(
            f"the {representation} store has no {budget.eval_split} samples: use more crystals"
        )
    if len(train_view) < config.batch_size:
        config = replace(config, batch_size=max(1, len(train_view)))
    run_dir = out / representation
    last = train(
        config,
        train_view,
        val_view if len(val_view) else None,
        out_dir=run_dir,
        resume=run_dir / "last.pt" if resume and (run_dir / "last.pt").exists() else None,
        quiet=quiet,
        metadata={"data": str(dataset.location), "representation": representation},
    )
    log = read_log(run_dir / "log.jsonl")
    train_s = training_seconds(log)
    steps = [r for r in log if r["kind"] == "step"]
    speeds = [r["samples_per_s"] for r in steps[1:]] or [r["samples_per_s"] for r in steps]

    # The U-Net peak decoder's threshold, tuned on the validation split and recorded in
    # last.pt, so that every score below (and a later `crystalgrid evaluate`) uses it.
    tuning = None
    if budget.tune_limit and len(val_view):
        tuning = tune_threshold(
            last, val_view, limit=budget.tune_limit, device=config.device, quiet=quiet
        )
        tuning["data"] = {"path": str(dataset.location), "split": "val"}
        record_tuning(last, tuning)
    ckpt = load_checkpoint(last)
    per_sample: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    scores = evaluate(
        ckpt,
        test_view,
        limit=budget.eval_limit,
        device=config.device,
        quiet=quiet,
        records=per_sample,
        # The paper's decoding of the same reconstructions, and species from amplitudes.
        also=("unet-components", "unet-amplitudes"),
    )
    eval_s = time.perf_counter() - t0
    # The same model with the untuned threshold (0: P(atom) >= 0.5), beside the tuned one.
    untuned = None
    if ckpt.peak_threshold != 0.0:
        untuned = evaluate(
            ckpt,
            test_view,
            limit=budget.eval_limit,
            device=config.device,
            ceiling=False,
            threshold=0.0,
            quiet=quiet,
        )
    # The U-Net on the true densities: what the segmenter reaches without the VAE's errors.
    unet_on_truth = evaluate(
        ckpt,
        test_view,
        limit=budget.eval_limit,
        device=config.device,
        ceiling=False,
        source="truth",
        quiet=quiet,
    )
    peakfit = None
    if budget.peakfit_limit != 0:
        t0 = time.perf_counter()
        peakfit = score_peak_fit(test_view, limit=budget.peakfit_limit, quiet=quiet)
        peakfit = {**peakfit, "seconds": time.perf_counter() - t0}
    # The same reconstructions decoded by the peak fit instead of the U-Net: what it adds.
    recon_limit = (
        budget.peakfit_limit if budget.peakfit_recon_limit is None else budget.peakfit_recon_limit
    )
    peakfit_recon = None
    if recon_limit != 0:
        peakfit_recon = evaluate(
            ckpt,
            test_view,
            limit=recon_limit,
            device=config.device,
            ceiling=False,
            decoder="peakfit",
            quiet=quiet,
        )

    prefix = out / representation
    pictures = baseline_pictures(prefix, log, per_sample, scores, ckpt, test_view, representation)
    return {
        "store": str(dataset.location),
        "samples": {"train": len(train_view), "val": len(val_view), "scored": len(test_view)},
        "scored_split": budget.eval_split,
        "config": config.to_dict(),
        "train": {
            "seconds": train_s,
            "steps": ckpt.step,
            "sessions": sum(1 for r in log if r["kind"] == "start"),
            "samples_per_s_median": float(np.median(speeds)) if speeds else None,
            # The training's own runtime (the last session's start record), not evaluation's.
            "runtime": next(
                (r.get("runtime") for r in reversed(log) if r["kind"] == "start"),
                scores.get("runtime"),
            ),
            "final": {k: steps[-1].get(k) for k in ("loss", "mse", "kl", "ce")} if steps else {},
        },
        "evaluate_seconds": eval_s,
        "scores": {k: v for k, v in scores.items() if k not in ("ceiling", "also")},
        "ceiling": scores.get("ceiling"),
        "unet_components": scores["also"]["unet-components"],
        "unet_amplitudes": scores["also"]["unet-amplitudes"],
        "threshold_tuning": tuning,
        "threshold_zero": untuned,
        "unet_on_true_density": unet_on_truth,
        "peakfit_on_true_density": peakfit,
        "peakfit_on_reconstruction": peakfit_recon,
        "paper": PAPER_SINGLE if representation == "single" else PAPER_REPEATED,
        "pictures": [p.name for p in pictures],
    }
