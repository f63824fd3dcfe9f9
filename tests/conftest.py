"""Shared fixtures: real temporary git repositories and the scripted model server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]

# Property tests explore new examples on a developer's machine, but CI replays the same ones every run,
# so a stop's verdict never depends on luck (a counterexample found locally becomes a regression test).
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        _hypothesis_settings.load_profile("ci")
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass


def validate_event(event: object) -> list[str]:
    """Problems with one trajectory event against the shipped schema, as "path: message" lines."""
    import jsonschema

    from agentloop.record.schema import trajectory_schema

    validator = jsonschema.Draft202012Validator(trajectory_schema())
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(event)]

BUGGY_CALC = '''\
def add(a, b):
    return a - b


def mul(a, b):
    return a * b
'''
CALC_TEST = '''\
from calc import add, mul


def test_add():
    assert add(2, 3) == 5


def test_mul():
    assert mul(2, 3) == 6
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "Test")
    git(path, "config", "commit.gpgsign", "false")
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "initial")
    return path


@pytest.fixture
def calc_repo(tmp_path: Path) -> Path:
    """A repository whose pytest suite fails: add() subtracts."""
    return make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """No real provider keys or agentloop settings leak in from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("AGENTLOOP_") or name.endswith("_API_KEY"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")


PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider"
# The scripted model's usual right answer for BUGGY_CALC.
FIX_ADD = """calc.py
<<<<<<< SEARCH
    return a - b
=======
    return a + b
>>>>>>> REPLACE
"""


@pytest.fixture(params=["a reaper per check", "one reaper"])
def reaping(request, monkeypatch):
    """Checks run the two ways agentloop runs them with the sandbox off: each under a reaper of its
    own (`fix`, the hook), or all under one long-lived reaper (a batch runner: reaper_client)."""
    from agentloop.workspace import reaper_client

    if request.param == "one reaper":
        monkeypatch.setattr(reaper_client, "_wanted", True)
    yield request.param
    if reaper_client._reaper is not None:
        reaper_client._reaper.close()
