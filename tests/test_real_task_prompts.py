"""What a small local model is shown and told on the real tasks of benchmarks/tasks/ (issue 16): the
defects the live suite found (benchmarks/results/real-suite.md), reproduced on the tasks' own trees
and failing outputs, with no model run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from agentloop.edits import apply_reply, render_failures
from agentloop.run import budget, feedback, opening, rules
from agentloop.workspace.checks import CommandResult

TASKS = Path(__file__).resolve().parent.parent / "benchmarks" / "tasks"
SMALL_QWEN = "openai/qwen2.5-coder-1.5b"


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
                             env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
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
    built = task.opening(1400)  # the system message and the failure leave ~50 of its 88 lines room
    rel = "boltons/strutils.py"
    assert rel in built.partial
    assert "`format_int_list` runs from line 912 to line 999; lines " in built.user
    assert "Do not write it whole: change the lines shown with a SEARCH/REPLACE block." in built.user
    # the model writes out what it saw: the definition up to the last line shown
    shown = built.user.split(f"{rel} lines 912-", 1)[1].split("```python\n", 1)[1].split("\n```", 1)[0]
    fixed = shown.replace("elif delta > 2:", "elif delta > 1:")
    assert fixed != shown and "return output_str" not in shown
    reply = f"{rel}::format_int_list\n```python\n{fixed}\n```\n"
    before = (task.root / rel).read_text()
    result = apply_reply(task.root, reply, known_files=task.files, partial=built.partial)
    assert not result.applied and (task.root / rel).read_text() == before
    why = render_failures(result)
    assert "you were shown only part of format_int_list (it runs from line 912 to line 999; lines " in why
    assert "SEARCH/REPLACE" in why and "does not parse" not in why
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
