"""The path an edit names is honoured: a stand-in path may be resolved, an escaping or existing one never
is moved onto another file; any repository file can be named, `Makefile` and `LICENSE` included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentloop.edits import apply_reply, parse_edits, render_failures

URLUTILS = "A = 1\n\nB = 2\n"


def sr(path: str, search: str, replace: str) -> str:
    return f"{path}\n```python\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n```\n"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A repository with src/urlutils.py, and outside it a directory its `vendored` link leads to."""
    root, outside = tmp_path / "repo", tmp_path / "outside"
    (root / "src").mkdir(parents=True)
    (root / ".git").mkdir()
    outside.mkdir()
    (root / "src" / "urlutils.py").write_text(URLUTILS)
    (outside / "urlutils.py").write_text(URLUTILS)
    (root / "vendored").symlink_to(outside)
    return root, outside


def contents(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): p.read_text() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../evil.py", "leaves the repository"),
        ("../src/urlutils.py", "leaves the repository"),
        ("vendored/urlutils.py", "leads outside the repository (symlink)"),
        ("{outside}/urlutils.py", "is absolute"),
        ("/etc/urlutils.py", "is absolute"),
        (".git/urlutils.py", "inside .git/"),
        (".git/config", "inside .git/"),
    ],
)
@pytest.mark.parametrize("fmt", ["search_replace", "udiff", "apply_patch", "whole"])
def test_edit_aimed_outside_is_refused_not_redirected(
    layout: tuple[Path, Path], path: str, why: str, fmt: str
) -> None:
    root, outside = layout
    path = path.format(outside=outside)
    before_in, before_out = contents(root), contents(outside)
    reply = {
        "search_replace": sr(path, "A = 1\n", "A = 5\n"),
        "udiff": f"--- {path}\n+++ {path}\n@@ -1,1 +1,1 @@\n-A = 1\n+A = 5\n",
        "apply_patch": f"*** Begin Patch\n*** Update File: {path}\n@@\n-A = 1\n+A = 5\n*** End Patch\n",
        "whole": f"{path}\n```python\nA = 5\n\nB = 2\n```\n",
    }[fmt]
    res = apply_reply(root, reply, known_files=["src/urlutils.py"])
    assert not res.applied
    assert [f.reason for f in res.failures] == ["path_refused"], res.failures
    assert why in res.failures[0].message
    assert not any("taken to mean" in n for n in res.notes)
    assert contents(root) == before_in and contents(outside) == before_out


