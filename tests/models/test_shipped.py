"""Shipped models: weights-only bf16 exports, loadable by name wherever a checkpoint is taken."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

import crystalgrid.models.checkpoint as checkpoint_module  # noqa: E402
from crystalgrid.cli import main  # noqa: E402
from crystalgrid.errors import CrystalgridError  # noqa: E402
from crystalgrid.models.checkpoint import (  # noqa: E402
    SHIPPED,
    export_checkpoint,
    load_checkpoint,
    read_checkpoint,
    resolve_checkpoint,
)
from crystalgrid.models.training.loop import train  # noqa: E402


@pytest.fixture
def trained(make_view, tiny_config, tmp_path):
    view = make_view(4, seed=0)
    config = tiny_config.with_overrides(epochs=1, prefetch=0)
    return view, train(config, view, out_dir=tmp_path / "run", quiet=True)


def test_an_export_is_bf16_weights_only_and_reconstructs_like_the_original(trained, tmp_path):
    view, last = trained
    exported = export_checkpoint(last, tmp_path / "small.pt")
    raw = read_checkpoint(exported)
    assert raw["optimizer"] == {} and raw["rng"] == {}
    floats = [v for v in raw["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.bfloat16 for v in floats)
    assert exported.stat().st_size < 0.7 * last.stat().st_size
    density = torch.from_numpy(view[0:2]["density"])
    full, _ = load_checkpoint(last).model.reconstruct(density)
    small, _ = load_checkpoint(exported).model.reconstruct(density)
    scale = float(full.abs().max())
    assert float((full - small).abs().max()) < 0.05 * scale
    # It loads for evaluation, but cannot be resumed.
    with pytest.raises(CrystalgridError, match="weights-only export"):
        train(load_checkpoint(exported).config, view, out_dir=tmp_path / "r", resume=exported)


def test_a_shipped_name_resolves_and_an_unknown_name_is_one_line(trained, tmp_path, monkeypatch):
    _, last = trained
    weights = tmp_path / "weights"
    export_checkpoint(last, weights / "tiny.pt")
    monkeypatch.setattr(checkpoint_module, "_WEIGHTS", weights)
    monkeypatch.setitem(SHIPPED, "tiny-test", "tiny.pt")
    assert resolve_checkpoint("tiny-test") == weights / "tiny.pt"
    assert load_checkpoint("tiny-test").path == weights / "tiny.pt"
    result = CliRunner().invoke(main, ["evaluate", "no-such-model", "--data", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "no checkpoint file or shipped model named 'no-such-model'" in lines[0]
    )
    assert "baseline-1h-cpu-single" in lines[0]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_model_loads_without_the_trainer(name):
    code = (
        "import sys; from crystalgrid.models.checkpoint import load_checkpoint; "
        f"ckpt = load_checkpoint({name!r}); "
        "assert 'crystalgrid.models.training.loop' not in sys.modules; "
        "print(ckpt.step, ckpt.metadata.get('representation'))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    step, representation = out.stdout.split()
    assert int(step) > 0 and representation in name
