"""Portable numerics: the AVX2 kernel set is chosen before torch loads, unless turned off."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from region_sam3.utils.numerics import PORTABLE_ENV, SWITCH, apply_portable_numerics, cpu_flags

X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.fixture
def avx2_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n")
    return path


@pytest.mark.skipif(not X86, reason="the switch applies to x86-64 only")
def test_portable_sets_the_three_variables_and_keeps_the_users(avx2_cpuinfo):
    env = {"MKL_CBWR": "COMPATIBLE"}
    applied = apply_portable_numerics(env, avx2_cpuinfo)
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert env["MKL_CBWR"] == "COMPATIBLE"  # set by the user: kept
    assert applied == {k: env[k] for k in PORTABLE_ENV}


def test_native_or_a_cpu_without_avx2_leaves_the_environment_alone(tmp_path, avx2_cpuinfo):
    env = {SWITCH: "native"}
    assert apply_portable_numerics(env, avx2_cpuinfo) == {} and env == {SWITCH: "native"}
    old_cpu = tmp_path / "old"
    old_cpu.write_text("flags\t: fpu sse2 avx\n")
    assert cpu_flags(old_cpu) == {"fpu", "sse2", "avx"}
    env = {}
    assert apply_portable_numerics(env, old_cpu) == {} and env == {}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_a_bad_switch_value_names_the_variable(avx2_cpuinfo):
    with pytest.raises(ValueError, match="REGION_SAM3_NUMERICS='fast'"):
        apply_portable_numerics({SWITCH: "fast"}, avx2_cpuinfo)


def _capability(**env: str) -> str:
    code = ("from region_sam3.utils.numerics import apply_portable_numerics\n"
            "apply_portable_numerics()\n"
            "import torch\nprint(torch.backends.cpu.get_cpu_capability())")
    clean = {k: v for k, v in os.environ.items() if k not in (SWITCH, *PORTABLE_ENV)}
    result = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.mark.skipif(not (X86 and cpu_flags() >= {"avx2", "fma"}), reason="needs an AVX2 CPU")
def test_train_py_preamble_selects_torchs_avx2_kernels_and_native_turns_it_off():
    assert _capability() == "AVX2"
    native = _capability(**{SWITCH: "native"})
    assert native == ("AVX512" if "avx512f" in cpu_flags() else "AVX2")
