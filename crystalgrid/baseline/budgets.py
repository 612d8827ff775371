"""The baseline budgets, read from ``budgets.json`` beside this module (package data).

A budget fixes the work of one ``crystalgrid baseline`` run: a shipped training configuration
(:func:`crystalgrid.models.config.shipped_config`) with the fields it changes, per-representation
changes, and the work around the training (crystals, samples per crystal, what is scored). What
a budget reaches on which machine is in its card under ``models/``, not here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from importlib import resources
from typing import Any

from crystalgrid.errors import ConfigError, NotFoundError
from crystalgrid.models.config import TrainConfig, shipped_config

__all__ = ["BUDGETS", "Budget", "load_budgets"]


@dataclass(frozen=True)
class Budget:
    """The work of one baseline run.

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
            densities (``None``: all, ``0``: skipped; a crop takes several times a cell's
            time, docs/benchmarks.md).
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


def budget_from_dict(name: str, entry: Mapping[str, Any]) -> Budget:
    """A :class:`Budget` from its ``budgets.json`` entry.

    Raises:
        ConfigError: an entry that is not an object, an unknown or missing key, a list that
            is not one, or a configuration that is not shipped.
    """
    if not isinstance(entry, Mapping):
        raise ConfigError(f"budget {name!r} must be a JSON object")
    settable = {f.name for f in fields(Budget)} - {"name", "train"}
    unknown = sorted(set(entry) - settable - {"config", "config_overrides"})
    if unknown:
        raise ConfigError(f"budget {name!r}: unknown keys {', '.join(unknown)}")
    missing = [k for k in ("config", "description", "representations") if k not in entry]
    if missing:
        raise ConfigError(f"budget {name!r} lacks {', '.join(missing)}")
    for key in ("representations", "split_fractions"):
        if key in entry and not isinstance(entry[key], list):
            raise ConfigError(f"budget {name!r}: {key} must be a list")
    try:
        config = shipped_config(str(entry["config"]))
    except NotFoundError as exc:
        raise ConfigError(f"budget {name!r}: {exc}") from None
    train = config.with_overrides(**dict(entry.get("config_overrides") or {}))
    train = train.with_overrides(notes={**train.notes, "budget": name})
    plain = {
        k: v
        for k, v in entry.items()
        if k
        not in ("config", "config_overrides", "overrides", "representations", "split_fractions")
    }
    extra: dict[str, Any] = {}
    if "split_fractions" in entry:
        extra["split_fractions"] = tuple(float(x) for x in entry["split_fractions"])
    return Budget(
        name=name,
        train=train,
        representations=tuple(entry["representations"]),
        overrides={k: dict(v) for k, v in (entry.get("overrides") or {}).items()},
        **plain,
        **extra,
    )


@cache
def load_budgets() -> dict[str, Budget]:
    """Every shipped budget by name, in the file's order."""
    text = resources.files("crystalgrid.baseline").joinpath("budgets.json").read_text()
    data = json.loads(text)
    return {name: budget_from_dict(name, entry) for name, entry in data.items() if name[0] != "_"}


#: The shipped budgets by name (read once, at import).
BUDGETS: dict[str, Budget] = load_budgets()
