"""Where a run works: its own worktree by default (the user's tree untouched until an accepted result is
applied back), or the user's tree with --in-place (undo restores it byte for byte). Real git repositories,
the real CLI, the scripted model server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from conftest import PYTEST, ROOT, git, make_repo
from fake_llm import FakeLLM
from test_fix_e2e import FIX_ADD, FIX_FROM_WRONG, WRONG_FIX, run_fix

from agentloop.cli import cli
from agentloop.record.trajectory import read_events
from agentloop.workspace import pool
from agentloop.workspace.isolation import recover, state_dir
from agentloop.workspace.repo import Workspace


def tree_bytes(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root except .git/ and .agentloop/: content and permission bits."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in (".git", ".agentloop") or path.is_dir():
            continue
        out[str(rel)] = (os.readlink(path).encode() if path.is_symlink() else path.read_bytes(),
                         path.lstat().st_mode & 0o777)
    return out


def branch_file(repo: Path, branch: str, path: str) -> str:
    return git(repo, "show", f"{branch}:{path}")


def assert_no_leftovers(repo: Path) -> None:
    state = state_dir(repo)
    assert list((state / "runs").glob("*.json")) == [] if (state / "runs").is_dir() else True
    assert not (state / "worktrees").is_dir() or list((state / "worktrees").iterdir()) == []
    assert list(state.glob("journal-*")) == [] if state.is_dir() else True
    # Besides the repository itself, only pooled worktrees, none held by a run (agentloop.workspace.pool).
    others = [line.split(" ", 1)[1] for line in git(repo, "worktree", "list", "--porcelain").splitlines()
              if line.startswith("worktree ")][1:]
    for other in others:
        assert Path(other).parent == state / "pool", others
        assert not pool.in_use(Path(other)), f"{other} is still held"
    fsck = subprocess.run(["git", "fsck", "--no-dangling"], cwd=repo, capture_output=True, text=True)
    assert fsck.returncode == 0 and "error" not in fsck.stderr, fsck.stderr


def test_failing_run_leaves_the_users_tree_untouched_and_keeps_its_result(calc_repo, tmp_path, monkeypatch):
    (calc_repo / "notes.txt").write_text("mine\n")
    before = tree_bytes(calc_repo)
    seen = tmp_path / "seen.txt"
    # The check also records what the user's calc.py looks like while the run works.
    check = f"sha1sum {calc_repo / 'calc.py'} >> {seen}; {PYTEST}"
    with FakeLLM([{"content": WRONG_FIX}]) as server:
        # --sandbox off: the check writes `seen` outside the workspace, which the sandbox forbids.
        code, summary, err = run_fix(calc_repo, server, "--check", check, "--max-turns", "2", "--sandbox", "off",
                                     monkeypatch=monkeypatch)
    assert code == 1 and summary["outcome"] == "budget_exhausted"
    assert tree_bytes(calc_repo) == before
    assert len(set(seen.read_text().splitlines())) == 1  # same bytes at every check, including after edits
    branch = f"agentloop/{summary['run_id']}"
    assert summary["workspace"]["branch"] == branch and not summary["workspace"]["applied"]
    assert "return a - b + 0" in branch_file(calc_repo, branch, "calc.py")
    assert branch_file(calc_repo, branch, "notes.txt") == "mine\n"  # untracked files were part of the start
    assert "return a - b + 0" in Path(summary["patch"]).read_text()
    assert f"your tree is untouched; the result is on branch {branch}" in err
    assert_no_leftovers(calc_repo)


def test_staged_unstaged_and_untracked_changes_are_seen_and_survive(calc_repo, monkeypatch):
    (calc_repo / "staged.txt").write_text("staged\n")
    git(calc_repo, "add", "staged.txt")
    with open(calc_repo / "calc.py", "a") as fh:
        fh.write("\n\ndef sub(a, b):\n    return -(b - a)\n")
    (calc_repo / "notes.txt").write_text("untracked\n")
    (calc_repo / ".gitignore").write_text("ignored.txt\n")
    (calc_repo / "ignored.txt").write_text("ignored\n")
    cached = git(calc_repo, "diff", "--cached")
    check = f"test -f notes.txt && test -f staged.txt && grep -q 'def sub' calc.py && {PYTEST}"
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, summary, err = run_fix(calc_repo, server, "--check", check, monkeypatch=monkeypatch)
    assert code == 0, err
    assert "notes.txt" in json.dumps(server.requests[0]) and "staged.txt" in json.dumps(server.requests[0])
    calc = (calc_repo / "calc.py").read_text()
    assert "return a + b" in calc and "def sub(a, b):\n    return -(b - a)" in calc
    assert (calc_repo / "notes.txt").read_text() == "untracked\n"
    assert (calc_repo / "ignored.txt").read_text() == "ignored\n"
    assert git(calc_repo, "diff", "--cached") == cached  # the index is exactly as the user left it
    assert git(calc_repo, "stash", "list") == ""
    assert git(calc_repo, "branch", "--show-current").strip() == "main"
    assert summary["workspace"]["applied"] and "applied to your tree" in err
    # The branch: the user's starting state (on top of HEAD), one commit per turn; the tip is the result
    # (the last turn's commit: nothing changed after it, so no commit repeats its tree).
    branch = f"agentloop/{summary['run_id']}"
    commits = git(calc_repo, "rev-list", f"main..{branch}").split()
    assert len(commits) == 2
    assert git(calc_repo, "rev-parse", f"{branch}^{{tree}}").strip() == summary["workspace"]["final_tree"]
    start = commits[-1]
    started_from = git(calc_repo, "show", f"{start}:calc.py")
    assert "def sub" in started_from and "return a - b" in started_from
    assert git(calc_repo, "show", f"{start}:staged.txt") == "staged\n"
    assert git(calc_repo, "rev-parse", f"{start}^").strip() == git(calc_repo, "rev-parse", "main").strip()
    assert_no_leftovers(calc_repo)


def test_user_edit_during_the_run_is_never_overwritten(calc_repo, monkeypatch):
    # The check edits the user's calc.py while the run works in its worktree.
    # (--sandbox off: the sandbox would keep the check from writing outside its worktree.)
    check = f"echo '# edited meanwhile' >> {calc_repo / 'calc.py'}; {PYTEST}"
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, summary, err = run_fix(calc_repo, server, "--check", check, "--sandbox", "off", monkeypatch=monkeypatch)
    assert summary["outcome"] == "accepted" and code == 1
    assert summary["workspace"]["conflicts"] == ["calc.py"] and not summary["workspace"]["applied"]
    calc = (calc_repo / "calc.py").read_text()
    assert "return a - b" in calc and calc.endswith("# edited meanwhile\n")
    branch = f"agentloop/{summary['run_id']}"
    assert "return a + b" in branch_file(calc_repo, branch, "calc.py")
    assert "+    return a + b" in Path(summary["patch"]).read_text()
    assert "changed meanwhile (calc.py): nothing was overwritten" in err and branch in err
    assert "final.patch" in err
    assert_no_leftovers(calc_repo)


def test_in_place_then_undo_is_byte_identical(calc_repo, monkeypatch):
    (calc_repo / "script.sh").write_text("#!/bin/sh\r\necho hi\r\n")  # CRLF and the executable bit
    os.chmod(calc_repo / "script.sh", 0o755)
    with open(calc_repo / "calc.py", "a") as fh:
        fh.write("\n# no final newline")
    (calc_repo / "data.bin").write_bytes(bytes(range(256)))
    before = tree_bytes(calc_repo)
    new_file = FIX_ADD + "\nextra.py\n<<<<<<< SEARCH\n=======\nX = 1\n>>>>>>> REPLACE\n"
    with FakeLLM([{"content": new_file}]) as server:
        code, summary, err = run_fix(calc_repo, server, "--check", PYTEST, "--in-place", monkeypatch=monkeypatch)
    assert code == 0, err
    assert summary["workspace"]["mode"] == "in_place"
    assert "return a + b" in (calc_repo / "calc.py").read_text() and (calc_repo / "extra.py").exists()
    assert_no_leftovers(calc_repo)
    undo = CliRunner().invoke(cli, ["undo", summary["run_id"]])
    assert undo.exit_code == 0, undo.stderr
    assert "restored 2 file(s)" in undo.stderr
    assert tree_bytes(calc_repo) == before
    again = CliRunner().invoke(cli, ["undo", summary["run_id"]])
    assert again.exit_code == 0 and "already undone" in again.stderr  # nothing to do is not a failure


def test_undo_refuses_when_the_files_changed_since(calc_repo, monkeypatch):
    before = tree_bytes(calc_repo)
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, "--in-place", monkeypatch=monkeypatch)
    assert code == 0
    with open(calc_repo / "calc.py", "a") as fh:
        fh.write("# mine\n")
    refused = CliRunner().invoke(cli, ["undo", summary["run_id"]])
    assert refused.exit_code == 1
    assert "calc.py changed since run" in refused.stderr and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert (calc_repo / "calc.py").read_text().endswith("# mine\n")
    forced = CliRunner().invoke(cli, ["undo", summary["run_id"], "--force"])
    assert forced.exit_code == 0 and tree_bytes(calc_repo) == before
    unknown = CliRunner().invoke(cli, ["undo", "no-such-run"])
    assert unknown.exit_code == 2 and "no-such-run: no such run" in unknown.stderr


def test_undo_of_a_result_applied_back(calc_repo, monkeypatch):
    before = tree_bytes(calc_repo)
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, monkeypatch=monkeypatch)
    assert code == 0 and "return a + b" in (calc_repo / "calc.py").read_text()
    (calc_repo / "later.txt").write_text("an unrelated later change\n")
    undo = CliRunner().invoke(cli, ["undo", summary["run_id"]])
    assert undo.exit_code == 0, undo.stderr
    after = tree_bytes(calc_repo)
    assert after.pop("later.txt")[0] == b"an unrelated later change\n"
    assert after == before


def test_the_best_turn_is_kept_when_later_turns_are_worse(calc_repo, monkeypatch):
    add_ok = "python -c 'from calc import add; assert add(2, 3) == 5'"
    mul_ok = "python -c 'from calc import mul; assert mul(2, 3) == 6'"
    never = "test -f never.txt"
    break_mul = "calc.py\n<<<<<<< SEARCH\n    return a * b\n=======\n    return a ** b\n>>>>>>> REPLACE\n"
    with FakeLLM([{"content": FIX_ADD}, {"content": break_mul}]) as server:
        code, summary, err = run_fix(calc_repo, server, "--check", add_ok, "--check", mul_ok, "--check", never,
                                     "--max-turns", "2", monkeypatch=monkeypatch)
    assert code == 1 and summary["outcome"] == "budget_exhausted"
    assert summary["kept_turn"] == 1 and "kept the code of turn 1" in err
    kept = branch_file(calc_repo, f"agentloop/{summary['run_id']}", "calc.py")
    assert "return a + b" in kept and "return a * b" in kept
    events = read_events(Path(summary["trajectory"]))
    turns = [e for e in events if e["type"] == "turn"]
    assert [t["checks_passed"] for t in turns] == [2, 1] and all(len(t["snapshot"]) == 40 for t in turns)
    # Every turn's snapshot can be restored: turn 2's tree holds the broken mul, kept reachable on the branch.
    assert "a ** b" in git(calc_repo, "show", f"{turns[1]['snapshot']}:calc.py")
    branch = f"agentloop/{summary['run_id']}"
    assert git(calc_repo, "rev-parse", f"{branch}~1^{{tree}}").strip() == turns[1]["snapshot"]
    assert events[-1]["kept_turn"] == 1 and "a ** b" not in events[-1]["diff"]


def test_in_place_refuses_while_another_run_edits_the_tree_in_place(calc_repo, monkeypatch):
    runs = state_dir(calc_repo) / "runs"
    runs.mkdir(parents=True)
    (runs / "other.json").write_text(json.dumps({"run_id": "other", "pid": os.getpid(), "ticks": None,
                                                 "mode": "in_place", "root": str(calc_repo.resolve())}))
    monkeypatch.chdir(calc_repo)
    result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--check", "false"])
    assert result.exit_code == 2
    assert "run other (pid" in result.stderr and "editing this tree in place" in result.stderr


def test_writes_into_git_hooks_are_impossible(calc_repo, monkeypatch):
    hooks = calc_repo / ".git" / "hooks"
    (calc_repo / "gitlink").symlink_to(".git")
    git(calc_repo, "add", "gitlink")
    git(calc_repo, "commit", "-qm", "a symlink into .git")
    hooks_before = {p.name: p.read_bytes() for p in hooks.iterdir()}
    attacks = [".git/hooks/pre-commit", "../../../hooks/pre-commit", "../../../../.git/hooks/pre-commit",
               "gitlink/hooks/pre-commit", "/" + str(hooks / "pre-commit").lstrip("/")]
    script = [{"content": f"{path}\n<<<<<<< SEARCH\n=======\n#!/bin/sh\ntouch /tmp/pwned\n>>>>>>> REPLACE\n"}
              for path in attacks]
    for mode in ([], ["--in-place"]):
        with FakeLLM(script) as server:
            code, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, "--max-turns", "5", *mode,
                                       monkeypatch=monkeypatch)
        assert summary["outcome"] in ("gave_up", "budget_exhausted")
        assert {p.name: p.read_bytes() for p in hooks.iterdir()} == hooks_before
        assert not list(state_dir(calc_repo).parent.glob("hooks/pre-commit"))
        edits = [e for e in read_events(Path(summary["trajectory"])) if e["type"] == "edits"]
        assert edits and not any(e["applied"] for e in edits)


def _spawn_fix(repo: Path, server: FakeLLM, check: str, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLOOP_")}
    return subprocess.Popen([sys.executable, "-m", "agentloop", "fix", "-m", "openai/fake", "--api-base",
                             server.api_base, "--check", check, "--json", "-q", *extra], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_concurrent_runs_do_not_collide(tmp_path):
    other = "def double(x):\n    return x * 3\n"
    repo = make_repo(tmp_path / "repo", {"calc.py": (ROOT / "tests" / "conftest.py").read_text().split("'''")[1],
                                         "other.py": other})
    fix_other = "other.py\n<<<<<<< SEARCH\n    return x * 3\n=======\n    return x * 2\n>>>>>>> REPLACE\n"
    with FakeLLM([{"content": FIX_ADD, "delay": 1.0}]) as a, FakeLLM([{"content": fix_other, "delay": 1.0}]) as b:
        first = _spawn_fix(repo, a, "grep -q 'a + b' calc.py")
        second = _spawn_fix(repo, b, "grep -q 'x \\* 2' other.py")
        outs = [p.communicate(timeout=300) for p in (first, second)]
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [p.returncode for p in (first, second)] == [0, 0], [err for _, err in outs]
    assert all(s["workspace"]["applied"] for s in summaries)
    assert "return a + b" in (repo / "calc.py").read_text() and "x * 2" in (repo / "other.py").read_text()
    assert len({s["run_id"] for s in summaries}) == 2
    assert_no_leftovers(repo)


def test_a_killed_run_is_cleaned_up_by_the_next(calc_repo, monkeypatch):
    before = tree_bytes(calc_repo)
    with FakeLLM([{"content": FIX_ADD, "delay": 60}]) as server:
        proc = _spawn_fix(calc_repo, server, "grep -q 'a + b' calc.py")
        state = state_dir(calc_repo)
        deadline = time.monotonic() + 120
        while not server.requests and time.monotonic() < deadline:  # the run waits on the model now
            time.sleep(0.1)
        assert server.requests, proc.stderr.read() if proc.poll() is not None else "no request"
        proc.kill()
        proc.wait()
    assert [p.name for p in (state / "pool").iterdir() if p.is_dir()] == ["slot-0"]
    assert len(list((state / "runs").iterdir())) == 1
    assert tree_bytes(calc_repo) == before
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, summary, _ = run_fix(calc_repo, server, "--check", "grep -q 'a + b' calc.py", monkeypatch=monkeypatch)
    assert code == 0
    assert_no_leftovers(calc_repo)
    assert [p.name for p in (state / "pool").iterdir() if p.is_dir()] == ["slot-0"]  # the dead run's, reused
    assert len(git(calc_repo, "branch", "--list", "agentloop/*").split()) == 2  # the dead run's start is kept


def test_a_half_applied_result_is_finished_or_undone_by_the_next_run(calc_repo):
    ws = Workspace(calc_repo)
    start = ws.snapshot()
    (calc_repo / "calc.py").write_text("fixed\n")
    (calc_repo / "new.py").write_text("new\n")
    final = ws.snapshot()
    ws.restore(start)
    assert (calc_repo / "calc.py").read_text().startswith("def add") and not (calc_repo / "new.py").exists()
    state = state_dir(calc_repo)
    state.mkdir(parents=True)
    from agentloop.workspace.isolation import write_json
    from agentloop.workspace.repo import stage_entry, temp_name
    changes = ws.changes(start, final)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (state / "runs").mkdir()
    stray = state / "runs" / f".x.json.{dead.pid}.tmp"  # a record half written when its run was killed
    stray.write_text("{")
    live = state / "runs" / f".y.json.{os.getpid()}.tmp"
    live.write_text("{")
    recover(calc_repo)
    assert not stray.exists() and live.exists()
    live.unlink()
    for phase, expect in (("committing", "fixed\n"), ("staging", None)):
        tmps = [str(stage_entry(calc_repo, c.path, c.new_mode, c.new_sha, "t")) for c in changes]
        # One rename done, one not: the moment a SIGKILL could hit.
        if phase == "committing":
            os.replace(tmps[0], calc_repo / changes[0].path)
        entries = [{"path": c.path, "tmp": t} for c, t in zip(changes, tmps, strict=True)]
        write_json(state / "journal-x.json", {"run_id": "x", "pid": dead.pid, "ticks": None, "state": phase,
                                              "root": str(calc_repo), "entries": entries})
        recover(calc_repo)
        assert not (state / "journal-x.json").exists()
        assert not any(temp_name(calc_repo / c.path, "t").exists() for c in changes)
        if expect:
            assert (calc_repo / "calc.py").read_text() == "fixed\n" and (calc_repo / "new.py").read_text() == "new\n"
            ws.restore(start)
        else:
            assert (calc_repo / "calc.py").read_text().startswith("def add") and not (calc_repo / "new.py").exists()


def test_fix_from_wrong_in_place_keeps_a_branch(calc_repo, monkeypatch):
    with FakeLLM([{"content": WRONG_FIX}, {"content": FIX_FROM_WRONG}]) as server:
        code, summary, _ = run_fix(calc_repo, server, "--check", PYTEST, "--in-place", monkeypatch=monkeypatch)
    assert code == 0 and summary["turns"] == 2
    assert "return a + b" in branch_file(calc_repo, f"agentloop/{summary['run_id']}", "calc.py")
    header = read_events(Path(summary["trajectory"]))[0]
    assert header["workspace"]["mode"] == "in_place" and header["config"]["in_place"] is True


def test_a_run_with_nothing_to_do_leaves_no_branch(calc_repo, monkeypatch):
    (calc_repo / "calc.py").write_text((calc_repo / "calc.py").read_text().replace("a - b", "a + b"))
    for mode in ([], ["--in-place"]):
        with FakeLLM([{"content": "unused"}]) as server:
            code, summary, err = run_fix(calc_repo, server, "--check", PYTEST, *mode, monkeypatch=monkeypatch)
        assert code == 0 and summary["workspace"]["branch"] is None and "branch" not in err
    assert git(calc_repo, "branch", "--list", "agentloop/*") == ""
    assert_no_leftovers(calc_repo)


def test_an_in_place_run_killed_mid_edit_is_undone_with_force(calc_repo, monkeypatch):
    (calc_repo / "notes.txt").write_text("mine\n")
    before = tree_bytes(calc_repo)
    with FakeLLM([{"content": WRONG_FIX}, {"content": FIX_FROM_WRONG, "delay": 60}]) as server:
        proc = _spawn_fix(calc_repo, server, PYTEST, "--in-place")
        deadline = time.monotonic() + 120
        while len(server.requests) < 2 and time.monotonic() < deadline:  # turn 1's edit is in the tree now
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    assert "a - b + 0" in (calc_repo / "calc.py").read_text()
    run_id = next((calc_repo / ".agentloop" / "runs").glob("2*")).name
    monkeypatch.chdir(calc_repo)
    # the next run says what to do
    nothing_to_do = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--check", "true"])
    assert nothing_to_do.exit_code == 0
    assert f"run {run_id} was killed while editing this tree in place" in nothing_to_do.stderr
    assert f"agentloop undo {run_id} --force" in nothing_to_do.stderr
    refused = CliRunner().invoke(cli, ["undo", run_id])
    assert refused.exit_code == 1 and "did not finish" in refused.stderr
    forced = CliRunner().invoke(cli, ["undo", run_id, "--force"])
    assert forced.exit_code == 0, forced.stderr
    assert tree_bytes(calc_repo) == before
    assert_no_leftovers(calc_repo)


def test_restore_keeps_line_endings_that_git_converts(tmp_path):
    repo = make_repo(tmp_path / "r", {".gitattributes": "*.txt eol=crlf\n", "a.txt": "one\r\ntwo\r\n"})
    ws = Workspace(repo)
    start = ws.snapshot()
    before = tree_bytes(repo)
    (repo / "a.txt").write_bytes(b"changed\r\n")
    (repo / "b.txt").write_bytes(b"new\r\n")
    assert sorted(ws.restore(start)) == ["a.txt", "b.txt"]
    assert tree_bytes(repo) == before and (repo / "a.txt").read_bytes() == b"one\r\ntwo\r\n"


def test_the_private_index_of_tree_with_is_kept_per_workspace_and_removed(calc_repo, tmp_path, monkeypatch):
    """tree_with keeps its index between turns (one `git read-tree` less each), removes it on close,
    and a later workspace sweeps away the index of a process that was killed before it could. (The
    index writes the trees an edit in process cannot: here, every one.)"""
    import tempfile

    from agentloop.workspace import trees

    monkeypatch.setattr(trees, "edit_tree", lambda *args: None)
    dead = Path(tempfile.gettempdir()) / "agentloop-index-999999999-x1"  # above any pid_max
    dead.mkdir(exist_ok=True)
    ws = Workspace(calc_repo)
    start = ws.snapshot()
    (calc_repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    first = ws.tree_with(start, ["calc.py"])
    (calc_repo / "new.txt").write_text("new\n")
    second = ws.tree_with(first, ["new.txt"])  # from the index as it was left
    assert second == ws.snapshot()
    assert ws.tree_with(start, ["calc.py"]) == first  # another base: read again
    assert not dead.exists()
    folder = ws._index[0].parent
    assert folder.is_dir() and folder.name.startswith(f"agentloop-index-{os.getpid()}-")
    ws.close()
    assert not folder.exists()
