"""Pictures: non-empty PNGs of the stated pixel size, from the library and from
`crystalgrid show` (with and without a checkpoint); no pyplot state is touched."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import crystalgrid
from crystalgrid.cli import main
from crystalgrid.models.plots import (
    SHOW_SIZE,
    SHOW_SIZE_WITH_RECONSTRUCTION,
    SPACING_SIZE,
    show_sample,
    spacing_plot,
)
from crystalgrid.models.scoring.generated import spacing_distribution, structural_validity
from crystalgrid.spec import GridSpec

matplotlib_image = pytest.importorskip("matplotlib.image")


def _png(path) -> np.ndarray:
    assert path.stat().st_size > 1000
    img = matplotlib_image.imread(path)
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return img


def _size(img: np.ndarray) -> tuple[int, int]:
    return img.shape[1], img.shape[0]  # (width, height)


@pytest.fixture(scope="module")
def sample(store):
    return crystalgrid.open_dataset(store).split("test")[0]


def test_show_sample_sizes(sample, tmp_path):
    spec = GridSpec()
    img = _png(show_sample(sample, spec, tmp_path / "a.png"))
    assert _size(img) == SHOW_SIZE == (1500, 330)
    recon = np.clip(sample["density"] + 0.05, 0, None)
    img = _png(
        show_sample(
            sample,
            spec,
            tmp_path / "b.png",
            reconstruction=recon,
            predicted_species=sample["species"],
        )
    )
    assert _size(img) == SHOW_SIZE_WITH_RECONSTRUCTION == (1800, 640)
    img = _png(show_sample(sample, spec, tmp_path / "sub" / "c.png", dpi=50))
    assert _size(img) == (750, 165)


def test_show_an_empty_sample(tmp_path):
    spec = GridSpec()
    empty = {
        "density": np.zeros(spec.shape, np.float32),
        "species": np.zeros(spec.shape, np.uint8),
    }
    path = show_sample(empty, spec, tmp_path / "e.png", reconstruction=empty["density"])
    assert _size(matplotlib_image.imread(path)) == SHOW_SIZE_WITH_RECONSTRUCTION


def test_spacing_plot_size(tmp_path):
    sets = [np.array([[0.0, 0, 0], [1, 0, 0], [0, 3, 0]]), np.array([[5.0, 5, 5], [5, 5, 6]])]
    hist = spacing_distribution(sets)
    img = _png(
        spacing_plot(
            hist,
            spacing_distribution(sets[:1]),
            tmp_path / "s.png",
            validity=structural_validity(sets),
        )
    )
    assert _size(img) == SPACING_SIZE == (640, 400)
    # samples without any pair of atoms still give a picture (a legend line says so)
    lone = spacing_distribution([np.zeros((1, 3))])
    assert _size(_png(spacing_plot(lone, hist, tmp_path / "t.png"))) == SPACING_SIZE


def test_pyplot_is_never_imported():
    code = (
        "import sys, numpy as np\n"
        "from crystalgrid.models.plots import show_sample\n"
        "from crystalgrid.spec import GridSpec\n"
        "s = GridSpec(); g = np.zeros(s.shape, np.float32); g[15, 15, 15] = 1\n"
        "show_sample({'density': g, 'species': (g > 0).astype(np.uint8) * 8}, s,\n"
        "            sys.argv[1])\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", code, f"{tmp}/x.png"], check=True)


def test_show_verb(store, sample, tmp_path):
    out = tmp_path / "show.png"
    result = CliRunner().invoke(
        main, ["show", str(store), sample["material_id"], "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert _size(_png(out)) == SHOW_SIZE
    result = CliRunner().invoke(main, ["show", str(store), "0", "--out", str(tmp_path / "i.png")])
    assert result.exit_code == 0, result.output


def test_show_verb_with_a_checkpoint(store, sample, checkpoint, tmp_path):
    ckpt = checkpoint
    out = tmp_path / "pair.png"
    args = ["show", str(store), str(sample["index"]), "--out", str(out), "--checkpoint", str(ckpt)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert _size(_png(out)) == SHOW_SIZE_WITH_RECONSTRUCTION


def test_show_verb_user_errors(store, tmp_path):
    out = ["--out", str(tmp_path / "x.png")]
    result = CliRunner().invoke(main, ["show", str(tmp_path / "none.zarr"), "0", *out])
    assert result.exit_code == 2 and "dataset store not found" in result.stderr
    result = CliRunner().invoke(main, ["show", str(store), "99999", *out])
    assert result.exit_code == 2 and "out of range" in result.stderr
    result = CliRunner().invoke(
        main, ["show", str(store), "0", *out, "--checkpoint", str(tmp_path / "no.pt")]
    )
    assert result.exit_code == 2 and "checkpoint not found" in result.stderr
