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


def _cpuinfo_field(name, default):
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default
