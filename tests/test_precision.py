"""One decision of precision for every device (lora_helpers.env.precision_profile), tested with mocked hardware."""

import pytest
import torch

from lora_helpers import env
from lora_helpers.errors import CourseError

CPU_BF16_NATIVE = env.cpu_bf16_native  # cached: cleared around every test


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv(env.ENV_PRECISION, raising=False)
    CPU_BF16_NATIVE.cache_clear()
    yield
    CPU_BF16_NATIVE.cache_clear()


def timer(fp32_s, bf16_s):
    return lambda dtype: fp32_s if dtype == torch.float32 else bf16_s


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((8, 0), True), ((8, 9), True), ((9, 0), True)],
                         ids=["T4", "A100", "L4", "H100"])
def test_gpu_bf16_only_where_native(monkeypatch, capability, native):
    def is_bf16_supported(including_emulation=True):
        return capability[0] >= 8 or including_emulation  # recent torch reports emulated bf16 as "supported"

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    profile = env.precision_profile("cuda")
    assert profile.bf16 is native and profile.fp16 is (not native)
    assert env.pick_dtype("cuda") == (torch.bfloat16 if native else torch.float16)
    if not native:
        assert "T4" in profile.reason and "không giả lập" in profile.reason


def test_cpu_without_bf16_flags_stays_fp32_without_timing():
    def must_not_time(dtype):
        raise AssertionError("no timing needed: the OS says there is no bf16")

    check = env.cpu_bf16_native(flags=frozenset({"avx", "avx2", "fma"}), timer=must_not_time)
    assert not check.native and "giả lập" in check.evidence


@pytest.mark.parametrize("flags", [frozenset({"avx512f", "avx512_bf16"}), frozenset({"amx_bf16"}), None],
                         ids=["avx512_bf16", "amx", "flags-unknown"])
def test_cpu_bf16_needs_flags_and_a_faster_matmul(flags):
    fast = env.cpu_bf16_native(flags=flags, timer=timer(4.0, 1.0))
    assert fast.native and "4.0 lần" in fast.evidence
    env.cpu_bf16_native.cache_clear()
    slow = env.cpu_bf16_native(flags=flags, timer=timer(1.0, 1.1))  # flags say yes, the clock says no
    assert not slow.native


def test_cpu_profile_follows_the_check(monkeypatch):
    monkeypatch.setattr(env, "cpu_bf16_native", lambda: env.CpuBf16(True, "đo: nhanh gấp 4.0 lần"))
    profile = env.precision_profile("cpu")
    assert profile.bf16 and profile.autocast_dtype == torch.bfloat16 and "4.0" in profile.describe()
    monkeypatch.setattr(env, "cpu_bf16_native", lambda: env.CpuBf16(False, "giả lập"))
    profile = env.precision_profile("cpu")
    assert profile.compute == "fp32" and not profile.bf16 and not profile.fp16
    with profile.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_environment_variable_forces_the_profile(monkeypatch):
    monkeypatch.setattr(env, "cpu_bf16_native", lambda: env.CpuBf16(True, "nhanh"))
    monkeypatch.setenv(env.ENV_PRECISION, "fp32")
    assert env.precision_profile("cpu").compute == "fp32"
    monkeypatch.setenv(env.ENV_PRECISION, "bf16")
    profile = env.precision_profile("cpu")
    assert profile.bf16
    with profile.autocast():
        assert torch.is_autocast_enabled("cpu")
    monkeypatch.setenv(env.ENV_PRECISION, "half")
    with pytest.raises(CourseError, match="auto, fp32, bf16"):
        env.precision_profile("cpu")


def test_print_environment_says_which_precision_and_why(capsys):
    env.print_environment()
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("độ chính xác"))
    assert "trên cpu:" in line and len(line.split(":", 1)[1].strip()) > 10


@pytest.mark.parametrize("capability, compute", [((7, 5), "fp16"), ((8, 0), "bf16"), ((8, 9), "bf16"), ((9, 0), "bf16")],
                         ids=["T4", "A100", "L4", "H100"])
def test_lessons_train_and_compare_in_fp32_on_every_gpu(monkeypatch, capability, compute):
    """A mocked GPU of each generation: the opener loads what lessons train and compare in float32 (fp32 master
    weights under fp16/bf16 autocast: no 'Attempting to unscale FP16 gradients' on a T4, no AdamW updates rounded
    away in bf16); the T4 never gets bf16, and only inference may load in the GPU's low-precision dtype."""
    from lora_helpers import lesson

    def is_bf16_supported(including_emulation=True):
        return capability[0] >= 8 or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(env, "pick_device", lambda: "cuda")
    opened = lesson.start_lesson(seed=0, show=False)
    assert opened.device == "cuda" and opened.dtype == torch.float32
    assert opened.precision.compute == compute
    assert opened.inference_dtype == (torch.float16 if compute == "fp16" else torch.bfloat16)
    assert "trọng số fp32" in opened.precision.describe()
    profile = env.precision_profile("cuda")
    assert (profile.bf16, profile.fp16) == (compute == "bf16", compute == "fp16")


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16)], ids=["T4", "A100"])
def test_4bit_compute_dtype_on_gpus_is_native_bf16_or_fp16(monkeypatch, capability, dtype):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",   # emulated bf16 counts as "supported" in recent torch
                        lambda including_emulation=True: capability[0] >= 8 or including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    assert env.precision_profile("cuda").compute_dtype == dtype
    monkeypatch.setenv(env.ENV_PRECISION, "fp32")
    assert env.precision_profile("cuda").compute_dtype == torch.float32


@pytest.mark.parametrize("native, dtype", [(True, torch.bfloat16), (False, torch.float32)], ids=["avx512_bf16", "avx2"])
def test_4bit_compute_dtype_on_cpu_follows_the_bf16_check(monkeypatch, native, dtype):
    monkeypatch.setattr(env, "cpu_bf16_native", lambda: env.CpuBf16(native, "mock"))
    assert env.precision_profile("cpu").compute_dtype == dtype
    monkeypatch.setenv(env.ENV_PRECISION, "fp32")
    assert env.precision_profile("cpu").compute_dtype == torch.float32
    assert env.precision_profile("mps").compute_dtype == torch.float32
