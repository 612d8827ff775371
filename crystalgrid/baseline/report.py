"""A baseline run's results written down: ``results.json``, ``results.md`` (the run beside the
paper's Table 1 and the decoding ceiling) and the pictures of each representation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crystalgrid.jsonio import write_results
from crystalgrid.models.scoring.metrics import PAPER_REPEATED, PAPER_SINGLE, to_markdown

__all__ = ["baseline_pictures", "results_markdown", "write_baseline_results"]


def write_baseline_results(json_path: Path, md_path: Path, results: dict[str, Any]) -> None:
    """Write ``results`` as JSON and as markdown."""
    write_results(json_path, results)
    md_path.write_text(results_markdown(results))


def baseline_pictures(
    prefix: Path,
    log: list[dict[str, Any]],
    per_sample: list[dict[str, Any]],
    scores: dict[str, Any],
    ckpt: Any,
    view: Any,
    representation: str,
) -> list[Path]:
    from crystalgrid.models.inference import reconstruct_batch
    from crystalgrid.models.plots import baseline_figures

    first = view[0 : min(len(view), 8)]  # the parity plot's samples
    recon = reconstruct_batch(ckpt, np.asarray(first["density"]))
    return baseline_figures(
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


def results_markdown(results: dict[str, Any]) -> str:
    from crystalgrid.models.scoring.threshold import tuning_table

    lines = [
        f"# crystalgrid baseline: {results['budget']}",
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
