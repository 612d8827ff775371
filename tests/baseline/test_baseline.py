"""``crystalgrid baseline``: the smoke budget end to end, as CI runs it (<= 2 minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from crystalgrid.cli import main
from crystalgrid.errors import CrystalgridError

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

MODELS = Path(__file__).resolve().parents[2] / "crystalgrid" / "models" / "configs"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke"
    result = CliRunner().invoke(main, ["benchmark", "--budget", "smoke", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_smoke_writes_results_beside_the_paper(smoke):
    out, output = smoke
    results = json.loads((out / "results.json").read_text())
    assert results["budget"] == "smoke" and results["seed"] == 0
    assert results["command"].startswith("crystalgrid")
    assert {"crystalgrid", "torch", "numpy", "python"} <= set(results["versions"])
    assert results["machine"]["cpu_cores"] >= 1 and results["wall_time_s"] > 0
    assert results["source"]["kind"] == "demo"
    single = results["representations"]["single"]
    assert single["train"]["steps"] == 40 and single["scored_split"] == "test"
    scores = single["scores"]
    assert scores["n_samples"] == single["samples"]["scored"] > 0
    assert 0 <= scores["true_within_radius"] <= 1
    assert single["ceiling"]["true_within_radius"] > 0.95  # true species grids decoded
    assert single["peakfit_on_true_density"]["true_within_radius"] > 0.9
    assert single["peakfit_on_reconstruction"]["decoder"] == "peakfit"
    assert single["scores"]["decoder"] == "unet-peaks"
    assert single["unet_components"]["decoder"] == "unet-components"
    assert single["unet_components"]["n_samples"] == single["scores"]["n_samples"]
    on_truth = single["unet_on_true_density"]
    assert on_truth["source"] == "truth" and on_truth["n_samples"] == scores["n_samples"]
    assert single["paper"]["count_exact"] == 0.90
    # The peak threshold is tuned on val, recorded in last.pt and used for the test scores.
    from crystalgrid.models.checkpoint import load_checkpoint

    tuning = single["threshold_tuning"]
    assert tuning["n_samples"] == single["samples"]["val"] > 0
    assert [row["threshold"] for row in tuning["table"]][:3] == [-2.0, -1.0, 0.0]
    best = max(row["f1"] for row in tuning["table"])
    assert next(r for r in tuning["table"] if r["threshold"] == tuning["threshold"])["f1"] == best
    recorded = load_checkpoint(out / "single" / "last.pt").metadata["decoder"]
    assert recorded["threshold"] == tuning["threshold"] == scores["peak_threshold"]
    assert recorded["data"]["split"] == "val"
    if tuning["threshold"] != 0.0:
        assert single["threshold_zero"]["peak_threshold"] == 0.0
    md = (out / "results.md").read_text()
    assert "tuned on" in md and "| threshold | predicted / true atoms |" in md
    assert "paper (single cells)" in md and "decoding ceiling" in md and "peak fit" in md
    assert "single: 40 steps" in output
    # The precision and CPU capability used, and the time expected before training began.
    from crystalgrid.models.runtime import cpu_capability, cpu_native_bf16

    assert results["machine"]["cpu_capability"] == cpu_capability()
    expected = single["train"]["expected"]
    assert expected["precision"] == ("bf16" if cpu_native_bf16() else "fp32")
    assert expected["cpu_capability"] == cpu_capability() and expected["steps"] == 40
    assert set(expected["samples_per_s"]) == {"vae", "unet"} and expected["seconds"] > 0
    assert f"({cpu_capability()})" in single["train"]["runtime"]
    assert "single: 40 training steps of batch 8, expected ~" in output
    assert f"({cpu_capability()})" in md


def test_smoke_draws_the_four_pictures(smoke):
    from matplotlib.image import imread

    from crystalgrid.models.plots import BASELINE_FIGURE_SIZE

    out, _ = smoke
    for name in ("loss", "parity", "counts", "distances"):
        image = imread(out / f"single-{name}.png")
        assert image.shape[:2] == (BASELINE_FIGURE_SIZE[1], BASELINE_FIGURE_SIZE[0]), name
        assert image[..., :3].std() > 0.01, name  # not a blank canvas


def test_a_used_folder_is_refused_and_stores_are_reused(smoke, tmp_path):
    out, _ = smoke
    runner = CliRunner()
    again = runner.invoke(main, ["benchmark", "--budget", "smoke", "--out", str(out), "-q"])
    assert again.exit_code == 2 and "already holds a baseline run" in again.stderr
    reuse = runner.invoke(
        main,
        [
            "benchmark",
            "--out",
            str(tmp_path / "second"),
            "--data-dir",
            str(out / "stores"),
            "--steps",
            "2",
            "--eval-limit",
            "3",
            "-q",
        ],
    )
    assert reuse.exit_code == 0, reuse.output
    results = json.loads((tmp_path / "second" / "results.json").read_text())
    assert results["build"]["stores"]["single"]["reused"] is True
    single = results["representations"]["single"]
    assert single["train"]["steps"] == 2 and single["scores"]["n_samples"] == 3
    # The training's runtime, read from its log (evaluation never compiles).
    log = (tmp_path / "second" / "single" / "log.jsonl").read_text().splitlines()
    assert single["train"]["runtime"] == json.loads(log[0])["runtime"]

    # An interrupted run (a last.pt, no results.json) is refused without --resume, and
    # continued from its checkpoint with it.
    for name in ("results.json", "results.md"):
        (tmp_path / "second" / name).unlink()
    cont = ["benchmark", "--out", str(tmp_path / "second"), "--data-dir", str(out / "stores")]
    refused = runner.invoke(main, [*cont, "--steps", "4", "-q"])
    assert refused.exit_code == 2 and "add --resume" in refused.stderr
    resumed = runner.invoke(main, [*cont, "--steps", "4", "--resume", "-q"])
    assert resumed.exit_code == 0, resumed.output
    train = json.loads((tmp_path / "second" / "results.json").read_text())
    train = train["representations"]["single"]["train"]
    assert train["steps"] == 4 and train["sessions"] == 2 and train["seconds"] > 0


def test_every_budget_is_offered_by_the_cli():
    from crystalgrid.baseline import BUDGETS
    from crystalgrid.cli.baseline_verbs import baseline_cmd

    option = next(p for p in baseline_cmd.params if p.name == "budget")
    assert set(option.type.choices) == set(BUDGETS)


def test_training_seconds_skip_the_time_between_sessions():
    from crystalgrid.baseline import training_seconds

    log = [
        {"kind": "start", "time": 100.0},
        {"kind": "step", "time": 130.0},
        {"kind": "start", "time": 1000.0},  # resumed much later
        {"kind": "step", "time": 1010.0},
        {"kind": "stop", "time": 1012.0},
    ]
    assert training_seconds(log) == pytest.approx(42.0)


def test_unknown_budget_and_bad_source(tmp_path):
    from crystalgrid.baseline import run_baseline

    with pytest.raises(CrystalgridError, match="unknown budget"):
        run_baseline("1d-tpu", out=tmp_path / "x")
    result = CliRunner().invoke(
        main, ["benchmark", "--source", str(tmp_path / "none.json"), "--out", str(tmp_path / "y")]
    )
    assert result.exit_code == 2 and "source not found" in result.stderr
    result = CliRunner().invoke(
        main, ["benchmark", "--licence", "CC-BY-4.0", "--out", str(tmp_path / "z")]
    )
    assert result.exit_code == 2 and "demo set's licence" in result.stderr


def test_the_gpu_budget_plans_the_paper_model():
    from crystalgrid.baseline import BUDGETS

    gpu = BUDGETS["10m-gpu"]
    assert gpu.representations == ("single", "repeated")
    assert gpu.train.encoder_channels == (16, 32, 64, 128)  # the paper's width
    assert gpu.train.latent_kind == "conv" and gpu.train.latent_dim == 512  # the CPU recipe's
    assert gpu.train.device == "auto" and gpu.workers is None  # every core builds
    # Crops get their own steps and prior; single cells the budget's own configuration.
    assert gpu.config_for("single") == gpu.train
    crops = gpu.config_for("repeated")
    assert crops.max_steps == 2 * gpu.train.max_steps and crops.background_prior == 0.97
    card = json.loads((MODELS / "gpu-10m.json").read_text())
    assert card["notes"]["repeated overrides"] == gpu.overrides["repeated"]


def test_a_budget_runs_only_the_representations_asked_for(tmp_path):
    from crystalgrid.baseline import run_baseline

    with pytest.raises(CrystalgridError, match="smoke budget trains single, not repeated"):
        run_baseline("smoke", out=tmp_path / "x", representations=("repeated",))
    with pytest.raises(CrystalgridError, match="at least 1"):
        run_baseline("smoke", out=tmp_path / "y", eval_limit=0)
    result = CliRunner().invoke(
        main, ["benchmark", "--budget", "1h-cpu", "--repr", "both", "--out", str(tmp_path / "z")]
    )
    assert result.exit_code == 2 and "not repeated" in result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()


@pytest.mark.slow
def test_the_gpu_budget_runs_small_on_a_cpu(tmp_path):
    """The 10m-gpu plan end to end (both stores, the paper's networks), one step each on CPU."""
    out = tmp_path / "gpu-small"
    args = ["benchmark", "--budget", "10m-gpu", "--out", str(out), "-q"]
    args += ["--crystals", "12", "--steps", "1", "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["representations"]) == {"single", "repeated"}
    for rep in results["representations"].values():
        assert rep["train"]["steps"] == 1  # --steps wins over the crops' own steps
    reps = results["representations"]
    assert reps["single"]["config"]["latent_kind"] == "conv"
    assert reps["repeated"]["config"]["latent_kind"] == "conv"
    assert reps["single"]["config"]["background_prior"] == 0.99
    assert reps["repeated"]["config"]["background_prior"] == 0.97
    assert "paper (crops)" in (out / "results.md").read_text()


def test_the_old_verb_name_still_runs_and_says_the_new_one(tmp_path):
    result = CliRunner().invoke(main, ["benchmark", "--budget", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2  # the same options as `baseline`
    ok = CliRunner().invoke(main, ["benchmark", "--help"])
    assert ok.exit_code == 0 and "--budget" in ok.output
    listed = CliRunner().invoke(main, ["--help"])
    assert "baseline" in listed.output and " benchmark " not in listed.output
