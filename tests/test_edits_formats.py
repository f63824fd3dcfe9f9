# ruff: noqa: E501  (replies are test data: one line each reads best)
"""Every reply format, detected without being told, plus the forgiving paths weak models need."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentloop.edits import apply_reply, parse_edits, render_failures

CALC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "calc.py").write_text(CALC)
    (tmp_path / "README.md").write_text("# demo\n")
    return tmp_path


def read(repo: Path, rel: str = "src/calc.py") -> str:
    return (repo / rel).read_text()


def ok(repo: Path, reply: str, **kw) -> None:
    res = apply_reply(repo, reply, **kw)
    assert res.applied, render_failures(res) or res


def test_plain_diff_without_prefixes_and_wrong_counts(repo: Path) -> None:
    ok(
        repo,
        "--- src/calc.py\n+++ src/calc.py\n@@ -5,9 +5,9 @@\n def sub(a, b):\n-    return a - b\n+    return b - a\n",
    )
    assert read(repo).endswith("def sub(a, b):\n    return b - a\n")


def test_diff_with_collapsed_blank_lines_and_no_numbers(repo: Path) -> None:
    reply = "```diff\n--- a/src/calc.py\n+++ b/src/calc.py\n@@ ... @@\n     return a + b\n-def sub(a, b):\n+def subtract(a, b):\n```\n"
    ok(repo, reply)
    assert read(repo) == CALC.replace("def sub", "def subtract")


def test_diff_empty_line_is_blank_context(repo: Path) -> None:
    reply = "```diff\n--- a/src/calc.py\n+++ b/src/calc.py\n@@ -2,4 +2,4 @@\n     return a + b\n\n\n-def sub(a, b):\n+def minus(a, b):\n```\n"
    ok(repo, reply)
    assert read(repo) == CALC.replace("def sub", "def minus")


def test_diff_followed_by_prose_bullets(repo: Path) -> None:
    reply = "--- a/src/calc.py\n+++ b/src/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a + b\n+    return b + a\n\n- swapped the operands\n"
    ok(repo, reply)
    assert read(repo) == CALC.replace("a + b", "b + a")


def test_diff_new_and_deleted_files(repo: Path) -> None:
    reply = (
        "diff --git a/src/new.py b/src/new.py\nnew file mode 100644\n--- /dev/null\n+++ b/src/new.py\n"
        "@@ -0,0 +1,2 @@\n+X = 1\n+Y = 2\n"
        "diff --git a/README.md b/README.md\ndeleted file mode 100644\n--- a/README.md\n+++ /dev/null\n"
        "@@ -1 +0,0 @@\n-# demo\n"
    )
    res = apply_reply(repo, reply)
    assert res.applied, render_failures(res)
    assert read(repo, "src/new.py") == "X = 1\nY = 2\n" and not (repo / "README.md").exists()
    assert sorted(res.changed_files) == ["README.md", "src/new.py"]


def test_git_rename_with_hunk(repo: Path) -> None:
    reply = (
        "diff --git a/src/calc.py b/src/maths.py\nsimilarity index 90%\nrename from src/calc.py\n"
        "rename to src/maths.py\n--- a/src/calc.py\n+++ b/src/maths.py\n@@ -1,2 +1,2 @@\n"
        " def add(a, b):\n-    return a + b\n+    return a + b  # sum\n"
    )
    ok(repo, reply)
    assert not (repo / "src/calc.py").exists()
    assert read(repo, "src/maths.py") == CALC.replace("a + b\n", "a + b  # sum\n")


def test_apply_patch_envelope(repo: Path) -> None:
    reply = """*** Begin Patch
