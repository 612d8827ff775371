"""A training run's log: ``log.jsonl`` (one JSON record a line, appended as the run goes), the
running means of the loss terms between records, and the line printed at an epoch's end."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from crystalgrid.errors import CrystalgridError
from crystalgrid.fileio import write_atomic
from crystalgrid.jsonio import jsonable

__all__ = ["RunLog", "RunningMeans", "epoch_line", "finite", "read_log"]


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``log.jsonl``.

    A last line cut short (the process killed while writing it) is left out; any other line
    that is not a JSON record means the log was damaged or edited, and is an error.

    Raises:
        CrystalgridError: naming the file and the line.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break  # a torn last line
            raise CrystalgridError(
                f"{path}: line {number} is not a log record ({exc.msg}); the log is damaged"
            ) from None
        if not isinstance(record, dict):
            raise CrystalgridError(f"{path}: line {number} is not a log record")
        records.append(record)
    return records


class RunLog:
    """Append-only JSONL log; on resume, records past the checkpoint's step are dropped.

    Args:
        path: the ``log.jsonl``.
        keep_until_step: resuming from this step (``None``: a new run, any old log removed).
    """

    def __init__(self, path: Path, *, keep_until_step: int | None) -> None:
        self.path = path
        if keep_until_step is not None and path.exists():
            kept = [
                json.dumps(record, allow_nan=False, default=jsonable)
                for record in read_log(path)
                if record.get("step", 0) <= keep_until_step
            ]
            write_atomic(path, "".join(line + "\n" for line in kept).encode())
        elif keep_until_step is None and path.exists():
            path.unlink()
        self._fh = open(path, "a")  # noqa: SIM115 - closed by close()

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (flushed: a reader sees it at once)."""
        self._fh.write(json.dumps(record, allow_nan=False, default=jsonable) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def finite(x: float) -> float | None:
    """``x``, or ``None`` where it is not finite (the log is strict JSON)."""
    return x if math.isfinite(x) else None


class RunningMeans:
    """Sums of the loss terms over steps (kept as tensors: no device sync per step).

    Each term is averaged over the steps that reported it (a VAE-only step has no ``ce``).
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.steps = 0
        self.t0 = time.perf_counter()

    def add(self, out: dict[str, torch.Tensor]) -> None:
        for key, value in out.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().float()
            self.counts[key] = self.counts.get(key, 0) + 1
        self.steps += 1

    def means(self, prefix: str = "") -> dict[str, float | None]:
        """The mean of each term (``None`` where not finite)."""
        return {f"{prefix}{k}": finite(float(v) / self.counts[k]) for k, v in self.sums.items()}

    def samples_per_s(self, batch_size: int) -> float | None:
        seconds = time.perf_counter() - self.t0
        return self.steps * batch_size / seconds if seconds > 0 else None


def epoch_line(record: dict[str, Any]) -> str:
    """``epoch 3, step 120, train_loss 0.01, val_loss 0.02, 41 samples/s``."""
    parts = [
        f"{record['kind']} {record['epoch'] + (record['kind'] == 'epoch')}",
        f"step {record['step']}",
    ]
    for key in ("train_loss", "val_loss", "val_acc_atoms"):
        if record.get(key) is not None:
            parts.append(f"{key} {record[key]:.4g}")
    if record.get("samples_per_s"):
        parts.append(f"{record['samples_per_s']:.0f} samples/s")
    return ", ".join(parts)
