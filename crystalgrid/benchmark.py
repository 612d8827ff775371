"""One command from structures to a scored baseline: build, train, evaluate, report.

:func:`run_benchmark` builds (or reuses) the stores of a source, trains the reference model
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
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from crystalgrid.errors import CrystalgridError
from crystalgrid.jsonio import jsonable
from crystalgrid.models.config import TrainConfig
from crystalgrid.models.scoring.metrics import PAPER_REPEATED, PAPER_SINGLE, to_markdown

__all__ = ["BUDGETS", "Budget", "run_benchmark"]


@dataclass(frozen=True)
class Budget:
    """The work of one benchmark run.

    Attributes:
        name: how the CLI calls it.
        description: what it is for and the machine it is sized for.
        representations: which stores to build, train and score.
        train: the training configuration (steps, architecture, device).
        overrides: fields of ``train`` replaced for one representation (crops hold ~20 times
            the atoms of a cell: their own steps and prior), e.g. ``{"repeated": {...}}``.
        crystals: use the first this many records of the source (``None``: all).
        samples_per_crystal: samples of each representation per crystal.
        eval_limit: score at most this many test samples (``None``: the whole split).
        peakfit_limit: test samples decoded by the training-free peak fit on the true
            densities (``None``: all, ``0``: skipped; the fit takes ~0.1-1 s a single cell
            and ~6 s a repeated crop on one core).
        peakfit_recon_limit: test samples whose *reconstructions* the peak fit decodes (the
            VAE without the U-Net; slower on imperfect grids); ``None``: ``peakfit_limit``,
            ``0``: skipped.
        tune_limit: validation samples the U-Net peak decoder's threshold is tuned on
            (:func:`~crystalgrid.models.scoring.threshold.tune_threshold`, recorded in the
            run's ``last.pt``); ``0``: not tuned (threshold 0).
        workers: build workers; ``None``: the cores available.
        split_fractions: train, val, test fractions of the crystals.
        eval_split: the split scored (``"train"`` for a proof that the model can learn).
    """

    name: str
    description: str
    representations: tuple[str, ...]
    train: TrainConfig
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    crystals: int | None = None
    samples_per_crystal: int = 3
    eval_limit: int | None = None
    peakfit_limit: int | None = 200
    peakfit_recon_limit: int | None = None
    tune_limit: int = 200
    workers: int | None = None
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    eval_split: str = "test"

    def config_for(self, representation: str) -> TrainConfig:
        """The training configuration of one representation (``train`` plus its overrides)."""
        return self.train.with_overrides(**self.overrides.get(representation, {}))


#: The paper's networks at a width 2 CPU cores can train.
_CPU_ARCHITECTURE: dict[str, Any] = {
    "latent_dim": 32,
    "encoder_channels": (4, 8, 16, 32),
    "decoder_channels": (16, 8, 4),
    "unet_base_channels": 8,
    "unet_levels": 3,
}

#: The recipe that generalises (models/gpu-10m.md and models/baseline-1h-cpu-single.md): a KL weight
#: that no longer pays the VAE to drop light atoms, no BatchNorm on the raw amplitudes, the
#: 48 cube symmetries, and two stages (the VAE, then the U-Net on the frozen VAE's
#: posterior-mean reconstructions and the truth, at its own full learning rate).
RECIPE: dict[str, Any] = {
    "beta": 1e-6,
    "input_norm": False,
    "augment": "cube",
    "vae_stage": 0.5,
    "unet_input": "both",
    "atom_weight": 10.0,
    "lr": 1e-3,
    "lr_schedule": "cosine",
}

#: The recipe at the CPU width, with a latent grid of 512 numbers on the encoder's 8^3 cells
#: instead of a dense bottleneck: on the MP binaries' single cells it lowered the validation
#: MSE after the VAE stage from 0.0119 to 0.0028 and placed 84% of the atoms within 0.5 Å of
#: 300 validation cells instead of 46% (dense latent of 256, same steps; the card
#: models/baseline-1h-cpu-single.md); on crops the dense bottleneck stalled altogether.
BASELINE_CPU = TrainConfig(
    **{**_CPU_ARCHITECTURE, "latent_dim": 512, "latent_kind": "conv"},
    **RECIPE,
    warmup_steps=100,
    batch_size=8,
    epochs=100_000,
    max_steps=4500,
    device="cpu",
    precision="auto",
    log_every=50,
    val_max_batches=8,
    checkpoint_every=1000,
)

#: Trained on 24 crystals of the source and scored on the same samples: the proof that the
#: chain learns, sized for 2 cores without bf16 instructions (``models/overfit-cpu.json``
#: holds the same configuration; its card says what it reaches and how long it takes). The
#: baseline's networks and stages, without augmentation (the samples scored are the samples
#: seen) and with the U-Net on the reconstructions alone (the grids it is scored on).
OVERFIT_CPU = BASELINE_CPU.with_overrides(
    augment="none",
    unet_input="reconstruction",
    vae_stage=0.6,
    warmup_steps=50,
    max_steps=1200,
    log_every=25,
    checkpoint_every=0,
)

BUDGETS: dict[str, Budget] = {
    "overfit-cpu": Budget(
        name="overfit-cpu",
        description=(
            "proof of learning: 24 crystals (the first 25 records, 2 rotations each), "
            "trained and scored on the same samples, <= 15 minutes on 2 CPU cores without bf16"
        ),
        representations=("single",),
        train=OVERFIT_CPU,
        crystals=25,
        samples_per_crystal=2,
        peakfit_limit=None,
        peakfit_recon_limit=12,
        workers=1,
        split_fractions=(1.0, 0.0, 0.0),
        eval_split="train",
    ),
    "smoke": Budget(
        name="smoke",
        description="the whole chain on a few crystals, <= 2 minutes on 2 CPU cores (CI)",
        representations=("single",),
        train=BASELINE_CPU.with_overrides(
            max_steps=40, warmup_steps=5, log_every=5, val_max_batches=2, checkpoint_every=0
        ),
        crystals=40,
        samples_per_crystal=1,
        eval_limit=24,
        peakfit_limit=8,
        workers=1,
    ),
    "1h-cpu": Budget(
        name="1h-cpu",
        description=(
            "the single-cell baseline: about an hour of training on 2 CPU cores with bf16 "
            "instructions, up to about two in fp32 on 2 AVX2-only cores"
        ),
        representations=("single",),
        train=BASELINE_CPU,
        samples_per_crystal=3,
        eval_limit=None,
        peakfit_limit=200,
        peakfit_recon_limit=50,
    ),
    "2h-cpu-repeated": Budget(
        name="2h-cpu-repeated",
        description=(
            "the repeated-crop baseline: about two hours of training on 2 CPU cores with bf16 "
            "instructions, up to about four in fp32 on 2 AVX2-only cores"
        ),
        representations=("repeated",),
        # Crops hold 20-100+ atoms: the same recipe with twice the steps. The latent grid
        # came from this budget (at step 5,000, 200 test crops: 54.1% of the atoms within
        # 0.5 Å against 0.4% with a dense latent of 512; the card). Their grids are ~2.8% atom
        # voxels (single cells ~0.25%): the U-Net's head starts at that share. The atom class
        # weight stays 10: alone on true crops for 300 steps it placed 77% of the atoms
        # within 0.5 Å against 70% with weight 1.
        train=BASELINE_CPU.with_overrides(max_steps=9000, background_prior=0.97),
        samples_per_crystal=3,
        eval_limit=None,
        peakfit_limit=100,
        peakfit_recon_limit=50,
    ),
    "10m-gpu": Budget(
        name="10m-gpu",
        description=(
            "one H100/H200 in <= 9 minutes wall time, stores built on the GPU machine's CPU "
            "cores, both representations one after the other, the paper's width"
        ),
        representations=("single", "repeated"),
        # The CPU recipe at the paper's width, batches of 128, with a lower peak learning
        # rate reached by a warm-up: at lr 1e-3 the paper's 65,536-wide dense bottleneck
        # diverged in the first steps (KL 1e12, then an all-zero decoder), on the GPU and
        # on a CPU alike; 3e-4 after 50 warm-up steps learned on a CPU. The latent is the CPU
        # recipe's grid of 512 on the encoder's 8^3 cells: with the paper's dense latent of
        # 300 the H200 runs placed 53.1% of single-cell atoms and 0.1% of crop atoms
        # (models/gpu-10m.md); on 2 CPU cores the grid lifted single cells from 46% to 84%
        # and crops from 0.4% to 54% (the CPU baselines' cards). Not yet run on a GPU.
        train=TrainConfig(
            **{**RECIPE, "lr": 3e-4},
            latent_dim=512,
            latent_kind="conv",
            warmup_steps=50,
            batch_size=128,
            epochs=1000,
            max_steps=800,
            device="auto",
            log_every=50,
            val_max_batches=4,
            checkpoint_every=0,
        ),
        # Crops: twice the steps, 60% of them for the VAE, and the head's prior at their
        # atom share.
        overrides={
            "repeated": {
                "max_steps": 1600,
                "vae_stage": 0.6,
                "background_prior": 0.97,
            }
        },
        samples_per_crystal=3,
        eval_limit=444,  # the first 148 test crystals, 3 samples each: evaluation is on CPU
        # The peak fit needs no GPU and takes ~6 s a crop: measured on CPU, not here.
        peakfit_limit=0,
    ),
}


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


def run_benchmark(
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
        raise CrystalgridError(f"{out} already holds a benchmark (results.json); choose another")
    if not resume and any((out / r / "last.pt").exists() for r in budget.representations):
        raise CrystalgridError(
            f"{out} holds an interrupted benchmark (a last.pt); add --resume to continue it, "
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
            _write(out / "results-partial.json", out / "results-partial.md", results)
    _write(out / "results.json", out / "results.md", results)
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


def _write(json_path: Path, md_path: Path, results: dict[str, Any]) -> None:
    json_path.write_text(json.dumps(results, indent=1, default=jsonable) + "\n")
    md_path.write_text(_markdown(results))


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
    pictures = _pictures(prefix, log, per_sample, scores, ckpt, test_view, representation)
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


def _pictures(
    prefix: Path,
    log: list[dict[str, Any]],
    per_sample: list[dict[str, Any]],
    scores: dict[str, Any],
    ckpt: Any,
    view: Any,
    representation: str,
) -> list[Path]:
    from crystalgrid.models.inference import reconstruct_batch
    from crystalgrid.models.plots import benchmark_figures

    first = view[0 : min(len(view), 8)]  # the parity plot's samples
    recon = reconstruct_batch(ckpt, np.asarray(first["density"]))
    return benchmark_figures(
        prefix,
        log=log,
        count_errors=[r["n_pred"] - r["n_true"] for r in per_sample],
        scores=scores,
        paper=PAPER_SINGLE if representation == "single" else PAPER_REPEATED,
        true_density=np.asarray(first["density"]),
        reconstruction=recon,
        title=representation,
    )


def _machine_line(machine: dict[str, Any]) -> str:
    """``AMD EPYC (AVX2), 2 cores`` (a GPU's name first where there is one)."""
    cpu = machine.get("cpu") or machine["processor"]
    if machine.get("cpu_capability"):
        cpu += f" ({machine['cpu_capability']})"
    line = f"{cpu}, {machine['cpu_cores']} cores"
    return f"{machine['gpu']}; {line}" if machine.get("gpu") else line


def _markdown(results: dict[str, Any]) -> str:
    from crystalgrid.models.scoring.threshold import tuning_table

    lines = [
        f"# crystalgrid benchmark: {results['budget']}",
        "",
        f"- command: `{results['command']}`",
        f"- seed {results['seed']}; {results['date']}; wall time {results['wall_time_s']:.0f} s"
        f" (build {results['build']['seconds']:.0f} s with {results['build']['workers']} "
        "workers)",
        f"- machine: {_machine_line(results['machine'])}; versions: "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        f"- source: {results['source'].get('kind', '')} {results['source'].get('location', '')}"
        f" ({results['source'].get('licence') or 'licence not stated'})",
        "",
    ]
    for representation, rep in results["representations"].items():
        train = rep["train"]
        lines += [
            f"## {representation}",
            "",
            f"{rep['samples']['train']} training samples, {train['steps']} steps in "
            f"{train['seconds']:.0f} s ({train['samples_per_s_median'] or 0:.1f} samples/s, "
            f"{train['runtime']}); scored on {rep['scores']['n_samples']} "
            f"{rep['scored_split']} samples.",
            "",
        ]
        tuning = rep.get("threshold_tuning")
        if tuning:
            lines += [
                f"The U-Net peaks' threshold, tuned on {tuning['n_samples']} validation samples "
                f"(best F1 of atoms within {tuning['match_radius']} Å): "
                f"**{tuning['threshold']:g}**.",
                "",
                *tuning_table(tuning),
                "",
            ]
        others = [
            ("this model, threshold 0 (untuned)", rep.get("threshold_zero")),
            ("this model, the paper's decoding (components)", rep["unet_components"]),
            ("this model, species from fitted amplitudes", rep.get("unet_amplitudes")),
            ("its U-Net on the true density (no VAE)", rep.get("unet_on_true_density")),
            ("VAE + peak fit (no U-Net)", rep["peakfit_on_reconstruction"]),
            ("peak fit on the true density (no model)", rep["peakfit_on_true_density"]),
        ]
        others = [(name, result) for name, result in others if result is not None]
        table = to_markdown(
            {**rep["scores"], "ceiling": rep["ceiling"]},
            reference=rep["paper"],
            others=others,
        )
        lines += [table, ""]
        lines += [f"![{p}]({p})" for p in rep["pictures"]] + [""]
    return "\n".join(lines)
