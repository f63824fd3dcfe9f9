"""`agentloop init`'s file stays valid when its comments are followed, and protects the tests it found."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from conftest import make_repo

from agentloop.cli import cli
from agentloop.config import load_config

EXAMPLE = re.compile(r"^(\s*)# ((?:- |model: |api_base: ).*?)(\s{2,}\(.*)?$")


def uncomment_examples(text: str) -> str:
    """What a person does with the file: turn every commented example into a setting."""
    return "\n".join(EXAMPLE.sub(r"\1\2", line) for line in text.splitlines()) + "\n"


@pytest.mark.parametrize("files", [
    {"test_calc.py": "def test_x():\n    pass\n", "calc.py": "x = 1\n"},
    {"tests/test_a.py": "def test_a():\n    pass\n", "conftest.py": ""},
    {"README": "no tests here\n"},
])
def test_following_the_comments_keeps_the_file_valid(files, tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "r", files)
    monkeypatch.chdir(repo)
    assert CliRunner().invoke(cli, ["init"]).exit_code == 0
    path = repo / ".agentloop.yaml"
    as_written = load_config(repo, environ={})
    path.write_text(uncomment_examples(path.read_text()))
    followed = load_config(repo, environ={})  # raises ConfigError on a YAML or setting error
    assert followed.model and followed.api_base
    assert len(followed.protect) > len(as_written.protect)
    assert len(followed.checks) >= 1 and followed.files and followed.pass_env


def test_the_tests_found_are_protected(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "r", {"tests/test_a.py": "def test_a():\n    pass\n", "conftest.py": "",
                                      "test_top.py": "def test_t():\n    pass\n", "app.py": "x = 1\n"})
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(cli, ["init"])
    assert "protected from the model's edits: tests/**, test_*.py, conftest.py" in result.output
    assert set(load_config(repo, environ={}).protect) >= {"tests/**", "test_*.py", "conftest.py"}
