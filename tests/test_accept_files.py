"""Held-out acceptance material, end to end: `--accept-files`, hidden checks naming outside paths, and
the attacks of issue 12 on them (reading hidden check logs, the user's .env, the held-out file)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import BUGGY_CALC, FIX_ADD, PYTEST, git, make_repo, validate_event
from fake_llm import FakeLLM

from agentloop.cli import cli
from agentloop.record.trajectory import read_events
from agentloop.workspace import sandbox

REASON = sandbox.probe()
needs_bwrap = pytest.mark.skipif(REASON is not None, reason=f"bubblewrap cannot run here: {REASON}")

SECRET = "HELDOUT_SECRET_4217"  # in the held-out test only: must never reach the model
DOTENV = "DOTENV_SECRET_9931"
HIDDEN_TEST = f'''from calc import add


def test_add_large():
    assert add(10, 7) == 17, "{SECRET}"
'''


def noop_edit(n: int) -> str:
    """A reply that changes calc.py without fixing it (a comment line)."""
    return f"calc.py\n<<<<<<< SEARCH\ndef mul(a, b):\n=======\n# turn {n}\ndef mul(a, b):\n>>>>>>> REPLACE\n"


@pytest.fixture
def outside(tmp_path: Path):
    """A folder outside /tmp (the sandbox's /tmp is private anyway, which would make hiding trivial)."""
    path = Path("/var/tmp") / f"agentloop-heldout-test-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_fix(repo: Path, server: FakeLLM, *args: str, monkeypatch) -> tuple[int, dict, str]:
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--api-base", server.api_base, "--json", *args],
                                catch_exceptions=False)
    summary = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
    return result.exit_code, summary, result.stderr


def sent(server: FakeLLM) -> str:
    return json.dumps(server.requests)


LEAK = '''"""Model-written code run by the visible check: print anything hidden it can find, fail if it found any."""
import glob, os, sys
found = []
for pattern in {patterns!r}:
    for path in glob.glob(pattern, recursive=True):
        try:
            text = open(path, errors="replace").read()
        except OSError:
            continue
        if text.strip():
            found.append(path + ": " + text[-2000:])
print("\\n".join(found))
sys.exit(1 if found else 0)
'''


def leaky_repo(tmp_path: Path, held: Path) -> Path:
    real = tmp_path / "repo"
    patterns = [f"{real}/.agentloop/runs/**/*.log", f"{real}/.agentloop/runs/**/*.jsonl",
                ".agentloop/runs/**/*.log", "../../../../.agentloop/runs/**/*.log", f"{real}/.env", ".env",
                f"{held}/**/*.py", "tests/test_hidden.py", f"{real}/.git/agentloop/**/*.json"]
    repo = make_repo(real, {"calc.py": BUGGY_CALC, "leak.py": LEAK.format(patterns=patterns),
                            ".gitignore": ".env\n"})
    (repo / ".env").write_text(f"API_TOKEN={DOTENV}\n")
    return repo


@needs_bwrap
def test_hidden_logs_dotenv_and_held_out_never_reach_the_model(tmp_path: Path, outside: Path, monkeypatch):
    held = outside / "held"
    held.mkdir()
    (held / "test_hidden.py").write_text(HIDDEN_TEST)
    repo = leaky_repo(tmp_path, held)
    script = [{"content": noop_edit(n)} for n in range(1, 4)]
    with FakeLLM(script) as server:
        code, summary, err = run_fix(repo, server, "--check", "python leak.py",
                                     "--accept-files", f"{held / 'test_hidden.py'}:tests/test_hidden.py",
                                     "--accept", f"{PYTEST} tests/test_hidden.py", "--max-turns", "3",
                                     "--sandbox", "bwrap", monkeypatch=monkeypatch)
    assert code == 1 and summary["outcome"] == "budget_exhausted", err
    # The attack had material: the hidden check ran the held-out test and its log holds the assertion.
    logs = "".join(p.read_text(errors="replace") for p in Path(summary["run_dir"]).glob("checks/*"))
    assert SECRET in logs
    events = read_events(Path(summary["trajectory"]))
    hidden = [e for e in events if e["type"] == "check" and not e["feedback"]]
    assert len(hidden) == 4 and not any(e["passed"] for e in hidden)  # turn 0, then 3 turns
    visible = [e for e in events if e["type"] == "check" and e["feedback"]]
    assert visible and all(e["passed"] for e in visible), [e["output"] for e in visible]  # it found nothing
    text = sent(server)
    for secret in (SECRET, DOTENV, "test_hidden", str(held)):
        assert secret not in text
    # Nothing of the held-out file in the result or the user's tree.
    assert not (repo / "tests").exists()
    patch = Path(summary["patch"]).read_text()
    assert "test_hidden" not in patch and "# turn" in patch
    branch = summary["workspace"]["branch"]
    assert "test_hidden" not in git(repo, "ls-tree", "-r", "--name-only", branch)


