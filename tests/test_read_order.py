"""Epoch orders: chunk-wise shuffles that are permutations, local, and shared fairly."""

from __future__ import annotations

import numpy as np
import pytest

from crystalgrid.read_order import divide, epoch_order, share, span_edges


def test_span_edges_are_multiples_clipped_to_the_range():
    np.testing.assert_array_equal(span_edges(5, 100, 24), [5, 24, 48, 72, 96, 100])
    np.testing.assert_array_equal(span_edges(0, 48, 24), [0, 24, 48])
    np.testing.assert_array_equal(span_edges(7, 7, 24), [7])
    with pytest.raises(ValueError, match="span"):
        span_edges(0, 10, 0)


@pytest.mark.parametrize(("start", "stop", "span", "window"), [(5, 100, 24, 2), (0, 1000, 96, 4)])
def test_a_shuffled_order_is_a_local_seeded_permutation(start, stop, span, window):
    order = epoch_order(start, stop, span, shuffle=True, seed=(1, 0), window=window)
    assert sorted(order.tolist()) == list(range(start, stop))
    np.testing.assert_array_equal(
        order, epoch_order(start, stop, span, shuffle=True, seed=(1, 0), window=window)
    )
    assert not np.array_equal(
        order, epoch_order(start, stop, span, shuffle=True, seed=(1, 1), window=window)
    )
    assert not np.array_equal(order, np.arange(start, stop))
    # Local: every stretch of window * span samples touches at most 2 * window spans
    # (a stretch can straddle two windows), so a reader keeps few spans decoded.
    spans = order // span
    for a in range(0, len(order), window * span):
        assert len(set(spans[a : a + window * span].tolist())) <= 2 * window
    # ...and a shuffled batch mixes several spans, not one chunk in order.
    assert len(set(spans[:24].tolist())) > 1


def test_an_order_in_sequence_is_the_range():
    np.testing.assert_array_equal(epoch_order(3, 9, 4, shuffle=False), np.arange(3, 9))


@pytest.mark.parametrize(("n", "parts"), [(10, 3), (12, 4), (5, 8), (100, 1)])
def test_shares_are_equal_and_cover_every_sample(n, parts):
    order = np.arange(n) * 10
    padded = [share(order, p, parts) for p in range(parts)]
    assert len({len(s) for s in padded}) == 1 and len(padded[0]) == -(-n // parts)
    assert set(np.concatenate(padded).tolist()) == set(order.tolist())
    dropped = [share(order, p, parts, drop_last=True) for p in range(parts)]
    assert len({len(s) for s in dropped}) == 1 and len(dropped[0]) == n // parts
    together = np.concatenate(dropped)
    assert len(set(together.tolist())) == len(together)  # nothing twice
    with pytest.raises(ValueError, match="part"):
        share(order, parts, parts)


@pytest.mark.parametrize(("n", "parts", "multiple"), [(100, 3, 24), (100, 2, 1), (5, 3, 24)])
def test_worker_parts_hold_every_sample_once_in_whole_batches(n, parts, multiple):
    order = np.arange(n)
    pieces = [divide(order, p, parts, multiple=multiple) for p in range(parts)]
    np.testing.assert_array_equal(np.concatenate(pieces), order)
    assert all(len(p) % multiple == 0 for p in pieces[:-1])
