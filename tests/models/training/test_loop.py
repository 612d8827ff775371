"""The trainer on an in-memory split: the loss goes down, checkpoints round-trip, resume."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crystalgrid.errors import ConfigError, CrystalgridError, PrecisionWarning  # noqa: E402
from crystalgrid.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from crystalgrid.models.nets.classes import ClassMap  # noqa: E402
from crystalgrid.models.nets.model import ReferenceModel  # noqa: E402
from crystalgrid.models.runtime import (  # noqa: E402
    cpu_capability,
    cpu_native_bf16,
    resolve_runtime,
)
from crystalgrid.models.training.loader import measure_loader, scan_species  # noqa: E402
from crystalgrid.models.training.loop import train  # noqa: E402


def _records(out_dir, kind):
    lines = (out_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture(scope="module")
def views(make_view):
    return make_view(8, seed=0), make_view(4, seed=1)


def test_a_few_steps_lower_the_loss(tiny_config, views, tmp_path):
    train_view, val_view = views
    config = tiny_config.with_overrides(epochs=9)  # 2 steps per epoch, 18 steps
    last = train(config, train_view, val_view, out_dir=tmp_path, quiet=True)
    steps = _records(tmp_path, "step")
    assert [r["step"] for r in steps] == list(range(1, 19))
    # The U-Net's head starts at the prior, so the cross-entropy starts low and falls within
    # these few steps; the reconstruction error of this tiny VAE moves by less than its
    # batch-to-batch noise in 18 steps (that it learns more than an empty grid is
    # tests/models/training/test_learning.py's, over 60 steps).
    first = np.mean([r["ce"] for r in steps[:4]])
    final = np.mean([r["ce"] for r in steps[-4:]])
    assert final < 0.9 * first, (first, final)
    epochs = _records(tmp_path, "epoch")
    assert len(epochs) == 9 and all(r["val_loss"] is not None for r in epochs)
    assert epochs[-1]["val_ce"] < 0.9 * epochs[0]["val_ce"]
    assert all(np.isfinite(r["loss"]) for r in steps)
    assert last == tmp_path / "last.pt" and (tmp_path / "best.pt").exists()
    start = _records(tmp_path, "start")[0]
    assert start["classes"] == [8, 26]
    assert start["runtime"] == f"cpu ({cpu_capability()}), fp32, eager"
    assert start["precision"] == "fp32" and start["cpu_capability"] == cpu_capability()


def test_checkpoint_round_trip_gives_identical_outputs(tiny_config, views, tmp_path):
    from crystalgrid.spec import GridSpec

    torch.manual_seed(0)
    config = tiny_config.with_overrides(classes=(8, 26))
    model = ReferenceModel(config, 30, ClassMap([8, 26]))
    batch = views[0][0:4]
    density = torch.from_numpy(batch["density"])
    species = torch.from_numpy(batch["species"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(density, species)["loss"].backward()  # move BatchNorm statistics and weights
    opt.step()
    model.eval()
    path = save_checkpoint(
        tmp_path / "m.pt", model, spec=GridSpec(), optimizer=opt, step=1, metadata={"a": 1}
    )
    ckpt = load_checkpoint(path)
    assert ckpt.config == config and ckpt.class_map == ClassMap([8, 26])
    assert ckpt.step == 1 and ckpt.metadata == {"a": 1} and ckpt.spec == GridSpec()
    assert not ckpt.model.training
    recon_a, z_a = model.reconstruct(density)
    recon_b, z_b = ckpt.model.reconstruct(density)
    assert torch.equal(recon_a, recon_b) and torch.equal(z_a, z_b)
    with torch.no_grad():
        assert torch.equal(model(density, species)["loss"], ckpt.model(density, species)["loss"])


def test_resume_continues_the_step_count_and_matches_an_uninterrupted_run(
    tiny_config, views, tmp_path
):
    train_view, _ = views
    config = tiny_config.with_overrides(epochs=2)  # 2 epochs x 2 steps
    straight = train(config, train_view, out_dir=tmp_path / "a", quiet=True)
    # Stop mid-epoch 2 (after step 3), then resume to the end.
    cut = train(config.with_overrides(max_steps=3), train_view, out_dir=tmp_path / "b", quiet=True)
    assert load_checkpoint(cut).step == 3 and load_checkpoint(cut).batch_in_epoch == 1
    resumed = train(config, train_view, out_dir=tmp_path / "b", resume=cut, quiet=True)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert (a.step, a.epoch, b.step, b.epoch) == (4, 2, 4, 2)
    for key, value in a.model.state_dict().items():
        assert torch.allclose(value.float(), b.model.state_dict()[key].float(), atol=1e-6), key
    steps = [r["step"] for r in _records(tmp_path / "b", "step")]
    assert steps == [1, 2, 3, 4]
    lines = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds == ["start", "step", "step", "epoch", "step", "stop", "start", "step", "epoch"]


def test_the_log_reader_forgives_only_a_torn_last_line(tiny_config, views, tmp_path):
    from crystalgrid.models.training.loop import read_log

    train_view, _ = views
    cut = train(tiny_config.with_overrides(max_steps=2), train_view, out_dir=tmp_path, quiet=True)
    log = tmp_path / "log.jsonl"
    whole = log.read_text()
    n = len(whole.splitlines())
    log.write_text(whole + '{"kind": "step", "st')  # killed while writing
    assert len(read_log(log)) == n
    # A resume drops the torn line and goes on.
    train(
        tiny_config.with_overrides(max_steps=3),
        train_view,
        out_dir=tmp_path,
        resume=cut,
        quiet=True,
    )
    lines = log.read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines].count("start") == 2  # no torn line left
    log.write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n")
    with pytest.raises(CrystalgridError, match="line 2 is not a log record"):
        read_log(log)


def test_a_resume_that_cannot_restore_the_gpu_random_state_says_so():
    from crystalgrid.models.checkpoint import restore_rng_state

    state = {"torch": torch.get_rng_state()}  # saved on a machine without a GPU
    assert restore_rng_state(state) is None  # resumed on a CPU: nothing is missing
    assert "no CUDA random state" in restore_rng_state(state, cuda=True)


def test_resume_refuses_a_different_architecture_and_fresh_runs_refuse_a_used_folder(
    tiny_config, views, tmp_path
):
    config = tiny_config.with_overrides(max_steps=1)
    last = train(config, views[0], out_dir=tmp_path, quiet=True)
    with pytest.raises(CrystalgridError, match="already holds a run"):
        train(config, views[0], out_dir=tmp_path, quiet=True)
    with pytest.raises(CrystalgridError, match="different latent_dim"):
        train(config.with_overrides(latent_dim=8), views[0], out_dir=tmp_path, resume=last)


def test_split_smaller_than_a_batch_is_a_user_error(tiny_config, views, tmp_path):
    with pytest.raises(CrystalgridError, match="fewer than one batch"):
        train(tiny_config.with_overrides(batch_size=64), views[0], out_dir=tmp_path, quiet=True)


def test_bf16_autocast_step_runs_on_cpu(tiny_config, views, tmp_path):
    # bf16 asked for runs on any CPU (emulated where the CPU lacks bf16, with a warning).
    config = tiny_config.with_overrides(precision="bf16", max_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        train(config, views[0], out_dir=tmp_path, quiet=True)
    (step,) = _records(tmp_path, "step")
    assert np.isfinite(step["loss"])
    start = _records(tmp_path, "start")[0]
    assert start["runtime"] == f"cpu ({cpu_capability()}), bf16 autocast, eager"
    assert start["precision"] == "bf16"


def test_runtime_resolution_without_a_gpu():
    rt = resolve_runtime()
    if not torch.cuda.is_available():
        native = torch.bfloat16 if cpu_native_bf16() else None
        assert (rt.device.type, rt.amp_dtype, rt.compile) == ("cpu", native, False)
        with pytest.raises(CrystalgridError, match="no CUDA GPU"):
            resolve_runtime("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        assert resolve_runtime("cpu", "bf16", True).amp_dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="precision"):
        resolve_runtime("cpu", "fp16")


def test_scan_species_and_loader_throughput(views):
    assert scan_species(views[0]) == ClassMap([8, 26])
    stats = measure_loader(views[0], batch_size=2, n_batches=3)
    assert stats["batches"] == 3 and stats["samples"] == 6 and stats["samples_per_s"] > 0


def test_a_read_error_in_the_prefetch_thread_reaches_the_caller(tiny_config, views, tmp_path):
    class Broken:
        spec = views[0].spec

        def __len__(self):
            return 8

        def iter_batches(self, batch_size, *, shuffle=False, seed=0, drop_last=False):
            if shuffle:  # the training pass (the class scan reads without shuffling)
                raise OSError("chunk 3 is unreadable")
            yield from views[0].iter_batches(batch_size)

    with pytest.raises(OSError, match="chunk 3 is unreadable"):
        train(tiny_config, Broken(), out_dir=tmp_path, quiet=True)


def test_cosine_schedule_and_constant():
    from crystalgrid.models.config import TrainConfig
    from crystalgrid.models.training.schedule import learning_rate

    cosine = TrainConfig(lr=1e-3, lr_schedule="cosine")
    assert learning_rate(cosine, 0, 101) == pytest.approx(1e-3)
    assert learning_rate(cosine, 50, 101) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert learning_rate(cosine, 100, 101) == pytest.approx(1e-5)
    assert learning_rate(cosine, 500, 101) == pytest.approx(1e-5)  # past the end: the floor
    rates = [learning_rate(cosine, k, 101) for k in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert learning_rate(TrainConfig(lr=1e-3), 50, 101) == 1e-3
    with pytest.raises(CrystalgridError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")


def test_a_checkpoint_without_output_activation_loads_as_relu(tiny_config, tmp_path):
    """Checkpoints from before the setting existed had the paper's ReLU output."""
    from crystalgrid.spec import GridSpec

    config = tiny_config.with_overrides(classes=(8, 26), output_activation="relu")
    model = ReferenceModel(config, 30, ClassMap([8, 26]))
    path = save_checkpoint(tmp_path / "old.pt", model, spec=GridSpec())
    raw = torch.load(path, weights_only=True)
    del raw["config"]["output_activation"]
    torch.save(raw, path)
    loaded = load_checkpoint(path)
    assert loaded.config.output_activation == "relu"
    assert isinstance(loaded.model.vae.decoder[-1], torch.nn.ReLU)


