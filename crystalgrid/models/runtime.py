"""Where and how the networks run: device, precision (bf16 autocast) and compilation.

``precision="auto"`` follows the processor: bf16 autocast on a CUDA GPU that supports it,
and on a CPU only where bf16 runs natively (AVX512-BF16 or AMX, see :func:`cpu_capability`);
fp32 everywhere else. On a CPU without bf16 instructions (AVX2, plain AVX-512) bf16 autocast is
emulated and much slower than fp32, so an explicit ``"bf16"`` there warns
(:class:`~crystalgrid.errors.PrecisionWarning`) and goes on; a device that cannot run bf16 at
all is an error.
"""

from __future__ import annotations

import contextlib
import os
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from crystalgrid.errors import ConfigError, PrecisionWarning

__all__ = [
    "PRECISIONS",
    "Runtime",
    "cpu_capability",
    "cpu_name",
    "cpu_native_bf16",
    "resolve_runtime",
]

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)

#: The precisions a configuration or a command may ask for.
PRECISIONS = ("auto", "fp32", "bf16")

#: CPU capabilities (as :func:`cpu_capability` names them) that run bf16 natively.
_NATIVE_BF16 = ("AMX", "AVX512-BF16")

#: How much slower bf16 autocast trains than fp32 where bf16 is emulated (the reference
#: model's VAE stage on a 2-core AVX2 AMD EPYC; docs/benchmarks.md).
EMULATED_BF16_SLOWDOWN = 18

#: oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) below bf16: with one of these set, oneDNN's
#: convolutions emulate bf16 whatever the processor has.
_ONEDNN_CAPS_AVX2 = ("sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2")
_ONEDNN_CAPS_WITHOUT_BF16 = (*_ONEDNN_CAPS_AVX2, "avx512_core", "avx512_core_vnni")
_ONEDNN_CAPS_WITHOUT_AMX = (
    *_ONEDNN_CAPS_WITHOUT_BF16,
    "avx512_core_bf16",
    "avx10_1_512",
    "avx512_core_fp16",
)


def _cpu_flag(name: str) -> bool:
    """A processor feature as torch's cpuinfo reports it (``False`` where torch cannot tell)."""
    probe = getattr(torch.cpu, f"_is_{name}_supported", None)
    if probe is None:
        return False
    try:
        return bool(probe())
    except RuntimeError:
        return False


def cpu_capability() -> str:
    """What this CPU runs natively, as far as training speed goes.

    One of ``"AMX"`` (AMX tiles, bf16 matrix units), ``"AVX512-BF16"``, ``"AVX512"``,
    ``"AVX2"``, or torch's own name for anything else (``"DEFAULT"``, ``"SVE256"``, ...).
    It is what torch reports (``torch.backends.cpu.get_cpu_capability()`` and its cpuinfo
    flags), lowered where the environment caps torch's kernels (``ATEN_CPU_CAPABILITY``,
    ``ONEDNN_MAX_CPU_ISA``); the same answer every time on one machine and environment.
    """
    aten = torch.backends.cpu.get_cpu_capability()
    if aten != "AVX512":
        return aten
    onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", ""))
    onednn_cap = onednn_cap.strip().lower()
    if onednn_cap in _ONEDNN_CAPS_AVX2:
        return "AVX2"
    if _cpu_flag("amx_tile") and onednn_cap not in _ONEDNN_CAPS_WITHOUT_AMX:
        return "AMX"
    if _cpu_flag("avx512_bf16") and onednn_cap not in _ONEDNN_CAPS_WITHOUT_BF16:
        return "AVX512-BF16"
    return "AVX512"


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def cpu_native_bf16() -> bool:
    """Whether bf16 autocast runs natively on this CPU (AVX512-BF16 or AMX)."""
    return cpu_capability() in _NATIVE_BF16


