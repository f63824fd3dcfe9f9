"""agentloop's pytest plugin: per-test outcomes written to a report only agentloop reads.

Why: a test process's exit code can be forged from inside it (an `atexit` hook calling
`os._exit(0)`, a conftest setting `session.exitstatus = 0`, a `pytest.py` shadowing the runner).
This plugin writes one JSON line per test phase, as each ends, to a file outside the workspace,
each line carrying a nonce agentloop chose for this run; agentloop (agentloop.workspace.grading) then
judges the check from those lines, not from the exit code alone.

Two ways in (standard library only: this module is imported inside the user's own Python):
- `main(...)`: agentloop runs `python -c "...agentloop_grade.main(...)" ARGS` instead of
  `python -m pytest ARGS`. pytest is imported with the repository off `sys.path`, so no file
  there (pytest.py, pytest/, _pytest/, pluggy) can stand in for it; then `sys.path` is put back
  as `python -m pytest` (or the `pytest` script) would have it, and pytest runs with this plugin.
- `-p agentloop_grade` with AGENTLOOP_GRADE="<report path>\\n<nonce>" in the environment, for a
  check declared `kind: pytest` whose command agentloop cannot rewrite (`make test`).
"""

from __future__ import annotations

import json
import os
import sys

ENV = "AGENTLOOP_GRADE"
_state: dict = {}


def _open(report: str, nonce: str) -> None:
    _state["fd"] = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    _state["nonce"] = nonce
    _write({"event": "start", "pid": os.getpid()})


def _write(data: dict) -> None:
    fd = _state.get("fd")
    if fd is None:
        return
    line = json.dumps({"n": _state["nonce"], **data}) + "\n"
    try:
        os.write(fd, line.encode("utf-8"))
    except OSError:
        pass


def _inside(path: str | None, root: str) -> bool:
    if not path:
        return False
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def main(mode: str, report: str, nonce: str) -> None:
    """Run pytest as `python -m pytest` (mode "module") or the `pytest` script in folder `mode`."""
    cwd = os.getcwd()
    root = os.path.realpath(cwd)
    saved = list(sys.path)  # [this plugin's folder, "" (for -c, unless PYTHONSAFEPATH), ...the rest]
    sys.path[:] = [p for p in saved if p and not _inside(p, root)]
    _open(report, nonce)
    planted = [name for name in ("sitecustomize", "usercustomize")
               if _inside(getattr(sys.modules.get(name), "__file__", None), root)]
    if planted:
        _write({"event": "planted", "modules": planted})
    import pytest  # the installed one: nothing in the repository is on sys.path now

    first = cwd if mode == "module" else mode
    sys.path[:] = [first, *(p for p in saved[1:] if p)]  # saved[0]: this folder; "": the -c working dir
    code = pytest.main(plugins=[sys.modules[__name__]])
    sys.stdout.flush()
    sys.exit(int(code))


if ENV in os.environ and "fd" not in _state:  # loaded by `-p agentloop_grade`
    _report, _, _nonce = os.environ.pop(ENV).partition("\n")
    _open(_report, _nonce)


def pytest_collectreport(report) -> None:
    if report.failed:
        _write({"event": "collect_error", "id": report.nodeid})


def pytest_runtest_logreport(report) -> None:
    outcome = report.outcome
    if hasattr(report, "wasxfail"):
        outcome = "xfailed" if report.skipped else "xpassed"
    _write({"event": "test", "id": report.nodeid, "when": report.when, "outcome": outcome})


def pytest_sessionfinish(session, exitstatus) -> None:
    _write({"event": "end", "exitstatus": int(exitstatus), "collected": int(getattr(session, "testscollected", 0))})