def test_the_test_double_keeps_the_view_contract(make_view):
    from crystalgrid.contracts import check_view

    check_view(make_view(7, seed=2), batch_size=3)


def test_a_staged_run_trains_the_vae_then_only_the_unet(tiny_config, views, tmp_path, monkeypatch):
    """First stage: MSE + KL only; second: the VAE frozen (weights and BatchNorm statistics)
    and the U-Net trained on its reconstructions, each stage with its own schedule."""
    import shutil

    import crystalgrid.models.training.loop as train_module

    saved = {}
    original = train_module.save_checkpoint

    def keep_each(path, model, **kwargs):  # a copy of every checkpoint, by step
        original(path, model, **kwargs)
        saved[kwargs["step"]] = shutil.copy(path, tmp_path / f"step{kwargs['step']}.pt")

    monkeypatch.setattr(train_module, "save_checkpoint", keep_each)
    config = tiny_config.with_overrides(
        epochs=6, vae_stage=0.5, unet_input="both", lr_schedule="cosine", checkpoint_every=6
    )
    train(config, views[0], views[1], out_dir=tmp_path / "run", quiet=True)
    steps = _records(tmp_path / "run", "step")
    assert [("ce" in r) for r in steps] == [False] * 6 + [True] * 6
    lrs = [r["lr"] for r in steps]
    assert lrs[0] == pytest.approx(config.lr) and lrs[6] == pytest.approx(config.lr)
    assert lrs[5] == pytest.approx(config.lr / 100) and lrs[11] == pytest.approx(config.lr / 100)
    assert all(r["loss"] == pytest.approx(r["ce"]) for r in steps[6:])
    boundary, final = load_checkpoint(saved[6]), load_checkpoint(saved[12])
    vae_0, vae_1 = boundary.model.vae.state_dict(), final.model.vae.state_dict()
    assert all(torch.equal(vae_0[k], vae_1[k]) for k in vae_0)  # running stats included
    unet_0, unet_1 = boundary.model.unet.state_dict(), final.model.unet.state_dict()
    assert any(not torch.equal(unet_0[k], unet_1[k]) for k in unet_0)