@needs_bwrap
def test_held_out_tests_accept_a_real_fix_and_leave_no_trace(tmp_path: Path, outside: Path, monkeypatch):
    held = outside / "held"
    (held / "sub").mkdir(parents=True)
    (held / "test_hidden.py").write_text(HIDDEN_TEST)
    (held / "sub" / "data.txt").write_text("17\n")
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC,
                                         "tests/test_hidden.py": "# the model's own file at DEST\n"})
    with FakeLLM([{"content": noop_edit(1)}, {"content": FIX_ADD}]) as server:
        code, summary, err = run_fix(repo, server, "--check", "python -c 'import calc'",
                                     "--accept-files", f"{held}:tests",
                                     "--accept", f"{PYTEST} tests/test_hidden.py && test -f tests/sub/data.txt",
                                     monkeypatch=monkeypatch)
    assert code == 0 and summary["outcome"] == "accepted", err
    assert summary["turns"] == 2  # the no-op turn was refused by the held-out test
    assert (repo / "calc.py").read_text().count("a + b") == 1
    assert (repo / "tests/test_hidden.py").read_text() == "# the model's own file at DEST\n"
    assert sorted(p.name for p in (repo / "tests").iterdir()) == ["test_hidden.py"]
    patch = Path(summary["patch"]).read_text()
    assert "add(10, 7)" not in patch and "data.txt" not in patch
    assert SECRET not in sent(server)


@needs_bwrap
@pytest.mark.parametrize("mode", ["bwrap", "off"])
def test_model_code_cannot_rewrite_the_held_out_test(tmp_path: Path, outside: Path, monkeypatch, mode):
    """The wrong code rewrites the held-out test (host SRC and laid-in DEST) to one that passes."""
    held = outside / "held"
    held.mkdir()
    src = held / "test_hidden.py"
    src.write_text(HIDDEN_TEST)
    forge = (f"import os\nfor _p in ({str(src)!r}, 'tests/test_hidden.py'):\n    try:\n"
             "        open(_p, 'w').write('def test_ok():\\n    pass\\n')\n    except OSError:\n        pass\n")
    plant = f"calc.py\n<<<<<<< SEARCH\ndef add(a, b):\n=======\n{forge}\n\ndef add(a, b):\n>>>>>>> REPLACE\n"
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC})
    with FakeLLM([{"content": plant}, {"content": noop_edit(2)}]) as server:
        code, summary, err = run_fix(repo, server, "--check", "python -c 'import calc'",
                                     "--accept-files", f"{src}:tests/test_hidden.py",
                                     "--accept", f"{PYTEST} tests/test_hidden.py", "--max-turns", "2",
                                     "--sandbox", mode, monkeypatch=monkeypatch)
    assert summary["outcome"] == "budget_exhausted", err
    if mode == "bwrap":
        assert src.read_text() == HIDDEN_TEST  # hidden from the visible check, read-only in the hidden one
    events = read_events(Path(summary["trajectory"]))
    assert not [problem for e in events for problem in validate_event(e)]
    if mode == "off":  # the laid-in copy was rewritten by the model's code: that verdict is void
        assert any(e["type"] == "guard" and e["kind"] == "held_out_changed" for e in events)
    assert not any(e["passed"] for e in events if e["type"] == "check" and not e["feedback"])


