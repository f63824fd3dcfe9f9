"""What computing the result from the model's edits costs: the start snapshot, and per edit.

  python benchmarks/bench_result_tree.py [--files 5000] [-n 11]

On a repository of N small files: the start snapshot (copying the user's index and hashing only
files whose stat data changed), the same when the repository has a `.gitattributes` (then every file
is hashed as its exact bytes, since the index may hold converted content), and the per-edit cost of
recording one edited file into the result tree plus the diff of that edit. Medians over n rounds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentloop.workspace.repo import Workspace  # noqa: E402


def make_repo(root: Path, files: int) -> Path:
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    per_dir = 100
    for i in range(files):
        folder = root / f"pkg{i // per_dir}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod{i % per_dir}.py").write_text(f"VALUE = {i}\n" * 20)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "x"], cwd=root, check=True)
    return root


def median_ms(action, rounds: int) -> tuple[float, float, float]:
    times = []
    action()
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("-n", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "repo", args.files)
        ws = Workspace(repo)
        rows = [("start snapshot (index reused)", median_ms(ws.snapshot, args.n))]
        start = ws.snapshot()
        target = repo / "pkg0" / "mod0.py"

        def one_edit() -> None:
            target.write_text(target.read_text() + "# edit\n")
            tree = ws.tree_with(start, ["pkg0/mod0.py"])
            ws.diff(start, tree)

        rows.append(("per edit: record 1 file + its diff", median_ms(one_edit, args.n)))
        (repo / ".gitattributes").write_text("*.bin binary\n")
        rows.append(("start snapshot (.gitattributes: all hashed)", median_ms(ws.snapshot, args.n)))
    print(f"{args.files} files, {args.n} rounds: median (min..max) ms")
    for name, (med, low, high) in rows:
        print(f"  {name:45s} {med:8.1f}  ({low:.1f}..{high:.1f})")


if __name__ == "__main__":
    main()
