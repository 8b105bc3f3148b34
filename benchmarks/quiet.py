"""How much CPU other processes took while a benchmark's command ran.

A ratio between two frameworks means something only on a quiet machine, and
not all frameworks suffer alike when it is not (`busy_machine.py`,
docs/performance.md "A busy machine"). So each timed command runs
through `run_measured`, which reads the machine's busy CPU time from
`/proc/stat` around it and subtracts the command's own (and this process's)
CPU time; what is left, divided by the wall time, is how many cores other
processes kept busy meanwhile.

    >>> import sys
    >>> run, others = run_measured([sys.executable, "-c", "print(1)"])
    >>> run.stdout, others < 0.5
    ('1\\n', True)
"""

import os
import resource
import subprocess
import time

# Mean cores other processes may keep busy during a timed command: an idle
# machine of this kind shows under 0.01, one busy loop 1.0.
QUIET_LIMIT_CORES = 0.2


def run_measured(command, **options):
    """`subprocess.run(command, capture_output=True, text=True, **options)` and the mean number of cores
    other processes kept busy while it ran (None where `/proc/stat` is missing)."""
    machine_before, own_before, wall_before = _machine_busy_s(), _own_cpu_s(), time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, **options)
    wall = time.perf_counter() - wall_before
    machine_after, own_after = _machine_busy_s(), _own_cpu_s()
    if machine_before is None or machine_after is None or wall <= 0:
        return run, None
    others = (machine_after - machine_before) - (own_after - own_before)
    return run, max(0.0, others / wall)


def _machine_busy_s():
    """Seconds of CPU time every core has spent busy since boot, or None off Linux."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    busy = sum(fields[:3]) + sum(fields[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s():
    """CPU seconds of this process and of its children that have been waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total