@needs_bwrap
def test_accept_command_can_read_named_outside_paths_only_itself(tmp_path: Path, outside: Path, monkeypatch):
    """`--accept "pytest /tmp/held-out/test_x.py"`: the private /tmp used to hide it (pytest exit 4)."""
    held = tmp_path / "held-out"  # under /tmp on purpose
    held.mkdir()
    (held / "test_x.py").write_text(f"import sys\nsys.path.insert(0, '.')\n{HIDDEN_TEST}")
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC})
    # Hidden files read as empty (behind /dev/null) outside the hidden check.
    peek = f"! cat {held}/test_x.py {outside}/secret.txt 2>/dev/null | grep -q {SECRET}"
    (outside / "secret.txt").write_text(SECRET)
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, summary, err = run_fix(repo, server, "--check", peek,
                                     "--accept", f"{PYTEST} {held}/test_x.py && cat {outside}/secret.txt",
                                     "--sandbox", "bwrap", monkeypatch=monkeypatch)
    assert code == 0 and summary["outcome"] == "accepted", err
    events = read_events(Path(summary["trajectory"]))
    hidden = [e for e in events if e["type"] == "check" and not e["feedback"]]
    assert hidden[-1]["passed"] and SECRET in hidden[-1]["output"]
    assert all(e["passed"] for e in events if e["type"] == "check" and e["feedback"])  # it never saw them


def test_usage_errors(tmp_path: Path, outside: Path, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "tests/test_in.py": "x = 1\n"})
    (outside / "t.py").write_text(HIDDEN_TEST)
    cases = [
        (["--accept-files", str(repo / "tests/test_in.py"), "--accept", "true"], "inside the repository"),
        (["--accept-files", f"{outside / 't.py'}:../escape.py", "--accept", "true"], "inside the repository"),
        (["--accept-files", f"{outside / 't.py'}:.git/hooks/x", "--accept", "true"], "not .git"),
        (["--accept-files", str(outside / "nope.py"), "--accept", "true"], "no such file"),
        (["--accept-files", str(outside / "t.py")], "needs a hidden check"),
    ]
    monkeypatch.chdir(repo)
    for args, words in cases:
        result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--check", "true", *args])
        assert result.exit_code == 2, (args, result.output)
        assert words in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_config_key_accept_files(tmp_path: Path, outside: Path):
    from agentloop.config import load_config
    from agentloop.errors import ConfigError

    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    (repo / ".agentloop.yaml").write_text(f"accept_files:\n  {outside}/t.py: tests/t.py\n  {outside}/d: \n")
    assert load_config(repo).accept_files == ((f"{outside}/t.py", "tests/t.py"), (f"{outside}/d", "d"))
    (repo / ".agentloop.yaml").write_text(f"accept_files: ['{outside}/t.py', {{src: {outside}/u.py, dest: x/u.py}}]\n")
    assert load_config(repo).accept_files == ((f"{outside}/t.py", "t.py"), (f"{outside}/u.py", "x/u.py"))
    (repo / ".agentloop.yaml").write_text("accept_files: [3]\n")
    with pytest.raises(ConfigError, match="accept_files"):
        load_config(repo)


def test_laid_in_restores_the_models_files_and_reports_changes(tmp_path: Path, outside: Path):
    from agentloop.workspace.held_out import listing, load, remove_new

    repo = make_repo(tmp_path / "repo", {"tests/test_a.py": "mine\n", ".gitignore": "*.log\n"})
    (outside / "d").mkdir()
    (outside / "d" / "test_a.py").write_text("theirs\n")
    (outside / "d" / "deep" / "x.txt").parent.mkdir()
    (outside / "d" / "deep" / "x.txt").write_text("x\n")
    held = load([(str(outside / "d"), "tests")], repo, ())
    (outside / "d" / "test_a.py").write_text("changed on the host after the start\n")  # read once, at the start
    changed: list[str] = []
    with held.laid_in(repo, changed):
        assert (repo / "tests/test_a.py").read_text() == "theirs\n"
        assert (repo / "tests/deep/x.txt").read_text() == "x\n"
        (repo / "tests/deep/x.txt").write_text("forged\n")
    assert changed == ["tests/deep/x.txt"]
    assert (repo / "tests/test_a.py").read_text() == "mine\n" and not (repo / "tests/deep").exists()
    before = listing(repo)
    (repo / "new.py").write_text("the user's new work\n")
    (repo / "report.log").write_text("left by a check\n")
    assert remove_new(repo, before, only_ignored=True) == ["report.log"]
    assert (repo / "new.py").exists()
    assert remove_new(repo, before) == ["new.py"]