*** Update File: src/calc.py
*** Move to: src/arith.py
@@ def sub(a, b):
-    return a - b
+    return -(b - a)
*** Add File: src/extra.py
+def mul(a, b):
+    return a * b
*** Delete File: README.md
*** End Patch
"""
    ok(repo, reply)
    assert read(repo, "src/arith.py") == CALC.replace("a - b", "-(b - a)")
    assert read(repo, "src/extra.py") == "def mul(a, b):\n    return a * b\n"
    assert not (repo / "README.md").exists() and not (repo / "src/calc.py").exists()


def test_apply_patch_truncated(repo: Path) -> None:
    res = apply_reply(
        repo, "*** Begin Patch\n*** Update File: src/calc.py\n@@\n-    return a - b\n+    return"
    )
    assert not res.applied and res.failures[0].reason == "malformed"
    assert read(repo) == CALC


def test_whole_file_with_path(repo: Path) -> None:
    new = CALC.replace("a - b", "b - a")
    ok(repo, f"Here is the full file.\n\n**src/calc.py**\n```python\n{new}```\n")
    assert read(repo) == new


def test_whole_file_fragment_refused(repo: Path) -> None:
    res = apply_reply(
        repo, "src/calc.py\n```python\ndef sub(a, b):\n    # ... existing code ...\n    return b - a\n```\n"
    )
    assert not res.applied and res.failures[0].reason == "malformed"
    assert read(repo) == CALC


def test_whole_file_block_of_one_definition_replaces_it(repo: Path) -> None:
    """Only `def sub` and "rest of the code": the definition is meant, the rest stays (edits.definitions)."""
    res = apply_reply(
        repo, "src/calc.py\n```python\ndef sub(a, b):\n    return b - a\n# ... rest of the code ...\n```\n"
    )
    assert res.applied and read(repo) == CALC.replace("a - b", "b - a")


def test_pathless_whole_file_with_one_known_file(repo: Path) -> None:
    new = CALC.replace("a - b", "b - a")
    ok(repo, f"Fixed:\n```python\n{new}```\nThat should work.", known_files=["src/calc.py"])
    assert read(repo) == new


def test_pathless_code_ignored_with_two_known_files(repo: Path) -> None:
    res = apply_reply(repo, f"```python\n{CALC}```\n", known_files=["src/calc.py", "README.md"])
    assert res.edits == [] and not res.applied


def test_pathless_whole_file_unrelated_content_refused(repo: Path) -> None:
    res = apply_reply(
        repo, "```python\nimport os\nprint(os.getcwd())\nprint(1)\n```\n", known_files=["src/calc.py"]
    )
    assert not res.applied and res.failures[0].reason == "malformed"
    assert read(repo) == CALC


@pytest.mark.parametrize("written", ["path/to/calc.py", "calc.py", "path/to/file.py", "file.py", ""])
def test_forgiving_paths_with_one_known_file(repo: Path, written: str) -> None:
    header = f"{written}\n" if written else ""
    reply = f"{header}```python\n<<<<<<< SEARCH\n    return a - b\n=======\n    return b - a\n>>>>>>> REPLACE\n```\n"
    ok(repo, reply, known_files=["src/calc.py"])
    assert read(repo) == CALC.replace("a - b", "b - a")


def test_placeholder_not_resolved_when_two_files_known(repo: Path) -> None:
    edits = parse_edits(
        "path/to/file.py\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n", known_files=["x.py", "y.py"]
    )
    assert edits[0].path == "path/to/file.py"
    res = apply_reply(repo, edits)
    assert res.failures[0].reason == "path_refused"


def test_basename_resolution_prefers_basename(repo: Path) -> None:
    edits = parse_edits(
        "path/to/calc.py\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n",
        known_files=["README.md", "src/calc.py"],
    )
    assert edits[0].path == "src/calc.py"


def test_wrong_path_prefix_resolved_on_disk(repo: Path) -> None:
    ok(
        repo,
        "myproject/src/calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return b - a\n>>>>>>> REPLACE\n",
    )
    assert read(repo) == CALC.replace("a - b", "b - a")


def test_headerless_hunk_with_one_known_file(repo: Path) -> None:
    ok(
        repo,
        "```diff\n@@ -5,2 +5,2 @@\n def sub(a, b):\n-    return a - b\n+    return b - a\n```\n",
        known_files=["src/calc.py"],
    )
    assert read(repo) == CALC.replace("a - b", "b - a")


def test_mixed_formats_in_one_reply(repo: Path) -> None:
    reply = (
        "First:\n\nsrc/calc.py\n<<<<<<< SEARCH\n    return a + b\n=======\n    return b + a\n>>>>>>> REPLACE\n\n"
        "Then:\n```diff\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-# demo\n+# demo project\n```\n"
    )
    ok(repo, reply)
    assert read(repo) == CALC.replace("a + b", "b + a") and read(repo, "README.md") == "# demo project\n"
