"""`agentloop init`: write a commented `.agentloop.yaml` with the checks this repository shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from agentloop.config import CONFIG_FILE
from agentloop.files import atomic_write


def detect_checks(repo: Path) -> list[tuple[str, str]]:
    """(command, why) for each test runner the repository shows, most specific first."""
    found: list[tuple[str, str]] = []
    pyproject = repo / "pyproject.toml"
    py_text = pyproject.read_text(encoding="utf-8", errors="replace") if pyproject.is_file() else ""
    setup_cfg = repo / "setup.cfg"
    if ((repo / "pytest.ini").is_file() or "[tool.pytest" in py_text or (repo / "conftest.py").is_file()
            or (setup_cfg.is_file() and "[tool:pytest]" in setup_cfg.read_text(errors="replace"))
            or any(repo.glob("test_*.py")) or any(repo.glob("tests/**/test_*.py"))
            or any(repo.glob("tests/**/*_test.py"))):
        found.append(("python -m pytest -q", "found pytest configuration or test_*.py files"))
    package_json = repo / "package.json"
    if package_json.is_file():
        try:
            scripts = json.loads(package_json.read_text(encoding="utf-8")).get("scripts", {})
        except (json.JSONDecodeError, AttributeError):
            scripts = {}
        if isinstance(scripts, dict) and "test" in scripts:
            found.append(("npm test", "package.json has a test script"))
    if (repo / "Cargo.toml").is_file():
        found.append(("cargo test", "found Cargo.toml"))
    if (repo / "go.mod").is_file():
        found.append(("go test ./...", "found go.mod"))
    makefile = next((repo / n for n in ("Makefile", "makefile", "GNUmakefile") if (repo / n).is_file()), None)
    if makefile and re.search(r"^test\s*:", makefile.read_text(errors="replace"), re.M):
        found.append(("make test", f"{makefile.name} has a test target"))
    return found


def detect_tests(repo: Path) -> list[str]:
    """Globs for the test files the repository shows: what the model should not be able to rewrite."""
    globs: list[str] = []
    for folder in ("tests", "test", "spec", "__tests__"):
        if (repo / folder).is_dir():
            globs.append(f"{folder}/**")
    for pattern in ("test_*.py", "*_test.py", "conftest.py", "pytest.ini", "*_test.go"):
        if any(p.is_file() for p in repo.glob(pattern)):
            globs.append(pattern)
    if any(repo.glob("**/*_test.go")) and "*_test.go" not in globs:
        globs.append("**/*_test.go")
    return globs


TEMPLATE = """\
# agentloop configuration: every setting is described in agentloop's README (Configuration).
# Precedence: these values < environment (AGENTLOOP_MODEL, AGENTLOOP_API_BASE) < command-line flags.

# The model, as a litellm model string: "gpt-4.1-mini", "anthropic/claude-sonnet-4-5",
# or "openai/<name>" together with api_base for a local OpenAI-compatible server.
# model: gpt-4.1-mini
# api_base: http://127.0.0.1:8080/v1

# Checks: commands run from the repository root; exit code 0 means pass.
#   feedback: true  -> the model sees the output (default)
#   accept: true    -> must pass for the run to succeed (default)
# A check with feedback: false is a hidden acceptance check.
checks:
{checks}

# Tests and the harness (tests/, test_*.py, conftest.py, pytest/tox config, setup.cfg, .gitignore,
# .gitattributes, this file, the Makefile or package.json a check runs through) are protected by
# default: the model's edits there are refused, and checks run against them as they were when the
# run started. The tests found here are listed too, so they stay protected whatever the defaults;
# add more globs (examples below stay valid YAML when uncommented); set allow_test_edits: true for
# tasks that must change tests.
protect:
{protect}
  # - ".github/**"
  # - "scripts/check.sh"
allow_test_edits: false

# Run checks under bubblewrap (no network, writes only inside the repository): auto | bwrap | off.
sandbox: auto

# Files always shown to the model at the start, e.g.:
files:
  # - src/main.py

# Edit format: auto, search_replace, udiff, whole, apply_patch.
edit_format: auto

# Limits; whichever is reached first ends the run.
budget:
  max_turns: {max_turns}
  max_model_calls: {max_model_calls}
  max_tokens: {max_tokens}
  max_cost: {max_cost}       # USD
  time_limit: {time_limit}     # seconds

check_timeout: {check_timeout}   # seconds per check; the whole process tree is killed after it

# Environment variables passed to checks besides the harmless defaults (PATH, HOME, LANG, ...).
# Secrets such as *_API_KEY are withheld unless named here, e.g.:
pass_env:
  # - DATABASE_URL

# Files git neither tracks nor has staged are not shown to the model unless this is true.
include_untracked: false

# `agentloop runs --prune` keeps this many newest runs (and their agentloop/<id> branches).
keep_runs: 20
"""


@click.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing .agentloop.yaml.")
def init_command(force: bool) -> None:
    """Write a commented .agentloop.yaml with the checks this repository shows.

    Exit codes: 0 written, 2 not inside a git repository or the file exists (pass --force).
    """
    from agentloop.config import Budget, Config
    from agentloop.errors import UsageError
    from agentloop.workspace.repo import find_repo_root

    repo = find_repo_root(Path.cwd())
    target = repo / CONFIG_FILE
    if target.exists() and not force:
        raise UsageError(f"{target} already exists; edit it, or pass --force to overwrite it")
    detected = detect_checks(repo)
    if detected:
        checks = "\n".join(f"  - run: {json.dumps(cmd)}    # {why}" for cmd, why in detected)
    else:
        checks = '  # - run: "python -m pytest -q"   (no test runner detected: add your own)'
    tests = detect_tests(repo)
    protect = "\n".join(f"  - {json.dumps(glob)}" for glob in tests) or "  # - \"tests/**\""
    budget, defaults = Budget(), Config()
    text = TEMPLATE.format(checks=checks, protect=protect, max_turns=budget.max_turns,
                           max_model_calls=budget.max_model_calls,
                           max_tokens=budget.max_tokens, max_cost=budget.max_cost,
                           time_limit=int(budget.time_limit), check_timeout=int(defaults.check_timeout))
    atomic_write(target, text)
    click.echo(f"wrote {target}")
    for cmd, why in detected:
        click.echo(f"  check: {cmd}  ({why})")
    if not detected:
        click.echo("  no test runner detected: add a check under 'checks:'")
    if tests:
        click.echo(f"  protected from the model's edits: {', '.join(tests)} (edit 'protect:' to change that)")
    click.echo("  set 'model:' there or pass --model to agentloop fix")
