"""The bug-fix suite in benchmarks/tasks/: every task fails as shipped and passes with its reference fix,
and the suite runner judges by the check it runs itself (driven here against the scripted server)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

from fake_llm import FakeLLM

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


suite = _load("run_suite")
real = _load("real_tasks")
ALL_TASKS = suite.load_tasks()
TASKS = [t for t in ALL_TASKS if not t.source]  # the small hand-written tasks
REAL = [t for t in ALL_TASKS if t.source]        # cut from PyPI sdists by benchmarks/real_tasks.py


def test_the_suite_covers_the_bug_kinds():
    names = {t.name for t in TASKS}
    assert len(TASKS) >= 12
    for kind in ("wrong_operator", "off_by_one", "swapped_args", "missing_return", "wrong_comparison",
                 "wrong_default", "mutable_default", "string_format", "two_functions", "two_files"):
        assert kind in names
    long_modules = [t for t in TASKS if any(50 <= len((t.repo / f).read_text().splitlines()) <= 150
                                            for f in t.files)]
    assert len(long_modules) >= 3


def _outcomes(root: Path, stage: str) -> dict[str, list[bool]]:
    """Run every task's tests (copied under root/stage/<task>) in ONE pytest process: per task, pass/fail
    of each test. One process for all tasks keeps this fast; module names are unique across tasks."""
    import subprocess
    import xml.etree.ElementTree as ET

    report = root / f"{stage}.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                    "--rootdir", str(root), str(root / stage)], cwd=root, capture_output=True, timeout=300)
    found: dict[str, list[bool]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        task = case.get("classname", "").split(".")[1]
        found.setdefault(task, []).append(not any(c.tag in ("failure", "error") for c in case))
    return found


def test_every_task_fails_as_shipped_and_passes_with_its_fix(tmp_path):
    for task in TASKS:
        assert task.description and task.files and task.test_files(), task.name
        for rel in task.files:
            assert (task.repo / rel).is_file(), f"{task.name}: files lists {rel}, which the repo lacks"
        shutil.copytree(task.repo, tmp_path / "before" / task.name)
        shutil.copytree(task.repo, tmp_path / "after" / task.name)
        shutil.copytree(task.solution, tmp_path / "after" / task.name, dirs_exist_ok=True)
    before, after = _outcomes(tmp_path, "before"), _outcomes(tmp_path, "after")
    for task in TASKS:
        assert before.get(task.name) and not all(before[task.name]), f"{task.name} passes as shipped"
        assert after.get(task.name) and all(after[task.name]), f"{task.name} fails with its reference fix"


def test_the_real_tasks_span_sizes_and_hide_the_buggy_file():
    assert len(REAL) >= 10
    sizes = [len((t.repo / t.files[0]).read_text().splitlines()) for t in REAL]
    assert min(sizes) <= 100 and sum(n > 1000 for n in sizes) >= 3
    for t in REAL:
        assert not t.give_files and len(t.files) == 1
        assert list(t.repo.glob("LICEN[CS]E*")), f"{t.name} lacks its package's licence"
        assert sum(f.stat().st_size for f in t.dir.rglob("*") if f.is_file()) < 500_000, t.name
    assert {t.name for t in REAL} == {t.name for t in real.TASKS}


def test_every_real_task_fails_as_shipped_and_passes_with_its_fix():
    """Each real task's own check, in its own process (their packages and test folders collide). The hidden
    accept commands take as long again: `python benchmarks/real_tasks.py --verify` checks both."""
    for task in real.TASKS:
        assert real.verify(task, ("check",)), task.name


def test_every_real_task_has_an_accept_command_the_tool_never_sees():
    """The whole test modules of the buggy code (the visible check when that is what it runs already),
    never in the tool's tree or command line; hidden/ test modules are not in the tool's tree either."""
    args = argparse.Namespace(agentloop="agentloop", model="m", edit_format=None)
    stricter = 0
    for task in REAL:
        assert task.accept, task.name
        if task.accept == task.check:
            assert " -k " not in task.check, f"{task.name}: its check is filtered, its accept must not be"
            continue
        stricter += 1
        assert task.accept not in suite.fix_command(task, args, "http://127.0.0.1:1/v1")
        assert not any(task.accept in p.read_text(errors="replace") for p in task.repo.rglob("*") if p.is_file())
        for hidden in task.hidden.rglob("*.py") if task.hidden.is_dir() else ():
            assert not (task.repo / hidden.relative_to(task.hidden)).exists(), f"{task.name}: {hidden} is visible"
    assert stricter >= 9


def test_accept_judges_a_fresh_copy_with_the_pristine_tests(tmp_path):
    task = next(t for t in REAL if t.name == "cachetools_typedkey")
    repo = suite.prepare_repo(task, tmp_path / "repo")
    assert not suite.run_accept(task, repo)[0]
    # Tests rewritten to pass and a conftest that skips every test: the visible check in place would pass.
    for rel in task.test_files():
        (repo / rel).write_text("def test_nothing():\n    pass\n")
    (repo / "tests" / "conftest.py").write_text(
        "import pytest\n\n\ndef pytest_collection_modifyitems(items):\n"
        "    for item in items:\n        item.add_marker(pytest.mark.skip)\n")
    assert not suite.run_accept(task, repo)[0]
    assert (repo / "tests" / "conftest.py").is_file(), "the tool's tree is left as it was"
    shutil.copytree(task.solution, repo, dirs_exist_ok=True)
    assert suite.run_accept(task, repo)[0]


def test_accept_catches_a_fix_that_breaks_other_behaviour(tmp_path):
    task = next(t for t in REAL if t.name == "more_itertools_totient")
    repo = suite.prepare_repo(task, tmp_path / "repo")
    shutil.copytree(task.solution, repo, dirs_exist_ok=True)
    recipes = repo / "more_itertools" / "recipes.py"
    text = recipes.read_text()
    broken = "    return list(islice(iterable, n))\n"
    assert text.count(broken) == 1
    recipes.write_text(text.replace(broken, "    return list(islice(iterable, n + 1))\n"))
    assert suite.run_check(task, repo)[0], "the visible check (-k Totient) does not see take()"
    assert not suite.run_accept(task, repo)[0]


def test_check_runs_in_a_fresh_repo(tmp_path):
    task = next(t for t in TASKS if t.name == "two_files")
    repo = suite.prepare_repo(task, tmp_path / "repo")
    assert not suite.run_check(task, repo)[0]
    shutil.copytree(task.solution, repo, dirs_exist_ok=True)
    assert suite.run_check(task, repo)[0]


def test_editing_the_tests_does_not_count_as_solved(tmp_path):
    task = next(t for t in TASKS if t.name == "wrong_operator")
    repo = suite.prepare_repo(task, tmp_path / "repo")
    for rel in task.test_files():
        (repo / rel).write_text("def test_nothing():\n    pass\n")
    passed, _ = suite.run_check(task, repo)
    assert not passed


AIDER_OUTPUT = """\
Aider v0.86.2
Model: openai/qwen2.5-coder-1.5b with whole edit format
Tokens: 1.2k sent, 85 received.
Applied edit to geometry.py
============================= 1 failed, 1 passed in 0.02s
Tokens: 1.6k sent, 40 received.
The LLM did not conform to the edit format.
Tokens: 1.9k sent, 1.1k received.
Applied edit to geometry.py
"""


def test_aider_metrics_split_its_output_per_reply():
    m = suite.aider_metrics(AIDER_OUTPUT)
    assert m == {"replies": 3, "replies_with_edits": 2, "prompt_tokens": 4700, "completion_tokens": 1225,
                 "first_prompt_tokens": 1200}


def _reply_fixing(task) -> str:
    """A SEARCH/REPLACE reply that turns the task's shipped files into its reference fix."""
    import difflib

    blocks = []
    for sol in sorted(task.solution.rglob("*.py")):
        rel = str(sol.relative_to(task.solution))
        old = (task.repo / rel).read_text().splitlines()
        new = sol.read_text().splitlines()
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new).get_opcodes():
            if op == "equal":
                continue
            lo = max(0, i1 - 1)
            blocks.append(f"{rel}\n<<<<<<< SEARCH\n" + "\n".join(old[lo:i2]) + "\n=======\n"
                          + "\n".join(old[lo:i1] + new[j1:j2]) + "\n>>>>>>> REPLACE\n")
    return "\n".join(blocks)


