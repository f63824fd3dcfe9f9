"""What a small local model is shown and told on the real tasks of benchmarks/tasks/ (issue 16): the
defects the live suite found (benchmarks/results/real-suite.md), reproduced on the tasks' own trees
and failing outputs, with no model run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentloop.edits import apply_reply, render_failures
from agentloop.run import budget, feedback, opening, rules
from agentloop.workspace.checks import CommandResult

TASKS = Path(__file__).resolve().parent.parent / "benchmarks" / "tasks"
SMALL_QWEN = "openai/qwen2.5-coder-1.5b"


_CLEAN_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
              "LANG": "C.UTF-8", "COLUMNS": "80", "PYTHONDONTWRITEBYTECODE": "1"}


class Task:
    """A real task's repository copied to a temporary directory, and its check's failing output."""

    def __init__(self, name: str, tmp_path: Path):
        self.spec = yaml.safe_load((TASKS / name / "task.yaml").read_text())
        self.root = tmp_path / "repo"
        shutil.copytree(TASKS / name / "repo", self.root)
        self.files = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                            if p.is_file() and "__pycache__" not in p.parts)
        command = self.spec["check"].replace("python ", f"{sys.executable} ", 1)
        run = subprocess.run(command, shell=True, cwd=self.root, capture_output=True, text=True, timeout=300,
                             env=_CLEAN_ENV)  # the same output whatever earlier tests left in os.environ
        assert run.returncode != 0, run.stdout + run.stderr
        self.output = run.stdout + run.stderr
        self.failing = CommandResult(command=self.spec["check"], exit_code=run.returncode, output=self.output,
                                     duration_s=1.0)

    def opening(self, cap: int | None, edit_format: str = "function") -> opening.Opening:
        """The first prompt as `agentloop fix` builds it for the small Qwen coder (its system message)."""
        def system(path: str) -> str:
            return feedback.render("system.j2", tools=False, edit_format=edit_format,
                                   give_up=rules.give_up_offered(SMALL_QWEN),
                                   **feedback.example_values(path, self.root))

        return opening.build(self.root, self.spec["description"], [self.failing], self.files, [], system, cap)

    def lines(self, rel: str) -> list[str]:
        return (self.root / rel).read_text().split("\n")


# -- 1. the definition the failure points into: whole when it fits, else the model is told what is missing --
def test_the_buggy_definition_is_shown_whole_under_the_cap(tmp_path):
    """boltons' format_int_list (88 lines) was cut to its first 37 under the 1,500-token cap, ending at the
    buggy line, while the function format asks for the whole definition: 3 replies of 3 wrote the cut
    definition and were refused as not parsing. Now the failing output and the outlines give way."""
    task = Task("boltons_format_int_list", tmp_path)
    cap = rules.first_prompt_tokens(SMALL_QWEN)
    assert cap == 1500
    built = task.opening(cap)
    source = task.lines("boltons/strutils.py")
    start = next(n for n, t in enumerate(source, 1) if t.startswith("def format_int_list("))
    end = next(n for n, t in enumerate(source, 1) if n > start and t.strip() == "return output_str")
    whole = "\n".join(source[start - 1:end])
    assert whole in built.user  # every line of it, the buggy `elif delta > 2:` and its `return` included
    assert "does not parse" not in built.user and built.estimated_tokens <= cap
    assert ">       assert strutils.format_int_list(" in built.user  # the failing assertion is kept
    assert "E       AssertionError" in built.user


def test_a_definition_too_long_for_the_cap_is_marked_and_a_cut_reply_refused_with_the_reason(tmp_path):
    """When the definition cannot fit whole, the prompt says which of its lines were not shown, and a
    reply that writes out the cut definition is refused saying so (not "does not parse"); a
    SEARCH/REPLACE block on the lines shown applies."""
    task = Task("boltons_format_int_list", tmp_path)
    built = task.opening(1400)  # the system message and the failure leave room for some 25 of its 88 lines
    rel = "boltons/strutils.py"
    assert rel in built.partial
    assert "`format_int_list` runs from line 912 to line 999; lines " in built.user
    assert "Do not write it whole: change the lines shown with a SEARCH/REPLACE block." in built.user
    # the model writes out what it saw: the definition up to the last line shown
    shown = built.user.split(f"{rel} lines 912-", 1)[1].split("```python\n", 1)[1].split("\n```", 1)[0]
    first_body_line = shown.split("\n")[1]  # (how many lines fit depends on the paths in the output)
    fixed = shown.replace(first_body_line, first_body_line + " Fixed.", 1)
    assert fixed != shown and "return output_str" not in shown
    reply = f"{rel}::format_int_list\n```python\n{fixed}\n```\n"
    before = (task.root / rel).read_text()
    result = apply_reply(task.root, reply, known_files=task.files, partial=built.partial)
    assert not result.applied and (task.root / rel).read_text() == before
    why = render_failures(result)
    assert "you were shown only part of format_int_list (it runs from line 912 to line 999; lines " in why
    assert "SEARCH/REPLACE" in why and "does not parse" not in why
    # a definition it was never shown (only its outline row) is not rewritten from a guess either
    guess = f"{rel}::parse_int_list\n```python\ndef parse_int_list(range_string, delim=','):\n    return []\n```\n"
    result = apply_reply(task.root, guess, known_files=task.files, partial=built.partial)
    assert not result.applied and "you were not shown parse_int_list (lines 875-" in render_failures(result)
    # the same change as a SEARCH/REPLACE block on lines it was shown
    sr = f"{rel}\n<<<<<<< SEARCH\n            elif delta > 2:\n=======\n            elif delta > 1:\n>>>>>>> REPLACE\n"
    result = apply_reply(task.root, sr, known_files=task.files, partial=built.partial)
    assert result.applied, render_failures(result)
    # and a reply holding the whole definition (it read the rest) is still taken
    (task.root / rel).write_text(before)
    source = task.lines(rel)
    whole = "\n".join(source[911:999]).replace("elif delta > 2:", "elif delta > 1:")
    result = apply_reply(task.root, f"{rel}::format_int_list\n```python\n{whole}\n```\n", known_files=task.files,
                         partial=built.partial)
    assert result.applied, render_failures(result)


def test_unseen_ranges():
    from agentloop.edits.definitions import shown_ranges, unseen_ranges

    assert unseen_ranges([(912, 949)], 912, 999) == [(950, 999)]
    assert unseen_ranges([(900, 905), (920, 930)], 903, 940) == [(906, 919), (931, 940)]
    assert unseen_ranges([(1, 100)], 10, 20) == []
    assert shown_ranges("lines 486-490, 560-604 of 1,049") == [(486, 490), (560, 604)]
    assert shown_ranges("only an outline of its 1,049 lines") == []
    assert budget.estimate_tokens("x") >= 1


# -- 2. every turn's new message is capped like the first ------------------------------------------------
# a typo in `_align_header` breaks every table with headers: 47 tests fail, with long tracebacks
BREAK_ALIGN_HEADER = """tabulate/__init__.py
<<<<<<< SEARCH
    ninvisible = len(header) - visible_width
