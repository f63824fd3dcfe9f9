"""What gitpython would cost agentloop: its import, and its repository discovery beside git's own.

  python benchmarks/bench_gitpython.py [-n 15]

Each figure is a fresh process, median of n rounds after one warm-up round, every case once per
round (a swing in the machine's load falls on all alike); CPU is user + system of the process and
its children. Run from inside a git repository. The reasons gitpython is not agentloop's git layer
are in docs/git.md; this prints the startup part of them.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time


def run_once(argv: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15, help="rounds (after one warm-up)")
    args = parser.parse_args()
    py = sys.executable
    cases = {
        "python -c pass (interpreter floor)": [py, "-c", "pass"],
        "python -c 'import git' (gitpython)": [py, "-c", "import git"],
        "git rev-parse --show-toplevel": ["git", "rev-parse", "--show-toplevel"],
        "git.Repo('.', search_parent_directories=True)": [
            py, "-c", "import git; git.Repo('.', search_parent_directories=True).working_tree_dir"],
        "agentloop.workspace.gitsafe.toplevel()": [
            py, "-c", "from agentloop.workspace.gitsafe import toplevel; toplevel()"],
    }
    samples: dict[str, list[tuple[float, float]]] = {key: [] for key in cases}
    for round_ in range(args.n + 1):
        for key, argv in cases.items():
            figures = run_once(argv)
            if round_:
                samples[key].append(figures)
    print(f"{'a fresh process, milliseconds (median)':<48} {'wall':>8} {'cpu':>8}")
    for key, figures in samples.items():
        print(f"{key:<48} {statistics.median(f[0] for f in figures):8.1f} "
              f"{statistics.median(f[1] for f in figures):8.1f}")


if __name__ == "__main__":
    main()
