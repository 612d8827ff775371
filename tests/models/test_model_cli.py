"""`crystalgrid train` and `crystalgrid evaluate`: user errors are one line and exit 2; the
verbs run end to end over a stand-in for ``crystalgrid.open_dataset``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import crystalgrid
from crystalgrid.cli import main

torch = pytest.importorskip("torch")


class _Dataset:
    def __init__(self, views):
        self.views = views
        self.spec = views["train"].spec
        self.representation = "single"
        self.attrs = {}

    def split(self, name):
        if name not in self.views:
            raise ValueError(f"unknown split {name!r}")
        return self.views[name]


@pytest.fixture
def fake_store(tmp_path, make_view, monkeypatch):
    store = tmp_path / "store.zarr"
    store.mkdir()
    views = {
        "train": make_view(8, seed=0),
        "val": make_view(4, seed=1),
        "test": make_view(4, seed=2),
    }
    monkeypatch.setattr(crystalgrid.dataset, "open_dataset", lambda path: _Dataset(views))
    return store


def _one_line_error(result, text):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crystalgrid: error: ") and text in lines[0]


def test_help_lists_the_verbs_and_does_not_import_torch():
    out = CliRunner().invoke(main, ["--help"]).output
    assert "train" in out and "evaluate" in out
    code = "import sys, crystalgrid.cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_checkpoint_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "nope.pt"), "--data", "x"])
    _one_line_error(result, "checkpoint not found")


def test_not_a_checkpoint_is_one_line_exit_2(tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a checkpoint")
    result = CliRunner().invoke(main, ["evaluate", str(bogus), "--data", str(tmp_path)])
    _one_line_error(result, "not a readable checkpoint")


def test_missing_store_is_one_line_exit_2(tmp_path):
    args = ["train", "--data", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "run")]
    _one_line_error(CliRunner().invoke(main, args), "dataset store not found")


def test_missing_config_file_is_one_line_exit_2(tmp_path, fake_store):
    args = ["train", "--data", str(fake_store), "--out", str(tmp_path / "r"), "--config", "no.json"]
    _one_line_error(CliRunner().invoke(main, args), "configuration file not found")


def test_without_torch_the_verb_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    args = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    _one_line_error(CliRunner().invoke(main, args), "pip install 'crystalgrid[models]'")


def test_train_then_evaluate_end_to_end(tmp_path, fake_store, tiny_config):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**tiny_config.to_dict(), "_comment": "a tiny CPU run"}))
    run = tmp_path / "run"
    args = ["train", "--data", str(fake_store), "--config", str(config), "--out", str(run)]
    result = CliRunner().invoke(main, [*args, "--max-steps", "2", "--quiet", "--no-compile"])
    assert result.exit_code == 0, result.output
    assert "last checkpoint:" in result.output
    ckpt = run / "last.pt"
    # resume with the checkpoint's own config, one more step
    more = ["train", "--data", str(fake_store), "--out", str(run), "--resume", str(ckpt)]
    result = CliRunner().invoke(main, [*more, "--epochs", "2", "--max-steps", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    from crystalgrid.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt)
    assert loaded.step == 3 and loaded.metadata["representation"] == "single"

    out = tmp_path / "scores.json"
    evaluate = ["evaluate", str(ckpt), "--data", str(fake_store), "--out", str(out), "--quiet"]
    result = CliRunner().invoke(main, [*evaluate, "--markdown"])
    assert result.exit_code == 0, result.output
    head = "| score | this model | decoding ceiling (true species grid) | paper (single cells) |"
    assert head in result.output
    scores = json.loads(out.read_text())
    assert scores["n_samples"] == 4 and scores["data"]["split"] == "test"
    assert scores["checkpoint"]["step"] == 3

    result = CliRunner().invoke(
        main, ["evaluate", str(ckpt), "--data", str(fake_store), "--limit", "2"]
    )
    assert result.exit_code == 0 and json.loads(result.stdout)["n_samples"] == 2

    on_truth = [*evaluate[:4], "--input", "truth", "--limit", "2", "--markdown"]
    result = CliRunner().invoke(main, on_truth)
    assert result.exit_code == 0, result.output
    assert "on the true densities" in result.output
    both = ["evaluate", "--predictions", str(out), "--data", str(fake_store), "--input", "truth"]
    _one_line_error(CliRunner().invoke(main, both), "--input and --threshold are for a CHECKPOINT")

    bad = CliRunner().invoke(
        main, ["evaluate", str(ckpt), "--data", str(fake_store), "--split", "x"]
    )
    _one_line_error(bad, "no split 'x'")


def test_bf16_on_a_cpu_that_emulates_it_warns_in_one_line_and_trains(
    tmp_path, fake_store, tiny_config, monkeypatch
):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_config.to_dict()))
    run = tmp_path / "run"
    args = ["train", "--data", str(fake_store), "--config", str(config), "--out", str(run)]
    result = CliRunner().invoke(main, [*args, "--max-steps", "1", "--precision", "bf16", "--quiet"])
    assert result.exit_code == 0, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("crystalgrid: warning: bf16 on this CPU (AVX2) is emulated")
    start = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert (start["precision"], start["cpu_capability"]) == ("bf16", "AVX2")
    # Evaluation follows the processor, not the precision the model was trained in.
    scores = tmp_path / "scores.json"
    evaluate = ["evaluate", str(run / "last.pt"), "--data", str(fake_store), "--limit", "1"]
    result = CliRunner().invoke(main, [*evaluate, "--out", str(scores), "--quiet"])
    assert result.exit_code == 0 and not result.stderr, result.output
    assert json.loads(scores.read_text())["runtime"] == "cpu (AVX2), fp32, eager"


def test_an_unknown_precision_is_exit_2(tmp_path, fake_store, tiny_config):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({**tiny_config.to_dict(), "precision": "fp16"}))
    args = ["train", "--data", str(fake_store), "--config", str(config), "--out", str(tmp_path)]
    _one_line_error(CliRunner().invoke(main, args), "precision must be one of")
    flag = ["train", "--data", str(fake_store), "--out", str(tmp_path), "--precision", "fp16"]
    assert CliRunner().invoke(main, flag).exit_code == 2


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """A real store: the embedded demo structures, one single-cell sample each."""
    out = tmp_path_factory.mktemp("demo") / "single.zarr"
    args = ["build", "--repr", "single", "--out", str(out), "--samples", "1", "--chunk", "8", "-q"]
    result = CliRunner().invoke(main, args)
    if result.exit_code != 0:
        pytest.fail(f"demo build failed: {result.output}")
    return out


def test_train_and_evaluate_on_a_real_store(demo_store, tmp_path, tiny_config):
    """The verbs over crystalgrid.open_dataset on a store made by `crystalgrid build`."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_config.to_dict()))
    run = tmp_path / "run"
    args = ["train", "--data", str(demo_store), "--config", str(config), "--out", str(run)]
    result = CliRunner().invoke(main, [*args, "--max-steps", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    start = records[0]
    assert start["metadata"]["representation"] == "single" and len(start["classes"]) > 10
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2, 3]
    assert records[-1]["kind"] == "stop" and records[-1]["val_loss"] is not None

    out = tmp_path / "scores.json"
    evaluate = ["evaluate", str(run / "last.pt"), "--data", str(demo_store), "--limit", "16"]
    result = CliRunner().invoke(main, [*evaluate, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["n_samples"] == 16 and scores["n_true_atoms"] > 16
    # decoding the true species grids places (almost) every true atom within 0.5 Å
    assert scores["ceiling"]["true_within_radius"] > 0.95
    assert scores["ceiling"]["species_exact"] == 1.0


def test_the_command_line_offers_the_library_s_u_net_decoders():
    from crystalgrid.cli import _common as common
    from crystalgrid.models.scoring.evaluate import UNET_DECODERS

    assert set(common.UNET_DECODERS) == set(UNET_DECODERS)
