"""Portable CPU numerics: the same floating-point kernels on every x86-64 CPU (issue 22).

torch picks its CPU kernels by instruction set (AVX-512 here, AVX2 on many laptops and CI
runners), and so do MKL's GEMMs and oneDNN's convolutions. Different kernels round differently,
and a training run amplifies the last-bit differences. The main job's M^0 vs M^2 table then
differs in the third decimal between machines: val AP_S change -0.0094 with AVX-512 kernels
against -0.0064 with AVX2 ones, same commit, same seed. Run-to-run it is bit-identical.

`apply_portable_numerics()` runs in `train.py` / `eval.py` *before torch is imported*. It sets
the variables that each library reads once, when it first computes:
- `ATEN_CPU_CAPABILITY=avx2`: torch's vectorised kernels;
- `MKL_CBWR=AVX2`: MKL's conditional numerical reproducibility, on its AVX2 code path;
- `ONEDNN_MAX_CPU_ISA=AVX2`: oneDNN (convolutions).

AVX2 is the common baseline of x86-64 CPUs since 2013-2015. The switch only applies where
/proc/cpuinfo lists `avx2` and `fma`: elsewhere (ARM, macOS, older CPUs) the native kernels stay,
and numbers from such machines are not bit-comparable. CUDA kernels are untouched.
`REGION_SAM3_NUMERICS=native` turns it off, e.g. to use AVX-512 speed on a CPU-only cluster.
A variable that the user already set is kept as is.

The thread count matters too: the main job at 1 vs 2 torch threads differed in one entry by
1e-4 (`,STRICT` in `MKL_CBWR` did not remove that), so `experiment=main` pins `num_threads: 1`.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import MutableMapping
from pathlib import Path

log = logging.getLogger(__name__)

SWITCH = "REGION_SAM3_NUMERICS"  # portable (default) | native
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
REQUIRED_FLAGS = frozenset({"avx2", "fma"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The x86 feature flags of the first CPU in `cpuinfo` (empty where it cannot be read)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def apply_portable_numerics(
    environ: MutableMapping[str, str] | None = None,
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> dict[str, str]:
    """Set `PORTABLE_ENV` in `environ` (default `os.environ`) unless `REGION_SAM3_NUMERICS`
    is `native` or the CPU lacks AVX2/FMA. Returns the variables that are in effect (set now
    or by the user); empty when the native kernels stay.

    Raises:
        ValueError: `REGION_SAM3_NUMERICS` is neither `portable` nor `native`.
    """
    environ = os.environ if environ is None else environ
    mode = environ.get(SWITCH, "portable")
    if mode not in ("portable", "native"):
        raise ValueError(f"{SWITCH}={mode!r}: expected 'portable' or 'native'")
    if mode == "native":
        return {}
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if not x86 or not cpu_flags(cpuinfo) >= REQUIRED_FLAGS:
        return {}
    if environ is os.environ and "torch" in sys.modules:
        # Each library may already have read its variable: the effect is not guaranteed.
        log.warning("portable numerics requested after torch was imported; kernels may be "
                    "the CPU's native ones (import region_sam3.utils.numerics first)")
    for key, value in PORTABLE_ENV.items():
        environ.setdefault(key, value)
    return {key: environ[key] for key in PORTABLE_ENV}


def numerics_summary() -> str:
    """One line for the run log: torch's kernel set and the variables that chose it."""
    import torch

    chosen = {k: os.environ[k] for k in (SWITCH, *PORTABLE_ENV) if k in os.environ}
    return f"CPU kernels: {torch.backends.cpu.get_cpu_capability()} ({chosen or 'native'})"
