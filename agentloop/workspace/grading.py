"""Structured grading of pytest checks: a verdict from per-test outcomes, not from an exit code.

A check's exit code can be forged by the code it tests (an `atexit` hook calling `os._exit(0)`,
a conftest setting `session.exitstatus = 0`) or by a file that shadows the runner (`pytest.py`
at the repository root). For a pytest check, agentloop therefore runs pytest through its own
plugin (agentloop/workspace/pytest_plugin/agentloop_grade.py), which writes each test's outcome to a report
in a fresh folder outside the workspace, every line tagged with a nonce chosen for that run. The
check passes only if, besides exiting 0, that report is complete and shows:

- no failed or erroring test, no collection error, at least one test passed;
- every test that ran at the start (turn 0: passed, failed or errored) ran again and passed, so
  deselecting, skipping, xfailing or deleting them cannot pass;
- no test skipped or xfailed now that was not skipped or xfailed at the start.

A missing, incomplete or forged report fails the check whatever the exit code. Other commands
keep the exit code as their only verdict. Known limit: code running inside the test process that
deliberately targets this plugin (reads the nonce from its command line and writes the report
itself) could still forge it; protected files, the flags and the sandbox are the other layers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PLUGIN_DIR = Path(__file__).with_name("pytest_plugin")
PLUGIN = "agentloop_grade"
PYTHON = re.compile(r"^python(\d+(\.\d+)*)?$")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
EXPANDS = re.compile(r"[$~*?\[{]")  # a word the shell would expand: re-quoting it would change it
KINDS = ("auto", "pytest", "command")
RAN = ("passed", "failed", "error")  # outcomes of a test that ran
NOT_RUN = ("skipped", "xfailed")


def is_pytest(command: str) -> bool:
    """Whether `command` runs pytest: `python -m pytest`, `python3 -m pytest`, `pytest`, `py.test`,
    possibly after `VAR=value` assignments, as one simple command (no `&&`, pipes, or subshells)."""
    return _split(command) is not None


def _split(command: str) -> tuple[list[str], str, list[str]] | None:
    """(assignments, program kind, pytest args) for a simple pytest command, else None.
    The kind is "module" for `python -m pytest`, or the program itself for `pytest`/`py.test`."""
    if "`" in command or "$(" in command or "\n" in command:
        return None
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        return None
    if any(t and set(t) <= set("();<>|&") for t in tokens):
        return None
    i = 0
    while i < len(tokens) and ASSIGNMENT.match(tokens[i]):
        i += 1
    if i >= len(tokens):
        return None
    program, rest = tokens[i], tokens[i + 1:]
    name = os.path.basename(program)
    if PYTHON.match(name) and rest[:2] == ["-m", "pytest"]:
        return tokens[:i], "module", [program, *rest[2:]]
    if name in ("pytest", "py.test"):
        return tokens[:i], program, rest
    return None


def _rewritable(command: str) -> bool:
    """Whether the words of `command` survive being quoted again (no expansions, no quoting tricks)."""
    return not EXPANDS.search(command) and "\\" not in command


def _script_python(program: str, env: Mapping[str, str]) -> str | None:
    """The interpreter of a `pytest` script on PATH, from its `#!` line."""
    found = program if "/" in program else shutil.which(program, path=env.get("PATH"))
    if not found:
        return None
    try:
        with open(found, "rb") as fh:
            first = fh.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    parts = first[2:].split()
    if len(parts) == 1 and PYTHON.match(os.path.basename(parts[0])):
        return parts[0]
    if len(parts) == 2 and os.path.basename(parts[0]) == "env" and PYTHON.match(parts[1]):
        return parts[1]
    return None


@dataclass
class Report:
    """A parsed report: per-test outcome (worst phase), collection errors, completeness."""

    complete: bool = False
    forged: str = ""
    outcomes: dict[str, str] = field(default_factory=dict)
    collect_errors: list[str] = field(default_factory=list)
    planted: list[str] = field(default_factory=list)

    def ids(self, *outcomes: str) -> list[str]:
        return [t for t, o in self.outcomes.items() if o in outcomes]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for outcome in self.outcomes.values():
            out[outcome] = out.get(outcome, 0) + 1
        return dict(sorted(out.items()))


def parse_report(path: Path, nonce: str) -> Report:
    from hmac import compare_digest  # only once a report is read: hmac imports hashlib

    report = Report()
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return report
    started = ended = False
    phases: dict[str, dict[str, str]] = {}
    for line in lines:
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            report.forged = "a line that is not agentloop's"
            continue
        if not isinstance(data, dict) or not compare_digest(str(data.get("n")), nonce):
            report.forged = "a line without this run's nonce"
            continue
        event = data.get("event")
        if ended:
            report.forged = "lines after the end of the session"
        elif event == "start":
            if started:
                report.forged = "a second session start"
            started = True
        elif event == "end":
            ended = True
        elif event == "planted":
            report.planted += [str(m) for m in data.get("modules") or []]
        elif event == "collect_error":
            report.collect_errors.append(str(data.get("id")))
        elif event == "test":
            when = str(data.get("when"))
            seen = phases.setdefault(str(data.get("id")), {})
            if when in seen:
                report.forged = f"a second {when} report for one test"
            seen[when] = str(data.get("outcome"))
    report.complete = started and ended
    for test, seen in phases.items():
        report.outcomes[test] = _outcome(seen)
    return report


def _outcome(phases: dict[str, str]) -> str:
    if phases.get("setup") == "failed" or phases.get("teardown") == "failed":
        return "error"
    if phases.get("setup") in NOT_RUN:
        return phases["setup"]
    call = phases.get("call")
    return {"passed": "passed", "failed": "failed", "skipped": "skipped", "xfailed": "xfailed",
            "xpassed": "xpassed"}.get(call or "", "error")


def verdict(report: Report, baseline: Report | None) -> str:
    """"" when the report accepts the check, else why not (one line, shown to the model)."""
    if report.forged:
        return f"the test report was tampered with ({report.forged})"
    if not report.complete:
        return ("pytest did not finish its session (no complete test report): the test process ended early "
                "or pytest did not run")
    if report.planted:
        return f"{', '.join(report.planted)} in the repository ran inside the test process"
    bad = report.ids("failed", "error")
    if bad or report.collect_errors:
        listed = (report.collect_errors + bad)[:5]
        return (f"{len(bad)} test(s) failed and {len(report.collect_errors)} file(s) failed to collect: "
                f"{', '.join(listed)}")
    if not report.ids("passed"):
        return "no test passed (none ran, or all were skipped or deselected)"
    if baseline is not None and baseline.complete:
        lost = [t for t in baseline.ids(*RAN) if report.outcomes.get(t) != "passed"]
        if lost:
            how = ", ".join(f"{t} ({report.outcomes.get(t, 'did not run')})" for t in lost[:5])
            return f"{len(lost)} test(s) that ran at the start did not pass now: {how}"
        was_not_run = set(baseline.ids(*NOT_RUN))
        newly = [t for t in report.ids(*NOT_RUN) if t not in was_not_run]
        if newly:
            return f"{len(newly)} test(s) skipped or xfailed now that were not at the start: {', '.join(newly[:5])}"
    return ""


@dataclass
class Graded:
    """One run of a pytest check: the command to run, the environment, the report to read."""

    command: str
    env: dict[str, str]
    folder: Path
    nonce: str

    @property
    def report_path(self) -> Path:
        return self.folder / "report.jsonl"

    def read(self) -> Report:
        report = parse_report(self.report_path, self.nonce)
        self.discard()
        return report

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def prepare(command: str, kind: str, env: Mapping[str, str]) -> Graded | None:
    """How to run `command` graded, or None for an exit-code-only check (`kind: command`, or not pytest)."""
    if kind == "command":
        return None
    split = _split(command)
    if split is None and kind != "pytest":
        return None
    import tempfile  # here, not at the top: tempfile and secrets pull in random and hashlib (tens of ms),
    # which the hook's pass path, whose checks may not be pytest, should not pay for

    folder = Path(tempfile.mkdtemp(prefix="agentloop-grade-"))
    nonce = os.urandom(16).hex()  # not `secrets`: it imports hashlib and random, 35 ms on the hook's pass path
    report = str(folder / "report.jsonl")
    env = dict(env)
    python = None
    if split is not None and _rewritable(command):
        assignments, mode, args = split
        if mode == "module":
            python, args = args[0], args[1:]
        else:
            python = _script_python(mode, env)
            found = shutil.which(mode, path=env.get("PATH")) if "/" not in mode else mode
            mode = os.path.dirname(found or "") or "."
    if python is not None:
        boot = (f"import sys;sys.path.insert(0,{str(PLUGIN_DIR)!r});import {PLUGIN};"
                f"{PLUGIN}.main({mode!r},{report!r},{nonce!r})")
        return Graded(shlex.join([*assignments, python, "-c", boot, *args]), env, folder, nonce)
    # Declared pytest but not a command agentloop can rewrite: load the plugin through the environment.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGIN_DIR), env.get("PYTHONPATH", "")) if p)
    env["PYTEST_ADDOPTS"] = f"{env.get('PYTEST_ADDOPTS', '')} -p {PLUGIN}".strip()
    env["AGENTLOOP_GRADE"] = f"{report}\n{nonce}"
    return Graded(command, env, folder, nonce)


def grade_note(verdict_text: str) -> str:
    return f"\n[agentloop] this check did not pass: {verdict_text}\n"


def summary(report: Report, verdict_text: str) -> dict:
    """What the trajectory records about a graded check."""
    return {"kind": "pytest", "ok": not verdict_text, "verdict": verdict_text, "complete": report.complete,
            "counts": report.counts()}
