"""The processes a rollout starts, counted: each one cut for throughput stays cut, and each answer
reused instead of asked again is still the right one. Real git repositories, real processes."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from conftest import BUGGY_CALC, CALC_TEST, git, make_repo

from agentloop.workspace.repo import Workspace, tree_changes


@contextlib.contextmanager
def spawned() -> Iterator[list[list[str]]]:
    """Every process started meanwhile, as its argv (git's `-c` options left out)."""
    started: list[list[str]] = []
    real = subprocess.Popen.__init__

    def counting(self, args, *rest, **kwargs):
        argv = [str(a) for a in ([args] if isinstance(args, str) else args)]
        if argv and argv[0] == "git":
            while len(argv) > 2 and argv[1] == "-c":
                del argv[1:3]
        started.append(argv)
        return real(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = counting
    try:
        yield started
    finally:
        subprocess.Popen.__init__ = real


def test_a_tree_against_itself_differs_in_nothing_without_asking_git(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    with spawned() as started:
        assert tree_changes(repo, tree, tree) == []
        assert Workspace(repo).diff(tree, tree) == ""
    assert [a for a in started if a[:2] != ["git", "rev-parse"]] == []  # (Workspace() asks for its git dir)
    (repo / "calc.py").write_text("changed\n")
    now = Workspace(repo).snapshot()
    assert [c.path for c in tree_changes(repo, tree, now)] == ["calc.py"]
