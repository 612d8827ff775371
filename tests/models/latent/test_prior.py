"""The learned latent prior: it learns a multimodal, spatially correlated latent grid that
N(0, 1) does not, saves beside its model, refuses another model's file, and `sample` draws
from it by default."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from crystalgrid.cli import main  # noqa: E402
from crystalgrid.errors import BadInputError, IntegrityError  # noqa: E402
from crystalgrid.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from crystalgrid.models.latent.draws import random_draws  # noqa: E402
from crystalgrid.models.latent.prior import (  # noqa: E402
    LatentPrior,
    fit_prior,
    latent_nll,
    load_prior,
    prior_for,
    prior_path,
    save_prior,
    train_on_latents,
    vae_fingerprint,
)
from crystalgrid.models.nets.classes import ClassMap  # noqa: E402
from crystalgrid.models.nets.model import ReferenceModel  # noqa: E402
from crystalgrid.spec import GridSpec  # noqa: E402

SHAPE = (1, 4, 4, 4)


def _atoms_like(n: int, seed: int) -> torch.Tensor:
    """Latent grids like a crystal's: each cell -1 (empty) or +3 (an atom), about 2 atoms a
    grid and never two in neighbouring cells."""
    rng = np.random.default_rng(seed)
    grids = np.full((n, *SHAPE[1:]), -1.0)
    for g in grids:
        for _ in range(2):
            i, j, k = rng.integers(0, 4, 3)
            if g[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2, max(k - 1, 0) : k + 2].max() < 0:
                g[i, j, k] = 3.0
    return torch.from_numpy(grids.reshape(n, -1)).float()


def test_the_prior_learns_atoms_and_their_spacing():
    mu = _atoms_like(512, seed=0)
    sigma = torch.full_like(mu, 0.1)
    torch.manual_seed(0)
    prior = LatentPrior(SHAPE, width=16, depth=3, components=4)
    before = latent_nll(prior, mu, sigma)
    train_on_latents(prior, mu, sigma, steps=600, batch_size=32, lr=5e-3)
    after = latent_nll(prior, mu, sigma)
    held_out = _atoms_like(128, seed=1)
    # It learns: far better than untrained and than N(0, 1) on grids it never saw.
    normal = float(-torch.distributions.Normal(0, 1).log_prob(held_out).sum(1).mean())
    assert after < before - 50
    assert latent_nll(prior, held_out, torch.full_like(held_out, 0.1)) < normal - 50

    draws = prior.sample(400, generator=torch.Generator().manual_seed(0))
    atoms = (draws > 1.0).reshape(-1, *SHAPE[1:]).numpy()
    per_grid = atoms.reshape(400, -1).sum(1)
    real = (mu > 1.0).reshape(len(mu), -1).sum(1).float().mean().item()
    assert abs(per_grid.mean() - real) < 0.5  # N(0, 1) would give ~0.1 of 64 cells: 8.7
    # Neighbours are in different groups, drawn one given the other: few touching atoms.
    touching = (atoms[:, 1:] & atoms[:, :-1]).sum() + (atoms[:, :, 1:] & atoms[:, :, :-1]).sum()
    assert touching / max(atoms.sum(), 1) < 0.1


def test_draws_are_seeded_and_respect_the_temperature():
    prior = LatentPrior(SHAPE, width=8, depth=2, components=2).eval()
    a = prior.sample(5, generator=torch.Generator().manual_seed(3))
    b = prior.sample(5, generator=torch.Generator().manual_seed(3))
    assert a.shape == (5, 64) and torch.equal(a, b)
    cold = prior.sample(200, generator=torch.Generator().manual_seed(3), temperature=0.0)
    warm = prior.sample(200, generator=torch.Generator().manual_seed(3), temperature=1.0)
    assert cold.std() < warm.std()
    assert prior.log_prob(a).shape == (5,) and torch.isfinite(prior.log_prob(a)).all()


def test_bad_shapes_and_strides_are_refused():
    with pytest.raises(BadInputError, match="cubic latent grid"):
        LatentPrior((1, 4, 4, 2))
    with pytest.raises(BadInputError, match="stride must be >= 1"):
        LatentPrior(SHAPE, stride=0)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_cells_drawn_together_are_stride_cells_apart(stride):
    prior = LatentPrior((1, 6, 6, 6), width=4, depth=1, stride=stride)
    assert prior.n_groups == stride**3
    cells = torch.argwhere(prior.group == 0)
    gaps = (cells[:, None] - cells[None]).abs().amax(-1)
    assert gaps[gaps > 0].min() == stride


@pytest.fixture(scope="module")
def grid_checkpoint(tmp_path_factory, tiny_checkpoint_at):
    """An untrained tiny model with a latent grid (8^3 cells, one channel)."""
    folder = tmp_path_factory.mktemp("grid-ckpt")
    return tiny_checkpoint_at(folder / "grid.pt", latent_dim=512, latent_kind="conv")


def test_fit_save_load_and_refuse_another_model(grid_checkpoint, store, checkpoint, tmp_path):
    import crystalgrid

    ckpt = load_checkpoint(grid_checkpoint)
    dataset = crystalgrid.open_dataset(store)
    fit = fit_prior(
        ckpt, dataset.split("train"), dataset.split("val"), steps=3, batch_size=4, width=8, depth=2
    )
    assert fit.vae_sha256 == vae_fingerprint(ckpt)
    assert fit.record["steps"] == 3 and np.isfinite(fit.record["train_nll"])
    path = save_prior(fit, tmp_path / "grid.prior.pt")
    again = load_prior(path, vae_sha256=vae_fingerprint(ckpt))
    z = torch.zeros(2, 512)
    assert torch.allclose(again.prior.log_prob(z), fit.prior.log_prob(z))

    other = ReferenceModel(ckpt.config, 30, ClassMap(ckpt.config.classes))
    foreign = save_checkpoint(tmp_path / "other.pt", other, spec=GridSpec())
    with pytest.raises(IntegrityError, match="fitted to another model"):
        load_prior(path, vae_sha256=vae_fingerprint(load_checkpoint(foreign)))
    (tmp_path / "junk.prior.pt").write_bytes(b"not a prior")
    with pytest.raises(BadInputError, match="cannot read the latent prior"):
        load_prior(tmp_path / "junk.prior.pt")
    with pytest.raises(BadInputError, match="latent grid"):
        fit_prior(load_checkpoint(checkpoint), dataset.split("train"), steps=1)
    assert prior_path(tmp_path / "run.pt") == tmp_path / "run.prior.pt"


def test_a_prior_of_the_posterior_means(grid_checkpoint, store, monkeypatch):
    """spread=0 fits the posterior means: the latents the prior sees are the encoder's means."""
    import crystalgrid
    from crystalgrid.models.latent import prior as prior_module

    ckpt = load_checkpoint(grid_checkpoint)
    dataset = crystalgrid.open_dataset(store)
    seen = {}
    real = prior_module.train_on_latents

    def spy(prior, mu, sigma, **kw):
        seen["sigma"] = sigma
        return real(prior, mu, sigma, **kw)

    monkeypatch.setattr(prior_module, "train_on_latents", spy)
    fit = fit_prior(ckpt, dataset.split("train"), steps=2, batch_size=4, width=8, depth=2, spread=0)
    assert fit.record["spread"] == 0 and not seen["sigma"].any()
    fit_prior(ckpt, dataset.split("train"), steps=1, batch_size=4, width=8, depth=2, spread=0.5)
    assert seen["sigma"].any()
    with pytest.raises(BadInputError, match=r"spread must be in 0\.\.1"):
        fit_prior(ckpt, dataset.split("train"), steps=1, spread=2)