@dataclass(frozen=True)
class Runtime:
    """Where and how the step runs.

    Attributes:
        device: the torch device.
        amp_dtype: autocast dtype (``torch.bfloat16``) or ``None`` for fp32.
        compile: whether the step is compiled.
        cpu_capability: what the CPU runs natively (:func:`cpu_capability`); on a GPU, the
            host's.
    """

    device: torch.device
    amp_dtype: torch.dtype | None
    compile: bool
    cpu_capability: str = ""

    @property
    def memory_format(self) -> torch.memory_format:
        """Channels-last 3-D on a CPU (oneDNN's 3-D convolutions run faster on it, forward and
        backward), contiguous elsewhere (on a GPU it ran slower)."""
        return torch.channels_last_3d if self.device.type == "cpu" else torch.contiguous_format

    def place(self, module: ModuleT) -> ModuleT:
        """``module`` moved to this runtime's device and memory format (in place, returned)."""
        # Module.to takes memory_format (it converts the 4-D and 5-D parameters); torch's
        # type stubs leave the keyword out.
        return module.to(  # type: ignore[call-overload,no-any-return]
            device=self.device, memory_format=self.memory_format
        )

    @property
    def precision(self) -> str:
        """``"bf16"`` (autocast) or ``"fp32"``: the precision actually used."""
        return "bf16" if self.amp_dtype is not None else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of this runtime (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        """A short human-readable name, e.g. ``cpu (AVX2), fp32, eager`` or
        ``cuda (NVIDIA H100 80GB HBM3), bf16 autocast, compiled``."""
        if self.device.type == "cuda":
            name = f"cuda ({torch.cuda.get_device_name(self.device)})"
        elif self.device.type == "cpu" and self.cpu_capability:
            name = f"cpu ({self.cpu_capability})"
        else:
            name = self.device.type
        prec = "bf16 autocast" if self.amp_dtype is not None else "fp32"
        return f"{name}, {prec}, {'compiled' if self.compile else 'eager'}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts for logs and results: device, precision, CPU capability."""
        facts: dict[str, Any] = {
            "device": str(self.device),
            "precision": self.precision,
            "compiled": self.compile,
            "cpu_capability": self.cpu_capability,
        }
        if self.device.type == "cuda":
            facts["gpu"] = torch.cuda.get_device_name(self.device)
        return facts


def resolve_runtime(
    device: str = "auto", precision: str = "auto", compile: bool | None = None
) -> Runtime:
    """Turn the config's ``device``/``precision``/``compile`` into a :class:`Runtime`.

    ``device="auto"`` means CUDA when available. ``precision="auto"`` means bf16 autocast on a
    CUDA GPU with bf16 support and on a CPU that runs bf16 natively (:func:`cpu_native_bf16`),
    fp32 elsewhere. ``compile=None`` means ``torch.compile`` on CUDA only.

    Warns:
        PrecisionWarning: ``"bf16"`` on a CPU that only emulates it (it runs, many times
            slower than fp32).

    Raises:
        ConfigError: for an unknown device or precision, a CUDA device on a machine without
            one, or bf16 on a GPU that cannot run it.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of auto, fp32, bf16; got {precision!r}")
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ConfigError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    capability = cpu_capability()
    amp = None
    if dev.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if precision == "bf16" and not bf16_ok:
            raise ConfigError(
                f"precision bf16 asked for, but {torch.cuda.get_device_name(dev)} cannot run "
                "bf16; use fp32 or auto"
            )
        if precision == "bf16" or (precision == "auto" and bf16_ok):
            amp = torch.bfloat16
    elif dev.type == "cpu":
        native = capability in _NATIVE_BF16
        if precision == "bf16":
            amp = torch.bfloat16
            if not native:
                warnings.warn(
                    f"bf16 on this CPU ({capability}) is emulated, about "
                    f"{EMULATED_BF16_SLOWDOWN}x slower than fp32; precision auto or fp32 "
                    "runs at full speed",
                    PrecisionWarning,
                    stacklevel=2,
                )
        elif precision == "auto" and native:
            amp = torch.bfloat16
    elif precision == "bf16":
        amp = torch.bfloat16  # other devices (mps, xpu): autocast decides what it can run
    return Runtime(dev, amp, dev.type == "cuda" if compile is None else bool(compile), capability)
