"""What structured grading costs per pytest check: the same suite run plain and graded.

Run: python benchmarks/bench_grading.py [--tests 200] [--repeat 5]
Makes a throwaway repository with N passing tests, then runs `python -m pytest -q` through
agentloop's command runner as is and as agentloop.workspace.grading rewrites it (bootstrap + plugin + report),
alternating, and prints the median wall time of each and the difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agentloop.workspace import grading
from agentloop.workspace.checks import check_env, run_command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        repo = Path(tmp)
        (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
        body = "".join(f"def test_{i}():\n    assert add({i}, 1) == {i + 1}\n\n\n" for i in range(args.tests))
        (repo / "test_calc.py").write_text("from calc import add\n\n\n" + body)
        command = f"{sys.executable} -m pytest -q -p no:cacheprovider"
        env = check_env(base={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        plain, graded_times = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            assert run_command(command, repo, env=env).passed
            plain.append(time.perf_counter() - start)
            graded = grading.prepare(command, "auto", env)
            assert graded is not None
            start = time.perf_counter()
            result = run_command(graded.command, repo, env=graded.env)
            report = graded.read()
            graded_times.append(time.perf_counter() - start)
            assert result.passed and grading.verdict(report, None) == "" and len(report.outcomes) == args.tests
        p, g = statistics.median(plain), statistics.median(graded_times)
        print(f"{args.tests} tests, median of {args.repeat}: plain {p:.3f}s, graded {g:.3f}s, "
              f"overhead {g - p:+.3f}s ({(g - p) / p:+.1%})")


if __name__ == "__main__":
    main()
