"""The CLI loads a command's module only when that command runs: `--help` stays instant."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from agentloop.cli import COMMANDS, cli


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_listed_help_matches_the_command(name):
    command = cli.get_command(click.Context(cli), name)
    assert command is not None and command.name == name
    listed = click.Command(name, help=COMMANDS[name][1])
    for limit in (40, 68, 200):
        assert listed.get_short_help_str(limit) == command.get_short_help_str(limit)


def test_help_imports_no_command_module():
    code = ("import sys\nfrom agentloop.cli import cli\ntry:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m.startswith(('agentloop.commands.', 'litellm', "
            "'yaml', 'jinja2', 'git'))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOADED []" in proc.stdout, proc.stdout
    for name in COMMANDS:
        assert f"  {name} " in proc.stdout  # every command still listed


def test_unknown_command_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "agentloop", "fixx"], capture_output=True, text=True)
    assert proc.returncode == 2 and "No such command 'fixx'" in proc.stderr


def test_startup_benchmark_runs_and_finds_no_litellm_on_the_pass_path():
    """The benchmark's figures are for people; here only that it runs and its import probe works."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_startup.py"
    proc = subprocess.run([sys.executable, str(bench), "-n", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "agentloop --help" in proc.stdout and "pass-path overhead (check in args):" in proc.stdout
    assert "heavy modules imported on the pass path: none (no litellm)" in proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["hook", "true"], ["hook"]])
def test_gitpython_stays_unloaded_on_help_and_the_hook_pass_path(tmp_path, args):
    """gitpython costs ~100 ms of CPU and a `git version` process at import (docs/git.md): the paths
    that must stay instant never load it, nor the loop's check suite."""
    from conftest import make_repo

    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n", ".agentloop.yaml": "checks: ['true']\n"})
    code = ("import sys\nfrom agentloop.cli import cli\ntry:\n"
            f"    cli({args!r})\nexcept SystemExit as exc:\n"
            "    loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('git', 'gitdb', 'smmap', 'litellm')\n"
            "                    or m in ('agentloop.workspace.suite', 'agentloop.run.loop'))\n"
            "    print('RESULT', exc.code, loaded)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLOOP_")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, env=env)
    assert "RESULT 0 []" in proc.stdout, proc.stdout + proc.stderr
