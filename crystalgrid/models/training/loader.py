"""Feeding the networks: batches of grids read ahead in a thread, as tensors on the device.

A split is anything :class:`~crystalgrid.contracts.ViewLike` (what
``crystalgrid.open_dataset(path).split(name)`` returns), read with
:func:`~crystalgrid.contracts.iter_view`.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from crystalgrid.contracts import ViewLike, iter_view
from crystalgrid.errors import CrystalgridError
from crystalgrid.models.nets.classes import ClassMap
from crystalgrid.models.runtime import Runtime

__all__ = [
    "TRAIN_FIELDS",
    "Prefetcher",
    "device_batches",
    "measure_loader",
    "scan_species",
    "to_tensors",
]

#: The arrays the trainer reads.
TRAIN_FIELDS = ("density", "species")


def to_tensors(batch: dict[str, Any], pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's density (float32) and species (uint8) as CPU tensors, pinned when ``pin``."""
    density = torch.from_numpy(np.ascontiguousarray(batch["density"], dtype=np.float32))
    species = torch.from_numpy(np.ascontiguousarray(batch["species"], dtype=np.uint8))
    if pin:
        density, species = density.pin_memory(), species.pin_memory()
    return density, species


class Prefetcher:
    """Reads batches from an iterator in a daemon thread, ``depth`` ahead."""

    _DONE = object()

    def __init__(self, source: Iterator[Any], convert: Callable[[Any], Any], depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source, convert), daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterator[Any], convert: Callable[[Any], Any]) -> None:
        try:
            for item in source:
                if not self._put(convert(item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer and re-raised there
            self._put(exc)
            return
        self._put(self._DONE)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def device_batches(
    source: Iterator[dict[str, Any]], runtime: Runtime, prefetch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(density, species)`` tensors on the runtime's device, read ``prefetch`` batches
    ahead in a thread (0: in this thread); pinned and copied asynchronously on CUDA."""
    pin = runtime.device.type == "cuda"
    dev = runtime.device

    def move(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return pair[0].to(dev, non_blocking=pin), pair[1].to(dev, non_blocking=pin)

    if prefetch == 0:
        for batch in source:
            yield move(to_tensors(batch, pin))
        return
    fetcher = Prefetcher(source, lambda b: to_tensors(b, pin), prefetch)
    try:
        for pair in fetcher:
            yield move(pair)
    finally:
        fetcher.close()


def measure_loader(
    view: ViewLike,
    batch_size: int = 128,
    *,
    n_batches: int = 50,
    shuffle: bool = True,
    seed: int = 0,
    to_torch: bool = True,
) -> dict[str, float]:
    """How fast a split delivers training batches (the loader alone, no model).

    Args:
        view: the split.
        batch_size: samples per batch.
        n_batches: batches to time (after one untimed warm-up batch).
        shuffle, seed: as in training.
        to_torch: include the numpy -> torch conversion (pinned when CUDA is present).

    Returns:
        ``{"samples_per_s", "batches", "samples", "seconds"}``.
    """
    pin = to_torch and torch.cuda.is_available()
    it = iter_view(
        view, batch_size, fields=TRAIN_FIELDS, shuffle=shuffle, seed=seed, drop_last=True
    )
    first = next(it, None)
    if first is None:
        raise CrystalgridError(f"the split has fewer than {batch_size} samples")
    samples = batches = 0
    t0 = time.perf_counter()
    for batch in it:
        if to_torch:
            to_tensors(batch, pin)
        samples += len(batch["density"])
        batches += 1
        if batches >= n_batches:
            break
    seconds = time.perf_counter() - t0
    return {
        "samples_per_s": samples / seconds if seconds > 0 else math.inf,
        "batches": batches,
        "samples": samples,
        "seconds": seconds,
    }


def scan_species(view: ViewLike, *, batch_size: int = 256) -> ClassMap:
    """The class map of the species present in a split's species grids (one pass).

    Raises:
        CrystalgridError: if the split has no atom at all.
    """
    seen = np.zeros(256, dtype=bool)
    for batch in iter_view(view, batch_size, fields=("species",)):
        seen[np.unique(np.asarray(batch["species"]))] = True
    seen[0] = False
    if not seen.any():
        raise CrystalgridError("the training split has no atoms in its species grids")
    return ClassMap(np.flatnonzero(seen))
