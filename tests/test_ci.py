"""`agentloop fix` in CI: --output-patch, the GitHub job summary, --json, never a prompt."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner
from conftest import FIX_ADD, PYTEST, git
from fake_llm import FakeLLM

from agentloop.cli import cli
from agentloop.record.ci import SUMMARY_DIFF_CAP, step_summary_markdown, write_patch


def test_output_patch_and_step_summary(calc_repo, tmp_path, monkeypatch):
    summary_file = tmp_path / "step_summary.md"
    summary_file.write_text("## earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    monkeypatch.chdir(calc_repo)
    out = tmp_path / "out" / "fix.patch"
    out.parent.mkdir()
    with FakeLLM([{"content": FIX_ADD}]) as server:
        result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--api-base", server.api_base, "--check",
                                          PYTEST, "--json", "--output-patch", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    patch = out.read_text()
    assert "+    return a + b" in patch and patch == (tmp_path.joinpath(summary["patch"])).read_text()
    # The patch applies to the original tree: it is what a reviewer would `git apply`.
    git(calc_repo, "checkout", "--", "calc.py")
    subprocess.run(["git", "apply", "--check", str(out)], cwd=calc_repo, check=True)
    report = summary_file.read_text()
    assert report.startswith("## earlier step\n")  # appended, never overwritten
    assert "### ✅ agentloop fix: accepted" in report
    assert "| 1 | 1 |" in report  # turns, model calls
    assert "```diff" in report and "+    return a + b" in report
    assert summary["run_id"] in report
    assert not list(out.parent.glob(".*.tmp"))  # no temporary file left behind


def test_output_patch_is_empty_when_nothing_changed(calc_repo, tmp_path, monkeypatch):
    monkeypatch.chdir(calc_repo)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    out = tmp_path / "none.patch"
    result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--check", "true", "--output-patch", str(out)])
    assert result.exit_code == 0 and out.read_text() == ""


def test_output_patch_in_a_missing_folder_is_a_usage_error(calc_repo, tmp_path, monkeypatch):
    monkeypatch.chdir(calc_repo)
    result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--check", "true",
                                      "--output-patch", str(tmp_path / "no" / "x.patch")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (calc_repo / ".agentloop").exists()  # refused before any run starts


def test_never_prompts_even_with_a_terminal_less_stdin(calc_repo):
    """No model: the command ends with a usage error at once, before running the suite, instead of asking."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(calc_repo), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run([sys.executable, "-m", "agentloop", "fix", "--check", PYTEST, "--json"], cwd=calc_repo,
                          input="", capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert "no model is configured" in proc.stderr
    assert proc.stdout == "" and not (calc_repo / ".agentloop").exists()


def test_step_summary_caps_the_diff_and_survives_fences():
    diff = "diff --git a/x b/x\n+```\n" + "+x\n" * SUMMARY_DIFF_CAP
    text = step_summary_markdown({"outcome": "budget_exhausted", "reason": "max_turns (3) reached", "turns": 3,
                                  "cost_usd": 0.25, "checks": [{"command": "pytest", "exit_code": 1,
                                                                "passed": False}]}, diff)
    assert "### ❌ agentloop fix: budget_exhausted" in text
    assert "$0.2500" in text and "- FAIL (exit 1): `pytest`" in text
    assert "[... diff cut ...]" in text and len(text) < SUMMARY_DIFF_CAP + 2000
    assert "````diff" in text  # a longer fence, since the diff holds ```


def test_write_patch_replaces_whole(tmp_path):
    target = tmp_path / "p.patch"
    target.write_text("old")
    write_patch(target, "new\n")
    assert target.read_text() == "new\n"