def test_run_suite_drives_agentloop_and_judges_by_the_check(tmp_path, capsys):
    by_name = {t.name: t for t in TASKS}
    tasks = [by_name["wrong_operator"], by_name["missing_return"]]
    out = tmp_path / "results.json"
    with FakeLLM([{"content": _reply_fixing(tasks[0])}]) as server:
        code = suite.main(["--tool", "agentloop", "--model", "openai/fake", "--api-base", server.api_base,
                           "--max-turns", "2", "--task-timeout", "120", "--tasks", *[t.name for t in tasks],
                           "--out", str(out), "--logs", str(tmp_path / "logs")])
    assert code == 0
    runs = {r["task"]: r for r in json.loads(out.read_text())["runs"]}
    assert runs["wrong_operator"]["solved"] and runs["wrong_operator"]["outcome"] == "accepted"
    assert runs["wrong_operator"]["check_passed"] and not runs["missing_return"]["check_passed"]
    assert runs["wrong_operator"]["replies_with_edits"] == 1 and runs["wrong_operator"]["turns"] == 1
    # The same reply cannot apply to the other task: not solved, and the run ended cleanly.
    assert not runs["missing_return"]["solved"]
    assert runs["missing_return"]["outcome"] in ("gave_up", "budget_exhausted")
    assert (tmp_path / "logs" / "wrong_operator.agentloop.runs").is_dir()
    table = capsys.readouterr().out
    assert "| agentloop | 1/2 | 50% |" in table