=======
    ninvisible = len(headr) - visible_width
>>>>>>> REPLACE
"""


def fix_run(task: Task, replies: list[str], *extra: str) -> tuple[dict, list[dict]]:
    """`agentloop fix` on the task's tree (a git repository) for the small Qwen coder, its replies
    scripted through the fake HTTP server; the summary and the requests the server got."""
    import json

    from click.testing import CliRunner
    from conftest import git
    from fake_llm import FakeLLM

    from agentloop.cli import cli

    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.com"], ["config", "user.name", "T"],
                 ["config", "commit.gpgsign", "false"], ["add", "-A"], ["commit", "-qm", "initial"]):
        git(task.root, *args)
    check = task.spec["check"].replace("python ", f"{sys.executable} ", 1)
    cwd = os.getcwd()
    os.chdir(task.root)
    try:
        with FakeLLM([{"content": r} for r in replies]) as server:
            result = CliRunner().invoke(cli, ["fix", "-m", SMALL_QWEN, "--api-base", server.api_base, "--json",
                                              "--check", check, *extra], catch_exceptions=False)
    finally:
        os.chdir(cwd)
    return json.loads(result.stdout.strip().splitlines()[-1]), server.requests


@pytest.mark.parametrize("undo", [True, False], ids=["undone", "kept"])
def test_the_message_after_an_applied_edit_is_capped_like_the_first(tmp_path, monkeypatch, undo):
    """tabulate: the model's rewrite of `_align_header` broke 47 tests; the next message held 12,028
    characters of failing output and an outline (4,890 tokens, read in 136 s). It is now cut to the
    model's cap, the error and traceback lines (and, when the edit is kept, the changed code) kept.
    The small Qwen coders' wrong fix is undone (models.yaml undo_failed): the message then follows
    the first prompt and says so; without that rule it follows the reply and shows the changed code."""
    if not undo:
        monkeypatch.setattr(rules, "undo_failed", lambda model: False)
    task = Task("tabulate_afterpoint", tmp_path)
    summary, requests = fix_run(task, [BREAK_ALIGN_HEADER, "I cannot tell."], "--max-turns", "2")
    assert len(requests) == 2, summary
    after = requests[1]["messages"][-1]["content"]
    (tmp_path / "after.txt").write_text(after)
    cap = rules.first_prompt_tokens(SMALL_QWEN)
    assert budget.estimate_tokens(after) <= cap, budget.estimate_tokens(after)
    assert "NameError: name 'headr' is not defined" in after  # the error the edit caused
    if undo:
        assert requests[1]["messages"][:-1] == requests[0]["messages"]
        assert after.startswith("Your last reply changed tabulate/__init__.py, and the checks still failed:")
        assert after.rstrip().endswith("send a different fix.") and "has been undone" in after
        assert "headr" not in (task.root / "tabulate" / "__init__.py").read_text()
        return
    assert after.startswith("Your edits were applied to: tabulate/__init__.py.")
    assert "as it is now:\n```python\ndef _align_header(" in after  # the changed function, whole
    assert "    ninvisible = len(headr) - visible_width\n" in after


# -- 3. a definition named in the file that re-exports it: the refusal says which file defines it --------
def test_a_name_put_in_the_wrong_file_is_refused_saying_where_it_is_defined(tmp_path):
    """more_itertools' __init__ re-exports `totient` (`from .recipes import *`); the model wrote
    `more_itertools/__init__.py::totient` three times, refused each time without being told where
    `totient` is (recipes.py; recipes.pyi, a stub, also has it)."""
    task = Task("more_itertools_totient", tmp_path)
    reply = ("more_itertools/__init__.py::totient\n```python\ndef totient(n):\n"
             "    return sum(1 for k in range(1, n + 1) if math.gcd(n, k) == 1)\n```\n")
    summary, requests = fix_run(task, [reply, "I cannot tell."], "--max-turns", "2")
    assert len(requests) == 2, summary
    told = requests[1]["messages"][-1]["content"]
    assert ("more_itertools/__init__.py has no function, class or method 'totient'; `totient` is defined in "
            "more_itertools/recipes.py: write more_itertools/recipes.py::totient") in told
    init = "more_itertools/__init__.py"
    assert (task.root / init).read_text() == (TASKS / "more_itertools_totient" / "repo" / init).read_text()
    # a name defined in no file, or in several, keeps the usual reason
    files = lambda: task.files  # noqa: E731
    result = apply_reply(task.root, reply.replace("totient", "no_such_name"), known_files=task.files,
                         repo_files=files)
    assert "is defined in" not in render_failures(result)


# -- 4. the format example's `# changed` marker added to unchanged lines is a copied example ----------------
def test_an_edit_that_only_adds_the_example_marker_is_refused_as_a_copied_example(tmp_path):
    """toolz_compose, search_replace: the REPLACE copied the format example's `# changed` onto the buggy
    line (and applied). An edit whose only change is that marker, as a SEARCH/REPLACE block or a whole
    definition, is refused telling the model to make the real fix; the same edit with a real change applies."""
    task = Task("toolz_compose", tmp_path)
    rel = "toolz/functoolz.py"
    example = feedback.example_values(rel, task.root)
    assert example["example_replace"].startswith(example["example_search"].rstrip())
    marker = example["example_replace"][len(example["example_search"].rstrip()):]
    assert marker in ("  # changed", " (changed)")
    before = (task.root / rel).read_text()
    loop = "        for f in reversed(self.funcs):\n            ret = f(ret)\n"
    marked = "        for f in reversed(self.funcs):  # changed\n            ret = f(ret)\n"
    sr = f"{rel}\n<<<<<<< SEARCH\n{loop}=======\n{marked}>>>>>>> REPLACE\n"
    method = ("    def __call__(self, *args, **kwargs):\n        ret = self.first(*args, **kwargs)  # changed\n"
              "        for f in reversed(self.funcs):\n            ret = f(ret)\n        return ret\n")
    fn = f"{rel}::Compose.__call__\n```python\n{method}```\n"
    for reply in (sr, fn):
        result = apply_reply(task.root, reply, known_files=task.files)
        assert not result.applied and (task.root / rel).read_text() == before
        why = render_failures(result)
        assert "only adds the format example's `# changed` marker" in why and "Make the real fix" in why
    fixed = sr.replace("reversed(self.funcs):  # changed", "self.funcs:  # changed")
    assert apply_reply(task.root, fixed, known_files=task.files).applied


# -- 5. names the task text mentions are resolved to their definitions too -------------------------------
def test_the_function_the_task_names_is_shown_when_the_test_reaches_it_dynamically(tmp_path):
    """six's test reaches `six.iteritems` through `getattr(six, "iter" + name)`, and six defines it under
    `if PY3:`: the traceback leads nowhere near it, but the task text names it."""
    task = Task("six_iteritems", tmp_path)
    built = task.opening(rules.first_prompt_tokens(SMALL_QWEN))
    assert "    def iteritems(d, **kw):\n        return iter(d.values(**kw))" in built.user  # the bug
    assert built.files[0] == "six.py" and built.example_path == "six.py"
    assert built.estimated_tokens <= 1500


def test_a_name_the_task_gives_through_a_star_import_is_found(tmp_path):
    """more_itertools.totient: the package's __init__ has `from .recipes import *`; the first prompt
    held only the test file."""
    task = Task("more_itertools_totient", tmp_path)
    built = task.opening(rules.first_prompt_tokens(SMALL_QWEN))
    assert "more_itertools/recipes.py" in built.files
    assert "def totient(n):" in built.user


def test_task_names_rank_below_the_code_the_failure_leads_to(tmp_path):
    from agentloop.run import context

    root = tmp_path
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "core.py").write_text("def helper_one(x):\n    return x\n\n\ndef used(x):\n    return x + 1\n")
    (root / "test_core.py").write_text("from pkg.core import used\n\n\ndef test_used():\n    assert used(1) == 3\n")
    output = ("    def test_used():\n>       assert used(1) == 3\nE       assert 2 == 3\n\n"
              "test_core.py:5: AssertionError\nFAILED test_core.py::test_used - assert 2 == 3\n")
    files = ["pkg/__init__.py", "pkg/core.py", "test_core.py"]
    found = context.find_context(root, [output], files, task="used() is off by one; see also helper_one().")
    why = [p.why for p in found.parts if p.kind == "lines" and p.path == "pkg/core.py"]
    assert why == ["used, used by the failing code", "helper_one, named by the task"]
    assert not any("named by the task" in p.why for p in context.find_context(root, [output], files).parts)


def test_a_definition_under_a_top_level_if_can_be_named(tmp_path):
    """six defines `iteritems` under `if PY3:` and again under `else:`: `six.py::iteritems` was refused as
    not found (\"six.py has no function ...\"); it is now the usual ambiguity, pointing to SEARCH/REPLACE,
    and a definition made once under a top-level `if` is replaced in place, indented as it stands."""
    task = Task("six_iteritems", tmp_path)
    reply = "six.py::iteritems\n```python\ndef iteritems(d, **kw):\n    return iter(d.items(**kw))\n```\n"
    why = render_failures(apply_reply(task.root, reply, known_files=task.files))
    assert "six.py defines 'iteritems' more than once (lines 604, 622)" in why and "SEARCH/REPLACE" in why
    (tmp_path / "compat.py").write_text("import sys\n\nif sys.version_info >= (3,):\n    def pairs(d):\n"
                                        "        return iter(d.values())\n")
    result = apply_reply(tmp_path, "compat.py::pairs\n```python\ndef pairs(d):\n    return iter(d.items())\n```\n",
                         known_files=["compat.py"])
    assert result.applied, render_failures(result)
    assert (tmp_path / "compat.py").read_text().endswith("    def pairs(d):\n        return iter(d.items())\n")
