"""Acceptance that cannot be gamed: pristine protected files, suspicious-edit flags, shown in `show`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import PYTEST, make_repo
from fake_llm import FakeLLM
from test_fix_e2e import run_fix

from agentloop.cli import cli
from agentloop.record.trajectory import read_events
from agentloop.workspace import sandbox
from agentloop.workspace.guard import ProtectedFiles, scan_diff
from agentloop.workspace.repo import Workspace

# test_a imports calc first; calc then rewrites test_calc.py, which pytest collects after it.
GAMING_CALC = '''\
import pathlib

_test = pathlib.Path(__file__).with_name("test_calc.py")
_test.write_text("def test_add():\\n    assert True\\n")


def add(a, b):
    return a - b
'''
CALC = "def add(a, b):\n    return a - b\n"
TEST_A = "import calc\n\n\ndef test_import():\n    assert calc\n"
TEST_CALC = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


def whole(path: str, text: str) -> str:
    return f"{path}\n<<<<<<< SEARCH\n{CALC}=======\n{text}>>>>>>> REPLACE\n"


@pytest.fixture
def gaming_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"calc.py": CALC, "test_a.py": TEST_A, "test_calc.py": TEST_CALC})


def fix(repo: Path, monkeypatch, *args: str) -> tuple[int, dict, str, FakeLLM]:
    reply = whole("calc.py", GAMING_CALC)
    with FakeLLM([{"content": reply}, {"content": "GIVE UP"}]) as server:
        code, summary, err = run_fix(repo, server, "--check", PYTEST, "--max-turns", "2", *args,
                                     monkeypatch=monkeypatch)
    return code, summary, err, server


def test_the_attack_works_without_protection(gaming_repo, monkeypatch):
    """The control: with test files editable, rewriting the test through a helper module gets accepted."""
    code, summary, _, _ = fix(gaming_repo, monkeypatch, "--sandbox", "off", "--allow-test-edits")
    assert summary["outcome"] == "accepted"


@pytest.mark.parametrize("mode", ["off", "bwrap"])
def test_a_test_rewritten_by_code_cannot_be_accepted(gaming_repo, monkeypatch, mode):
    if mode == "bwrap" and sandbox.probe():
        pytest.skip(f"bubblewrap cannot run here: {sandbox.probe()}")
    code, summary, err, server = fix(gaming_repo, monkeypatch, "--sandbox", mode)  # test_*.py protected by default
    assert summary["outcome"] != "accepted" and code == 1, err
    assert (gaming_repo / "test_calc.py").read_text() == TEST_CALC  # pristine after the run
    events = read_events(Path(summary["trajectory"]))
    if mode == "off":  # the rewrite happened, was caught, undone and reported to the model
        guard = [e for e in events if e["type"] == "guard"]
        assert guard and guard[0]["paths"] == ["test_calc.py"] and guard[0]["check"]
        assert "does not count" in str(server.requests[1]["messages"])
        assert events[-1]["flags"]["protected_changed"] >= 1
        shown = CliRunner().invoke(cli, ["show", summary["run_dir"]]).output
        assert "protected files changed by" in shown and "test_calc.py" in shown
    else:  # read-only inside the sandbox: the write itself fails
        assert "Read-only file system" in "".join(e.get("output", "") for e in events if e["type"] == "check")


def test_new_protected_file_made_by_code_is_removed(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC, "test_calc.py": TEST_CALC})
    ws = Workspace(repo)
    guard = ProtectedFiles(repo, ["conftest.py", "test_*.py"], ws.snapshot())
    (repo / "conftest.py").write_text("import pytest\n")
    (repo / "test_calc.py").write_text("def test_add(): pass\n")
    (repo / "test_calc.py").chmod(0o755)
    changed = guard.changed(ws.list_files())
    assert changed == ["conftest.py", "test_calc.py"]
    assert guard.restore(changed) == []
    assert not (repo / "conftest.py").exists() and (repo / "test_calc.py").read_text() == TEST_CALC
    assert not (repo / "test_calc.py").stat().st_mode & 0o111
    assert guard.changed(ws.list_files()) == []


def test_an_ignored_protected_file_of_the_user_is_kept(tmp_path, monkeypatch):
    """A scratch test the user's .gitignore hides is theirs: it is not "new", so it is never removed;
    if code rewrites it during a check it is put back as it was, not deleted."""
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC, "tests/test_calc.py": TEST_CALC,
                                         ".gitignore": "tests/test_scratch.py\nconftest.py\n"})
    (repo / "tests/test_scratch.py").write_text("# my scratch work\n")
    (repo / "conftest.py").symlink_to("tests/test_scratch.py")
    ws = Workspace(repo)
    guard = ProtectedFiles(repo, ["conftest.py", "tests/**"], ws.snapshot())
    assert guard.changed(ws.list_files()) == []
    (repo / "tests/test_scratch.py").write_text("def test_add(): pass\n")
    assert guard.changed(ws.list_files()) == ["tests/test_scratch.py"]
    assert guard.restore(["tests/test_scratch.py"]) == []
    assert (repo / "tests/test_scratch.py").read_text() == "# my scratch work\n"
    assert os.readlink(repo / "conftest.py") == "tests/test_scratch.py"
    # through `fix --in-place`, as the user runs it
    with FakeLLM([{"content": "GIVE UP"}]) as server:
        run_fix(repo, server, "--check", PYTEST, "--max-turns", "1", "--in-place", monkeypatch=monkeypatch)
    assert (repo / "tests/test_scratch.py").read_text() == "# my scratch work\n"


def test_restore_never_writes_through_a_symlink_out_of_the_repo(tmp_path):
    repo = make_repo(tmp_path / "repo", {"tests/test_x.py": "ok\n"})
    ws = Workspace(repo)
    guard = ProtectedFiles(repo, ["tests/**"], ws.snapshot())
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "tests/test_x.py").unlink()
    (repo / "tests").rmdir()
    (repo / "tests").symlink_to(outside)
    changed = guard.changed(ws.list_files())
    assert changed == ["tests/test_x.py"]
    assert guard.restore(changed) == ["tests/test_x.py"]
    assert list(outside.iterdir()) == []


DIFF = '''\
diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,6 @@
 def add(a, b):
+    if a == 2 and b == 3:
+        return 5
+    if n == 0:
+        return 1
     return a - b
diff --git a/tests/test_calc.py b/tests/test_calc.py
--- a/tests/test_calc.py
+++ b/tests/test_calc.py
@@ -1,3 +1,4 @@
+@pytest.mark.xfail
 def test_add():
-    assert add(2, 3) == 5
+    import os; os._exit(0)
'''


def test_scan_diff_flags_gaming():
    kinds = {(f["kind"], f["path"]) for f in scan_diff(DIFF)}
    assert kinds == {("special_case", "calc.py"), ("skip_marker", "tests/test_calc.py"),
                     ("exit_in_test", "tests/test_calc.py"), ("deleted_assertion", "tests/test_calc.py")}


def test_scan_diff_leaves_honest_fixes_alone():
    honest = DIFF.split("diff --git a/tests")[0].replace("+    if a == 2 and b == 3:\n+        return 5\n", "")
    assert scan_diff(honest) == []  # `if n == 0: return 1` is a base case, not a special case
    moved = "diff --git a/t.py b/t.py\n--- a/t.py\n+++ b/t.py\n@@ -1 +1 @@\n-    assert x == 1\n+    assert x == 1\n"
    assert scan_diff(moved) == []


SPECIAL = """calc.py
<<<<<<< SEARCH
    return a - b
