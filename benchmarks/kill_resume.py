"""Kills survived out of kills tried: the long form of the kill/resume test.

    python benchmarks/kill_resume.py --attempts 40

Starts a small robust training in a subprocess again and again, kills it
(SIGKILL) at a random instant or, every second time, inside a checkpoint
write, and checks after each kill that the run restores to finite weights,
one log row per finished epoch and a consistent ψ accumulator; then trains it
to the end. Prints the figures reported in docs/reliability.md.
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from kill_harness import kill_and_resume  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=40, help="kills to try (default 40)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of the run (default 40)")
    parser.add_argument("--seed", type=int, default=1776)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        figures = kill_and_resume(work, np.random.default_rng(args.seed), args.attempts, epochs=args.epochs)
    print(json.dumps(figures, indent=1))
    print(f"kills survived: {figures['resumed_intact']} of {figures['kills']} "
          f"({figures['kills_mid_write']} inside a checkpoint write); run completed: {figures['completed']}")


if __name__ == "__main__":
    main()
