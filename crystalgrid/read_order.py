"""The order a view's samples are read in: chunk-wise shuffles, and shares for ranks and workers.

Shuffling a chunked store sample by sample decodes a whole chunk for every sample. The
shuffled order here is local instead:

1. the view is cut into *spans*, runs of whole chunks that are read in one call (the first
   and last span are clipped to the view);
2. the spans are permuted;
3. the samples of each ``window`` consecutive spans of that permutation are permuted together.

So a stretch of the order (a batch) holds samples of up to ``window`` spans drawn from anywhere
in the view, every sample comes exactly once, and the order is a function of the seed alone.
A reader keeps at most ``window`` decoded spans in memory (~10 MB each for the default spans
of 96 samples of 30^3 float32 grids).

:func:`share` cuts an order for one of several consumers (ranks of a multi-GPU job, and the
DataLoader workers of each rank), as ``torch.utils.data.DistributedSampler`` does for ranks:
contiguous equal parts, the order's first samples repeated to fill the last part unless
``drop_last``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["divide", "epoch_order", "share", "span_edges"]


def span_edges(start: int, stop: int, span: int) -> np.ndarray:
    """Edges of the spans of samples ``start:stop``: multiples of ``span``, clipped to the range.

    Returns (spans + 1,) int64: span ``k`` is ``edges[k]:edges[k + 1]``.
    """
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    if stop <= start:
        return np.array([start], dtype=np.int64)
    inner = np.arange((start // span + 1) * span, stop, span, dtype=np.int64)
    return np.concatenate([[start], inner, [stop]]).astype(np.int64)


def epoch_order(
    start: int,
    stop: int,
    span: int,
    *,
    shuffle: bool,
    seed: int | Sequence[int] = 0,
    window: int = 4,
) -> np.ndarray:
    """The store indices of samples ``start:stop`` in the order of one epoch.

    Args:
        start, stop: the view's range of samples in the store.
        span: samples per read (a multiple of the chunk size).
        shuffle: False gives ``start, start + 1, ...``.
        seed: the order is a function of it (e.g. the epoch, or ``(seed, epoch)``).
        window: spans whose samples are permuted together.

    Returns:
        (stop - start,) int64.
    """
    if not shuffle:
        return np.arange(start, stop, dtype=np.int64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    rng = np.random.default_rng(seed)
    edges = span_edges(start, stop, span)
    spans = rng.permutation(len(edges) - 1)
    parts = []
    for w in range(0, len(spans), window):
        members = np.concatenate(
            [np.arange(edges[k], edges[k + 1], dtype=np.int64) for k in spans[w : w + window]]
        )
        parts.append(members[rng.permutation(len(members))])
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def share(order: np.ndarray, part: int, parts: int, *, drop_last: bool = False) -> np.ndarray:
    """Part ``part`` of ``parts`` contiguous, equally long parts of ``order``.

    Parts hold ``ceil(n / parts)`` samples, the order's first samples repeated to fill the last
    ones, or ``floor(n / parts)`` with ``drop_last`` (the last ``n % parts`` samples unused).
    With one part the order is returned whole.
    """
    if parts < 1 or not 0 <= part < parts:
        raise ValueError(f"part must be in 0..{parts - 1} of parts >= 1, got {part} of {parts}")
    n = len(order)
    if parts == 1:
        return order
    size = n // parts if drop_last else math.ceil(n / parts)
    if not drop_last and size * parts > n and n:
        order = np.concatenate([order, np.resize(order, size * parts - n)])
    return order[part * size : (part + 1) * size]


def divide(order: np.ndarray, part: int, parts: int, *, multiple: int = 1) -> np.ndarray:
    """Part ``part`` of ``parts`` contiguous parts of ``order`` that together hold every sample
    once: sizes differ by at most ``multiple``, and every part but the last holds a multiple of
    ``multiple`` samples (pass the batch size: then only the last part ends in a short batch)."""
    if parts < 1 or not 0 <= part < parts:
        raise ValueError(f"part must be in 0..{parts - 1} of parts >= 1, got {part} of {parts}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    units = math.ceil(len(order) / multiple)
    cuts = [min(len(order), multiple * (units * k // parts)) for k in range(parts + 1)]
    return order[cuts[part] : cuts[part + 1]]