def test_fit_prior_verb_then_sample_draws_from_it(grid_checkpoint, store, tmp_path):
    ckpt_file = tmp_path / "model.pt"
    ckpt_file.write_bytes(grid_checkpoint.read_bytes())
    assert prior_for(load_checkpoint(ckpt_file)) is None
    result = CliRunner().invoke(
        main, ["fit-prior", str(ckpt_file), "--data", str(store), "--steps", "2", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "prior fitted" in result.output and (tmp_path / "model.prior.pt").is_file()
    ckpt = load_checkpoint(ckpt_file)
    assert prior_for(ckpt) is not None
    learned = random_draws(ckpt, 2, seed=1)
    normal = random_draws(ckpt, 2, seed=1, prior="normal")
    assert learned.prior == "learned" and normal.prior == "normal"
    assert not np.array_equal(learned.z, normal.z)

    out = tmp_path / "draws"
    args = ["sample", str(ckpt_file), "-n", "2", "--out", str(out), "--no-grids", "--no-cif"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert json.loads((out / "report.json").read_text())["prior"] == "learned"
    args += ["--prior", "normal"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert json.loads((out / "report.json").read_text())["prior"] == "normal"

    bare = tmp_path / "bare.pt"
    bare.write_bytes(grid_checkpoint.read_bytes())
    refused = CliRunner().invoke(
        main, ["sample", str(bare), "-n", "1", "--out", str(out), "--prior", "learned"]
    )
    assert refused.exit_code == 2 and "no learned prior" in refused.stderr
    shipped = CliRunner().invoke(
        main, ["fit-prior", "baseline-1h-cpu-single", "--data", str(store), "--steps", "1"]
    )
    assert shipped.exit_code == 2 and "give --out" in shipped.stderr
