"""What this machine's CPU can do: the facts speed decisions and benchmark records need."""

import os
import platform


def cpu_flags():
    """The CPU feature flags of this machine (Linux), an empty set elsewhere."""
    return set(_cpuinfo_field("flags", "").split())


def cpu_description():
    """CPU model name, usable cores and the SIMD flags that change which code is fastest."""
    return {
        "model": _cpuinfo_field("model name", platform.processor() or platform.machine()),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))),
    }


def cpu_summary():
    """One line naming the CPU for a printed figure, e.g. "AMD EPYC, 2 cores, AVX-512 BF16"."""
    cpu = cpu_description()
    flags = set(cpu["flags"])
    simd = ("AMX" if any(f.startswith("amx") for f in flags) else "AVX-512 BF16" if "avx512_bf16" in flags
            else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2")
    return f"{cpu['model']}, {cpu['cores']} cores, {simd}"


def _cpuinfo_field(name, default):
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default
