"""Training samples/s of the reference model (paper's VAE + 4-level attention U-Net).

Times full optimiser steps (forward, joint loss, backward, Adam) on synthetic batches that
already sit on the device, so the figure is the model's alone; ``--data STORE`` also times the
loader (``measure_loader`` on the train split), which must beat the model for the GPU to stay
busy. Prints a markdown table with the device name.

Run::

    python benchmarks/bench_train.py                 # GPU: batch 24/128, fp32/bf16, eager/compiled
    python benchmarks/bench_train.py --data STORE    # and the loader
    python benchmarks/bench_train.py --threads 2     # CPU: batch 24, fp32/bf16, eager
    python benchmarks/bench_train.py --budgets --threads 2   # each stage of each CPU budget

``--budgets`` times each stage of each CPU budget of ``crystalgrid baseline`` (its own
networks, batch and head) in fp32 and in bf16 autocast in the same run, and prints the
training time each budget's steps take at those rates: what a budget costs on this CPU. Where
the CPU only emulates bf16 (AVX2), its bf16 rows take few steps (they are slow).

On CPU the default grid is reduced (batch 24, eager; ``torch.compile`` on CPU needs a C++
compiler and minutes of compilation); pass ``--batch-sizes``/``--compile`` to widen it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from crystalgrid.models.config import TrainConfig
from crystalgrid.models.nets.classes import ClassMap
from crystalgrid.models.nets.model import ReferenceModel
from crystalgrid.models.runtime import cpu_name, resolve_runtime
from crystalgrid.models.training.speed import synthetic_batch

# 84 species: the number of elements in ../shared/data/mp_binaries.
DEFAULT_SPECIES = tuple(range(1, 85))


def bench_one(
    config: TrainConfig,
    batch: int,
    precision: str,
    compiled: bool,
    *,
    steps: int,
    warmup: int,
    device: str,
    species: tuple[int, ...],
    cudnn_benchmark: bool = True,
) -> dict[str, Any]:
    """Samples/s of ``steps`` timed training steps after ``warmup`` untimed ones.

    ``cudnn_benchmark`` lets cuDNN time its convolution algorithms in the warm-up steps, as the
    trainer does on a GPU; without it 3-D convolutions may run a slow default algorithm.
    """
    runtime = resolve_runtime(device, precision, compiled)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.manual_seed(0)
    model = ReferenceModel(config, 30, ClassMap(species)).to(runtime.device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    step_fn = torch.compile(model) if runtime.compile else model
    density, sp = synthetic_batch(batch, 30, species, runtime.device)
    cuda = runtime.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        with runtime.autocast():
            out = step_fn(density, sp)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {
        "batch": batch,
        "precision": precision,
        "compiled": compiled,
        "cudnn_benchmark": cudnn_benchmark,
        "samples_per_s": batch * steps / dt,
        "step_ms": 1000 * dt / steps,
        "warmup_s": warm_s,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def _network_key(config: TrainConfig) -> tuple[Any, ...]:
    """What decides a step's cost: the networks, the stages, the U-Net's input, the batch."""
    return (
        config.latent_kind,
        config.latent_dim,
        tuple(config.encoder_channels),
        tuple(config.decoder_channels),
        config.unet_base_channels,
        config.unet_levels,
        bool(config.vae_stage),
        config.unet_input,
        config.head,
        config.batch_size,
    )


def bench_budgets(
    precisions: list[str], *, steps: int, n_classes: int, emulated_steps: int = 1
) -> dict[str, Any]:
    """Samples/s of each stage of each CPU budget, in each precision (and fp32 with the
    networks in the contiguous layout, the straightforward one, beside the channels-last 3-D
    layout the trainer uses on a CPU), and each budget's expected training time at those rates
    (markdown tables on stdout)."""
    import warnings

    from crystalgrid.baseline import BUDGETS
    from crystalgrid.errors import PrecisionWarning
    from crystalgrid.models.runtime import cpu_capability, cpu_native_bf16
    from crystalgrid.models.training.speed import (
        expected_training_seconds,
        measure_stage_rates,
        stage_steps,
    )

    configs: dict[tuple[Any, ...], tuple[TrainConfig, list[str]]] = {}
    runs: list[tuple[str, TrainConfig]] = []
    for name, budget in BUDGETS.items():
        for representation in budget.representations:
            config = budget.config_for(representation)
            if config.device not in ("cpu", "auto") or name.endswith("gpu"):
                continue
            label = name if len(budget.representations) == 1 else f"{name} ({representation})"
            runs.append((label, config))
            entry = configs.setdefault(_network_key(config), (config, []))
            entry[1].append(label)
    rates: dict[tuple[tuple[Any, ...], str], Any] = {}
    columns = [*precisions, "fp32-contiguous"]
    print(f"\n| networks (budgets) | stage | {' | '.join(c + ' samples/s' for c in columns)} |")
    print("|---|---|" + "---|" * len(columns))
    for key, (config, labels) in configs.items():
        for precision in precisions:
            emulated = precision == "bf16" and not cpu_native_bf16()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PrecisionWarning)
                runtime = resolve_runtime("cpu", precision, False)
            rates[key, precision] = measure_stage_rates(
                config,
                n_classes=n_classes,
                steps=emulated_steps if emulated else steps,
                warmup=0 if emulated else 1,
                runtime=runtime,
            )
        rates[key, "fp32-contiguous"] = measure_stage_rates(
            config,
            n_classes=n_classes,
            steps=steps,
            runtime=resolve_runtime("cpu", "fp32", False),
            memory_format=torch.contiguous_format,
        )
        for stage in rates[key, precisions[0]].rates:
            cells = " | ".join(f"{rates[key, c].rates[stage]:.2f}" for c in columns)
            print(f"| {', '.join(labels)} | {stage} | {cells} |", flush=True)
    print(f"\n| budget | steps | {' | '.join('training, ' + p for p in precisions)} |")
    print("|---|---|" + "---|" * len(precisions))
    expected: dict[str, dict[str, float]] = {}
    for label, config in runs:
        total = config.max_steps or 0
        parts = " + ".join(f"{n:,} {s}" for s, n in stage_steps(config, total).items())
        times = {
            p: expected_training_seconds(config, rates[_network_key(config), p], total_steps=total)
            for p in precisions
        }
        expected[label] = times
        print(f"| {label} | {parts} | " + " | ".join(_minutes(t) for t in times.values()) + " |")
    return {
        "cpu": cpu_name(),
        "cpu_capability": cpu_capability(),
        "threads": torch.get_num_threads(),
        "n_classes": n_classes,
        "rates": [
            {"budgets": labels, "case": c, **rates[key, c].to_dict()}
            for key, (_, labels) in configs.items()
            for c in columns
        ],
        "expected_training_s": expected,
    }


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"])
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], dest="compile_modes")
    parser.add_argument(
        "--cudnn-benchmark",
        nargs="+",
        choices=["off", "on"],
        default=["on"],
        help="cuDNN algorithm search (the trainer turns it on; 'off on' shows the difference)",
    )
    parser.add_argument("--steps", type=int, help="timed steps per case")
    parser.add_argument("--warmup", type=int, help="untimed steps per case (compilation)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--config", type=Path, help="JSON TrainConfig (default: the paper's)")
    parser.add_argument(
        "--data", type=Path, help="also time the loader on this store's train split"
    )
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument(
        "--budgets",
        action="store_true",
        help="time each stage of each CPU budget (fp32 and bf16) and its expected training time",
    )
    parser.add_argument(
        "--classes", type=int, default=85, help="U-Net classes for --budgets (MP binaries: 85)"
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.budgets:
        from crystalgrid.models.runtime import cpu_capability

        print(
            f"CPU: {cpu_name()} ({cpu_capability()}); torch {torch.__version__}; "
            f"threads {torch.get_num_threads()}; {args.classes} classes; synthetic batches"
        )
        found = bench_budgets(
            args.precisions or ["fp32", "bf16"], steps=args.steps or 3, n_classes=args.classes
        )
        if args.json:
            args.json.write_text(json.dumps(found, indent=2))
        return
    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    runtime = resolve_runtime(args.device)
    gpu = runtime.device.type == "cuda"
    batches = args.batch_sizes or ([24, 128] if gpu else [24])
    precisions = args.precisions or ["fp32", "bf16"]
    modes = args.compile_modes or (["off", "on"] if gpu else ["off"])
    steps = args.steps or (30 if gpu else 3)
    warmup = args.warmup or (5 if gpu else 1)
    species = tuple(config.classes) if config.classes else DEFAULT_SPECIES

    name = torch.cuda.get_device_name(runtime.device) if gpu else cpu_name()
    model = ReferenceModel(config, 30, ClassMap(species))
    params = model.n_parameters()
    print(
        f"device: {runtime.device} ({name}); torch {torch.__version__}; "
        f"threads {torch.get_num_threads()}; parameters {params['total'] / 1e6:.1f} M "
        f"(VAE {params['vae'] / 1e6:.1f} M, U-Net {params['unet'] / 1e6:.1f} M, "
        f"{len(species) + 1} classes); {steps} timed steps after {warmup} warm-up"
    )
    del model

    rows = []
    print(
        "\n| batch | precision | compiled | cuDNN search | training samples/s | step (ms) "
        "| peak GiB |"
    )
    print("|---|---|---|---|---|---|---|")
    cases = [
        (batch, precision, mode, search)
        for batch in batches
        for precision in precisions
        for mode in modes
        for search in (args.cudnn_benchmark if gpu else ["off"])
    ]
    for batch, precision, mode, search in cases:
        row = bench_one(
            config,
            batch,
            precision,
            mode == "on",
            steps=steps,
            warmup=warmup,
            device=args.device,
            species=species,
            cudnn_benchmark=search == "on",
        )
        rows.append(row)
        mem = f"{row['peak_mem_gib']:.1f}" if row["peak_mem_gib"] is not None else "-"
        print(
            f"| {batch} | {precision} | {'yes' if mode == 'on' else 'no'} | {search} | "
            f"{row['samples_per_s']:,.1f} | {row['step_ms']:.0f} | {mem} |",
            flush=True,
        )
        if gpu:
            torch.cuda.empty_cache()

    loader = None
    if args.data:
        import crystalgrid
        from crystalgrid.models.training.loader import measure_loader

        view = crystalgrid.open_dataset(args.data).split("train")
        loader = {b: measure_loader(view, b, n_batches=50) for b in batches}
        print("\n| loader batch | samples/s |\n|---|---|")
        for b, stats in loader.items():
            print(f"| {b} | {stats['samples_per_s']:,.0f} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": name,
                    "torch": torch.__version__,
                    "parameters": params,
                    "rows": rows,
                    "loader": loader,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
