"""Precision follows the processor: bf16 only where it runs natively, fp32 elsewhere."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from crystalgrid.errors import ConfigError, PrecisionWarning  # noqa: E402
from crystalgrid.models import runtime as rt  # noqa: E402


@pytest.fixture
def cpu(monkeypatch):
    """``cpu(aten, bf16=..., amx=...)`` makes torch report that processor."""

    def fake(aten: str, *, bf16: bool = False, amx: bool = False) -> None:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: aten)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)

    return fake


@pytest.mark.parametrize(
    ("aten", "bf16", "amx", "expected", "native"),
    [
        ("AVX2", False, False, "AVX2", False),
        ("AVX512", False, False, "AVX512", False),
        ("AVX512", True, False, "AVX512-BF16", True),
        ("AVX512", True, True, "AMX", True),
        ("DEFAULT", False, False, "DEFAULT", False),
        # ATen kept to AVX2 (ATEN_CPU_CAPABILITY=avx2) on a CPU that has bf16: not native.
        ("AVX2", True, True, "AVX2", False),
    ],
)
def test_capability_and_native_bf16(cpu, aten, bf16, amx, expected, native):
    cpu(aten, bf16=bf16, amx=amx)
    assert rt.cpu_capability() == expected
    assert rt.cpu_native_bf16() is native
    assert rt.cpu_capability() == expected  # the same answer every time


def test_a_onednn_cap_lowers_the_capability(cpu, monkeypatch):
    cpu("AVX512", bf16=True, amx=True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert rt.cpu_capability() == "AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert rt.cpu_capability() == "AVX512-BF16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert rt.cpu_capability() == "AVX512"


def test_auto_is_fp32_on_an_avx2_cpu_and_bf16_where_native(cpu):
    cpu("AVX2")
    fp32 = rt.resolve_runtime("cpu", "auto")
    assert fp32.amp_dtype is None and fp32.precision == "fp32"
    assert fp32.describe() == "cpu (AVX2), fp32, eager"
    assert fp32.to_dict() == {
        "device": "cpu",
        "precision": "fp32",
        "compiled": False,
        "cpu_capability": "AVX2",
    }
    cpu("AVX512", bf16=True)
    native = rt.resolve_runtime("cpu", "auto")
    assert native.amp_dtype == torch.bfloat16 and native.precision == "bf16"
    assert native.describe() == "cpu (AVX512-BF16), bf16 autocast, eager"


def test_bf16_where_emulated_warns_once_in_one_line_and_goes_on(cpu):
    cpu("AVX2")
    with pytest.warns(PrecisionWarning, match=r"emulated, about \d+x slower than fp32") as seen:
        runtime = rt.resolve_runtime("cpu", "bf16")
    assert runtime.amp_dtype == torch.bfloat16
    assert len(seen) == 1 and "\n" not in str(seen[0].message)
    assert "AVX2" in str(seen[0].message)
    cpu("AVX512", amx=True, bf16=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native: no warning
        assert rt.resolve_runtime("cpu", "bf16").amp_dtype == torch.bfloat16
        assert rt.resolve_runtime("cpu", "fp32").amp_dtype is None


def test_unknown_precision_and_missing_gpu_are_errors():
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16"):
        rt.resolve_runtime("cpu", "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            rt.resolve_runtime("cuda", "auto")


def test_bf16_on_a_gpu_without_it_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(ConfigError, match="Tesla V100 cannot run bf16"):
        rt.resolve_runtime("cuda", "bf16")
    assert rt.resolve_runtime("cuda", "auto", compile=False).amp_dtype is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert rt.resolve_runtime("cuda", "auto", compile=False).amp_dtype == torch.bfloat16


def test_cpu_name_is_a_line_of_text():
    name = rt.cpu_name()
    assert name and "\n" not in name
