"""A dataset view as a ``torch.utils.data.Dataset`` (imported only when torch is wanted)."""

from __future__ import annotations

from typing import Any, Protocol

from crystalgrid.errors import CrystalgridError

try:
    import torch
    from torch.utils.data import Dataset as _TorchDataset
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise CrystalgridError("to_torch() needs PyTorch: pip install 'crystalgrid[models]'") from exc

__all__ = ["TorchView"]

_FIELDS = ("density", "species", "atom_positions", "atom_numbers", "transform", "material_id")


class _SampleView(Protocol):
    """What :class:`TorchView` reads: a split's length and its samples by position."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


class TorchView(_TorchDataset):
    """Items are dicts of tensors: density float32 (B, B, B), species int64 (B, B, B), ...

    Indexing reads through the view's one-chunk cache, so a sequential sampler decodes each
    chunk once; with ``shuffle=True`` in a DataLoader every item decodes a whole chunk (see
    ``DatasetView.iter_batches`` for the fast shuffled path).
    """

    def __init__(self, view: _SampleView, fields: tuple[str, ...]) -> None:
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; choose from {_FIELDS}")
        self.view = view
        self.fields = tuple(fields)

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.view[index]
        item: dict[str, Any] = {"index": sample["index"]}
        for name in self.fields:
            value = sample[name]
            if name == "species":
                item[name] = torch.from_numpy(value.astype("int64"))
            elif name == "material_id":
                item[name] = value
            else:
                item[name] = torch.from_numpy(value.copy())
        return item