=======
    if a == 2 and b == 3:
        return 5
    return a - b
>>>>>>> REPLACE
"""


def test_suspicious_edit_is_recorded_and_shown(calc_repo, monkeypatch):
    with FakeLLM([{"content": SPECIAL}, {"content": "GIVE UP"}]) as server:
        _, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, monkeypatch=monkeypatch)
    events = read_events(Path(summary["trajectory"]))
    edits = next(e for e in events if e["type"] == "edits")
    assert edits["suspicious"] == [{"kind": "special_case", "path": "calc.py",
                                    "line": "if a == 2 and b == 3: / return 5"}]
    assert events[-1]["flags"] == {"special_case": 1}
    shown = CliRunner().invoke(cli, ["show", summary["run_dir"]])
    assert "SUSPICIOUS special_case in calc.py" in shown.output


def test_the_look_before_a_check_is_skipped_only_when_the_edit_wrote_no_protected_file(gaming_repo, monkeypatch):
    """The model's edits cannot write a protected path (apply refuses it), so after an edit to calc.py
    alone the protected files are not looked at again before the check (one git listing saved per
    turn); the look after every check stays (test_a_test_rewritten_by_code_cannot_be_accepted)."""
    looks: list[int] = []
    real = ProtectedFiles.changed

    def counted(self, current_files, ignored=None):
        looks.append(1)
        return real(self, current_files, ignored)

    monkeypatch.setattr(ProtectedFiles, "changed", counted)
    fixed = whole("calc.py", "def add(a, b):\n    return a + b\n")
    with FakeLLM([{"content": fixed}]) as server:
        code, summary, _ = run_fix(gaming_repo, server, "--check", PYTEST, "--max-turns", "2", "--sandbox", "off",
                                   monkeypatch=monkeypatch)
    assert summary["outcome"] == "accepted"
    assert len(looks) == 2  # after the first check and after the check of the edit; none before it


def test_touched_needs_a_look_unless_every_written_path_is_unprotected(gaming_repo):
    from agentloop.workspace.suite import CheckSuite

    suite = CheckSuite.__new__(CheckSuite)
    suite.protected = ProtectedFiles(gaming_repo, ["test_*.py"], Workspace(gaming_repo).snapshot())
    for paths, was, expected in [(["calc.py"], True, True), (["calc.py"], False, False),
                                 (["test_new.py"], True, False), (["test_calc.py"], True, False), (None, True, False)]:
        suite.pristine = not expected
        suite.touched(paths, was_pristine=was)
        assert suite.pristine is expected, (paths, was)


def test_the_users_diff_settings_change_no_patch_and_hide_no_test_edit(tmp_path, monkeypatch):
    """A ~/.gitconfig with diff.noprefix (and other diff.* tastes: context, algorithm, relative paths,
    an external diff, blank context lines) changed `git diff`'s patches, and the headers scan_diff
    reads the paths from: a skip added to a test then went unflagged. Diffs are plumbing now."""
    import subprocess

    from agentloop.workspace import repo as repo_module
    from agentloop.workspace.guard import text_diff

    test = "def test_add():\n    x = 1\n\n    assert add(2, 3) == 5\n"
    repo = make_repo(tmp_path / "repo", {"calc.py": "def add(a, b):\n    return a - b\n", "logo.bin": "\0\1\2\n",
                                         "tests/test_calc.py": test})
    (repo / "tests" / "test_calc.py").write_text("import pytest\n\n@pytest.mark.skip\ndef test_add():\n    x = 1\n\n")
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "logo.bin").write_bytes(b"\0\1\3\n")
    workspace = Workspace(repo)
    before = subprocess.run(["git", "rev-parse", "HEAD^{tree}"], cwd=repo, capture_output=True, text=True,
                            check=True).stdout.strip()
    after = workspace.snapshot()

    def fresh_diffs() -> tuple[str, str]:
        repo_module._DIFFS.clear()
        repo_module._CHANGES.clear()
        return workspace.diff(before, after), text_diff(repo, before, after)

    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    patch, text = fresh_diffs()
    assert "diff --git a/calc.py b/calc.py" in patch and "GIT binary patch" in patch
    assert text == subprocess.run(["git", "diff", "--text", before, after], cwd=repo, capture_output=True,
                                  text=True, check=True).stdout
    tastes = tmp_path / "gitconfig"
    tastes.write_text("[diff]\n\tnoprefix = true\n\tmnemonicPrefix = true\n\tcontext = 0\n\talgorithm = patience\n"
                      "\trelative = true\n\texternal = false\n\tsuppressBlankEmpty = true\n\tsrcPrefix = X/\n"
                      "\tdstPrefix = Y/\n[color]\n\tui = always\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tastes))
    assert "diff --git calc.py" in subprocess.run(["git", "diff", "--no-ext-diff", before, after], cwd=repo,
                                                   capture_output=True, text=True).stdout  # (git diff obeys them)
    assert fresh_diffs() == (patch, text)
    kinds = {(f["kind"], f["path"]) for f in scan_diff(text)}
    assert ("skip_marker", "tests/test_calc.py") in kinds and ("deleted_assertion", "tests/test_calc.py") in kinds