def test_existing_file_that_does_not_match_gets_the_no_match_report(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    (root / "src" / "other.py").write_text("C = 3\n")
    res = apply_reply(root, sr("src/other.py", "A = 1\n", "A = 5\n"), known_files=["src/urlutils.py"])
    assert [f.reason for f in res.failures] == ["not_found"]
    assert "closest lines" in res.failures[0].message
    assert (root / "src" / "urlutils.py").read_text() == URLUTILS


def test_existing_directory_is_not_redirected(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    (root / "conf.d").mkdir()
    res = apply_reply(root, sr("conf.d", "A = 1\n", "A = 5\n"), known_files=["src/urlutils.py"])
    assert not res.applied and res.failures[0].reason == "path_refused"
    assert (root / "src" / "urlutils.py").read_text() == URLUTILS


@pytest.mark.parametrize("path", ["path/to/file.py", "urlutils.py", "lib/urlutils.py", "nowhere/mod.py", ""])
def test_stand_in_paths_are_still_resolved(layout: tuple[Path, Path], path: str) -> None:
    root, _ = layout
    (root / "src" / "other.py").write_text("C = 3\n")
    reply = sr(path, "A = 1\n", "A = 5\n") if path else "<<<<<<< SEARCH\nA = 1\n=======\nA = 5\n>>>>>>> REPLACE\n"
    res = apply_reply(root, reply, known_files=["src/urlutils.py", "src/other.py"])
    assert res.applied, render_failures(res)
    assert (root / "src" / "urlutils.py").read_text() == "A = 5\n\nB = 2\n"


def test_absolute_path_inside_the_repository_is_the_same_file(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    res = apply_reply(root, sr(f"{root}/src/urlutils.py", "A = 1\n", "A = 5\n"))
    assert res.applied, render_failures(res)
    assert res.changed_files == ["src/urlutils.py"]
    assert any("absolute path" in n for n in res.notes)


def test_absolute_path_through_a_symlink_out_is_refused(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    res = apply_reply(root, sr(f"{root}/vendored/urlutils.py", "A = 1\n", "A = 5\n"), known_files=["src/urlutils.py"])
    assert res.failures[0].reason == "path_refused"
    assert (outside / "urlutils.py").read_text() == URLUTILS == (root / "src" / "urlutils.py").read_text()


# -- files without an extension ------------------------------------------------------------------
MAKEFILE = "all:\n\techo hi\n"


@pytest.fixture
def twins(tmp_path: Path) -> Path:
    """Two files with the same text: only the path can say which one an edit is for."""
    (tmp_path / "Makefile").write_text(MAKEFILE)
    (tmp_path / "make.mk").write_text(MAKEFILE)
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "Buildscript").write_text(MAKEFILE)
    return tmp_path


@pytest.mark.parametrize("name", ["Makefile", "tools/Buildscript"])
def test_search_replace_to_an_extensionless_file(twins: Path, name: str) -> None:
    reply = f"Change this:\n\n{name}\n```make\n<<<<<<< SEARCH\n\techo hi\n=======\n\techo bye\n>>>>>>> REPLACE\n```\n"
    res = apply_reply(twins, reply, known_files=["Makefile", "make.mk", "tools/Buildscript"])
    assert res.applied, render_failures(res)
    assert res.changed_files == [name]
    assert (twins / "make.mk").read_text() == MAKEFILE


def test_whole_file_to_an_existing_extensionless_file(tmp_path: Path) -> None:
    (tmp_path / "Buildscript").write_text("old\n")
    res = apply_reply(tmp_path, "Here it is:\n\n**Buildscript**\n```\nnew\n```\n")
    assert res.applied, render_failures(res)
    assert (tmp_path / "Buildscript").read_text() == "new\n"


@pytest.mark.parametrize("name", ["Dockerfile", "LICENSE", "docker/Dockerfile"])
def test_whole_file_creates_a_conventionally_extensionless_file(tmp_path: Path, name: str) -> None:
    res = apply_reply(tmp_path, f"{name}\n```\nFROM python:3.12\n```\n")
    assert res.applied, render_failures(res)
    assert (tmp_path / name).read_text() == "FROM python:3.12\n"


def test_fence_info_naming_an_existing_extensionless_file(tmp_path: Path) -> None:
    (tmp_path / "Buildscript").write_text("old\n")
    (tmp_path / "other").write_text("old\n")
    res = apply_reply(tmp_path, "```Buildscript\nnew\n```\n", known_files=["Buildscript", "other"])
    assert res.applied, render_failures(res)
    assert (tmp_path / "Buildscript").read_text() == "new\n" and (tmp_path / "other").read_text() == "old\n"


@pytest.mark.parametrize("prose", ["Done", "Explanation:", "Here is the fix:", "Result", "Update"])
def test_prose_lines_are_not_paths(tmp_path: Path, prose: str) -> None:
    (tmp_path / "calc.py").write_text("x = 1\n")
    edits = parse_edits(f"{prose}\n```python\nx = 2\n```\n", known_files=["calc.py", "other.py"])
    assert all(e.path != prose.rstrip(":") for e in edits)
    res = apply_reply(tmp_path, f"calc.py\n```python\nx = 2\n```\n{prose}\n```python\ny = 3\n```\n")
    assert res.applied and res.changed_files == ["calc.py"], render_failures(res)
    assert not (tmp_path / prose.rstrip(":")).exists()


def test_parse_edits_knows_files_in_play_without_extension() -> None:
    edits = parse_edits("Makefile\n```\nall:\n```\n", known_files=["Makefile"])
    assert [(e.kind, e.path) for e in edits] == [("write", "Makefile")]
    edits = parse_edits("Buildscript\n```\nall:\n```\n", known_files=["Buildscript", "x.py"])
    assert [(e.kind, e.path) for e in edits] == [("write", "Buildscript")]


# -- modes of new files ------------------------------------------------------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_files_get_the_mode_git_gives_them(tmp_path: Path, umask_022: None) -> None:
    reply = sr("pkg/new.py", "", "X = 1\n") + "Dockerfile\n```\nFROM x\n```\n"
    reply += "--- /dev/null\n+++ b/run.sh\n@@ -0,0 +1,1 @@\n+echo hi\n"
    res = apply_reply(tmp_path, reply)
    assert res.applied, render_failures(res)
    for rel in ["pkg/new.py", "Dockerfile", "run.sh"]:
        assert (tmp_path / rel).stat().st_mode & 0o7777 == 0o644, rel


def test_new_file_mode_of_a_git_diff(tmp_path: Path, umask_022: None) -> None:
    diff = "diff --git a/run.sh b/run.sh\nnew file mode 100755\nindex 0000000..1111111\n--- /dev/null\n"
    diff += "+++ b/run.sh\n@@ -0,0 +1,2 @@\n+#!/bin/sh\n+echo hi\n"
    res = apply_reply(tmp_path, diff)
    assert res.applied, render_failures(res)
    assert (tmp_path / "run.sh").stat().st_mode & 0o7777 == 0o755


def test_new_file_mode_respects_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        res = apply_reply(tmp_path, sr("new.py", "", "X = 1\n"))
    finally:
        os.umask(old)
    assert res.applied and (tmp_path / "new.py").stat().st_mode & 0o7777 == 0o640


def test_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("echo hi\n")
    (tmp_path / "run.sh").chmod(0o750)
    res = apply_reply(tmp_path, sr("run.sh", "echo hi\n", "echo bye\n"))
    assert res.applied and (tmp_path / "run.sh").stat().st_mode & 0o7777 == 0o750