def test_the_staged_schedule_restarts_at_the_boundary():
    from crystalgrid.models.config import TrainConfig
    from crystalgrid.models.training.schedule import learning_rate, stage_boundary

    config = TrainConfig(lr=1e-3, lr_schedule="cosine", vae_stage=0.25)
    assert stage_boundary(config, 100) == 25 and stage_boundary(TrainConfig(), 100) == 0
    assert learning_rate(config, 24, 100) == pytest.approx(1e-5)
    assert learning_rate(config, 25, 100) == pytest.approx(1e-3)
    assert learning_rate(config, 99, 100) == pytest.approx(1e-5)
    with pytest.raises(CrystalgridError, match="vae_stage"):
        TrainConfig(vae_stage=1.0)
    with pytest.raises(CrystalgridError, match="augment"):
        TrainConfig(augment="rotate")


def test_without_input_norm_the_raw_amplitudes_reach_the_first_convolutions(tiny_config):
    config = tiny_config.with_overrides(input_norm=False, classes=(8, 26))
    model = ReferenceModel(config, 30, ClassMap([8, 26]))
    assert isinstance(model.vae.encoder[1], torch.nn.Identity)
    assert isinstance(model.unet.down[0][1], torch.nn.Identity)
    assert model.unet.down[0][0].bias is not None
    # In training, the first layer's output for a sample no longer depends on its batch-mates
    # (with the paper's BatchNorm it does: they set the statistics it is divided by).
    x = torch.rand(2, 1, 30, 30, 30)
    louder = torch.cat([x[:1], 5 * x[1:]])
    for norm, depends in ((False, False), (True, True)):
        config = tiny_config.with_overrides(input_norm=norm, classes=(8, 26))
        first = ReferenceModel(config, 30, ClassMap([8, 26])).vae.encoder[:3].train()
        same = torch.allclose(first(x)[0], first(louder)[0])
        assert same is not depends


