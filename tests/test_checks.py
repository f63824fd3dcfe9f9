"""The command runner: timeouts that kill whole process trees, capped output, a clean environment."""

from __future__ import annotations

import os
import time

from agentloop.workspace.checks import check_env, run_command


def test_exit_code_and_output(tmp_path, reaping):
    result = run_command("echo hello; echo oops >&2; exit 3", tmp_path)
    assert result.exit_code == 3 and not result.passed
    assert "hello" in result.output and "oops" in result.output


def test_timeout_kills_grandchildren(tmp_path, reaping):
    marker = tmp_path / "alive"
    # A grandchild in the background would write the marker after 2 s if it survived.
    started = time.monotonic()
    result = run_command(f"(sleep 2; touch {marker}) & sleep 30", tmp_path, timeout=0.5)
    assert result.timed_out and result.exit_code == -1
    assert time.monotonic() - started < 2
    time.sleep(2.5)
    assert not marker.exists()


def test_background_stragglers_do_not_outlive_a_passing_check(tmp_path, reaping):
    marker = tmp_path / "late"
    result = run_command(f"(sleep 1; touch {marker}) > /dev/null 2>&1 & exit 0", tmp_path, timeout=10)
    assert result.passed
    time.sleep(1.5)
    assert not marker.exists()


def test_output_is_capped_head_and_tail(tmp_path, reaping):
    result = run_command("seq 1 200000", tmp_path, output_cap=1000)
    assert result.output.startswith("1\n2\n")
    assert result.output.rstrip().endswith("200000")
    assert "bytes elided" in result.output
    assert result.elided_bytes == result.total_bytes - 1000
    assert len(result.output) < 1100


def test_stdin_is_closed(tmp_path, reaping):
    result = run_command("cat", tmp_path, timeout=5)
    assert result.passed and result.output == ""


def test_secrets_are_not_passed_to_checks():
    env = check_env(base={"PATH": "/bin", "OPENAI_API_KEY": "sk-1", "GITHUB_TOKEN": "x", "HOME": "/h",
                          "MY_PASSWORD": "p", "LC_ALL": "C", "RANDOM_THING": "r"})
    assert env == {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C"}
    assert check_env(["GITHUB_TOKEN"], base={"GITHUB_TOKEN": "x"}) == {"GITHUB_TOKEN": "x"}


def test_check_sees_only_allowed_environment(tmp_path, monkeypatch, reaping):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-very-secret")
    result = run_command("env", tmp_path, env=check_env())
    assert "sk-ant-very-secret" not in result.output
    assert "PATH=" in result.output
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-ant-very-secret"


def test_the_reaper_reads_proc_only_when_a_descendant_is_left(tmp_path):
    """A check that left nothing behind ends without the walk over /proc; one that left a straggler
    still has it found and killed."""
    import subprocess
    import sys

    from agentloop.workspace.checks import REAPER_MAIN

    marker = tmp_path / "late"
    probe = (REAPER_MAIN.replace("sys.exit(reaper.main(sys.argv[1:]))", "") +
             "walks = []\n"
             "real = reaper.descendants\n"
             "reaper.descendants = lambda root: walks.append(root) or real(root)\n"
             "assert reaper.main(['true']) == 0 and walks == [], walks\n"
             f"assert reaper.main(['sh', '-c', '(sleep 1; touch {marker}) >/dev/null 2>&1 & exit 3']) == 3\n"
             "assert walks, 'the straggler was not looked for'\n")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    time.sleep(1.5)
    assert not marker.exists()


def test_a_check_that_closes_its_output_is_waited_for_until_its_timeout(tmp_path, reaping):
    """The end of its output is not its end: its exit code, or the timeout, decides."""
    marker = tmp_path / "finished"
    result = run_command(f"exec >/dev/null 2>&1; sleep 0.3; touch {marker}; exit 4", tmp_path, timeout=10)
    assert result.exit_code == 4 and not result.timed_out and marker.exists()
    result = run_command("exec >/dev/null 2>&1; sleep 30", tmp_path, timeout=1)
    assert result.timed_out and result.exit_code == -1


def test_one_reaper_serves_checks_in_turn_with_no_environment_of_its_own(tmp_path, monkeypatch):
    from agentloop.workspace import reaper_client

    monkeypatch.setattr(reaper_client, "_wanted", True)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    try:
        first = run_command("echo $PPID", tmp_path, env=check_env())
        second = run_command("echo $PPID; cat /proc/$PPID/environ | tr '\\0' '\\n'", tmp_path, env=check_env())
        reaper = reaper_client.reaper_pid()
        assert first.passed and second.passed
        assert int(first.output.split()[0]) == int(second.output.split()[0]) == reaper  # one reaper, forking each
        assert "sk-must-not-leak" not in second.output and second.output.split() == [str(reaper)]
    finally:
        reaper_client._reaper.close()


def test_a_check_that_kills_its_reaper_fails_and_the_next_check_gets_a_new_one(tmp_path, monkeypatch):
    from agentloop.workspace import reaper_client

    monkeypatch.setattr(reaper_client, "_wanted", True)
    try:
        first = run_command("true", tmp_path)
        killed = run_command("kill -9 $PPID; exit 0", tmp_path, timeout=20)
        assert not killed.passed and killed.exit_code != 0
        after = run_command("echo $PPID", tmp_path)
        assert first.passed and after.passed and int(after.output) == reaper_client.reaper_pid()
    finally:
        reaper_client._reaper.close()
