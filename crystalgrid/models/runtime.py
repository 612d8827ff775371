"""Where and how the networks run: device, precision (bf16 autocast) and compilation."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from crystalgrid.errors import CrystalgridError

__all__ = ["Runtime", "resolve_runtime"]


@dataclass(frozen=True)
class Runtime:
    """Where and how the step runs.

    Attributes:
        device: the torch device.
        amp_dtype: autocast dtype (``torch.bfloat16``) or ``None`` for fp32.
        compile: whether the step is compiled.
    """

    device: torch.device
    amp_dtype: torch.dtype | None
    compile: bool

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of this runtime (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        """A short human-readable name, e.g. ``cuda (NVIDIA H100 80GB HBM3), bf16, compiled``."""
        name = self.device.type
        if self.device.type == "cuda":
            name += f" ({torch.cuda.get_device_name(self.device)})"
        prec = "bf16 autocast" if self.amp_dtype is not None else "fp32"
        return f"{name}, {prec}, {'compiled' if self.compile else 'eager'}"


def resolve_runtime(
    device: str = "auto", precision: str = "auto", compile: bool | None = None
) -> Runtime:
    """Turn the config's ``device``/``precision``/``compile`` into a :class:`Runtime`.

    ``"auto"`` means CUDA when available, bf16 autocast on CUDA (fp32 on CPU), and
    ``torch.compile`` on CUDA only.

    Raises:
        CrystalgridError: for a CUDA device on a machine without one, or an unknown precision.
    """
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise CrystalgridError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CrystalgridError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    if precision == "auto":
        amp = torch.bfloat16 if dev.type == "cuda" else None
    elif precision == "bf16":
        amp = torch.bfloat16
    elif precision == "fp32":
        amp = None
    else:
        raise CrystalgridError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    return Runtime(dev, amp, dev.type == "cuda" if compile is None else bool(compile))