def test_the_factorised_head_gives_normalised_class_scores_and_learns(tiny_config, views, tmp_path):
    config = tiny_config.with_overrides(head="factorised", epochs=9, classes=(8, 26))
    model = ReferenceModel(config, 30, ClassMap([8, 26])).eval()
    density = torch.from_numpy(views[0][0:2]["density"])
    _, scores = model.reconstruct_scores(density)
    assert scores.shape == (2, 3, 30, 30, 30)
    torch.testing.assert_close(torch.logsumexp(scores, dim=1), torch.zeros(2, 30, 30, 30))
    # The head starts at the prior: about 1% of a voxel's probability on "an atom".
    atom = 1 - scores[:, 0].exp()
    assert float(atom.mean()) == pytest.approx(0.01, rel=0.5)
    train(config, views[0], views[1], out_dir=tmp_path, quiet=True)
    steps = _records(tmp_path, "step")
    first = np.mean([r["ce"] for r in steps[:4]])
    final = np.mean([r["ce"] for r in steps[-4:]])
    assert final < 0.9 * first, (first, final)


def test_a_failed_checkpoint_write_keeps_the_previous_file(tiny_config, tmp_path):
    """A checkpoint is streamed to a temporary file: a write that fails half-way leaves the
    previous checkpoint whole and no temporary file behind."""
    from crystalgrid.models.checkpoint import atomic_save
    from crystalgrid.spec import GridSpec

    model = ReferenceModel(tiny_config.with_overrides(classes=(8, 26)), 30, ClassMap([8, 26]))
    path = save_checkpoint(tmp_path / "last.pt", model, spec=GridSpec())
    before = path.read_bytes()
    unpicklable = {"weights": torch.zeros(1000), "rows": (i for i in range(3))}
    with pytest.raises(TypeError, match="pickle"):
        atomic_save(unpicklable, path)
    assert path.read_bytes() == before
    assert load_checkpoint(path).config == model.config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
