"""The processes a rollout starts, counted: each one cut for throughput stays cut, and each answer
reused instead of asked again is still the right one. Real git repositories, real processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from conftest import BUGGY_CALC, CALC_TEST, git, make_repo

from agentloop.workspace.repo import Workspace, tree_changes
from agentloop.workspace.suite import CheckSuite


@contextlib.contextmanager
def spawned() -> Iterator[list[list[str]]]:
    """Every process started meanwhile, as its argv (git's `-c` options left out)."""
    started: list[list[str]] = []
    real = subprocess.Popen.__init__

    def counting(self, args, *rest, **kwargs):
        argv = [str(a) for a in ([args] if isinstance(args, str) else args)]
        if argv and argv[0] == "git":
            while len(argv) > 2 and argv[1] == "-c":
                del argv[1:3]
        started.append(argv)
        return real(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = counting
    try:
        yield started
    finally:
        subprocess.Popen.__init__ = real


def set_up_suite(repo: Path, tmp_path: Path, before=lambda suite: None) -> tuple[CheckSuite, list[list[str]]]:
    """A check suite (one passing check, sandbox off) set up on `repo` from its snapshot, `before(suite)`
    first; the suite and the processes its set-up started."""
    from dataclasses import replace

    from agentloop.config import Check, Config
    from agentloop.record.trajectory import Trajectory

    config = replace(Config(), sandbox="off", in_place=True, checks=(Check(run="true"),))
    workspace = Workspace(repo)
    trajectory = Trajectory(tmp_path / "runs" / "run")
    try:
        suite = CheckSuite(config, workspace, trajectory)
        start = workspace.snapshot()
        before(suite)
        with spawned() as started:
            suite.set_up(start)
    finally:
        trajectory.close()
    return suite, started


def test_a_tree_against_itself_differs_in_nothing_without_asking_git(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    with spawned() as started:
        assert tree_changes(repo, tree, tree) == []
        assert Workspace(repo).diff(tree, tree) == ""
    assert [a for a in started if a[:2] != ["git", "rev-parse"]] == []  # (Workspace() asks for its git dir)
    (repo / "calc.py").write_text("changed\n")
    now = Workspace(repo).snapshot()
    assert [c.path for c in tree_changes(repo, tree, now)] == ["calc.py"]


def test_a_job_carries_its_resolved_commit_and_the_rollout_does_not_resolve_it_again(tmp_path: Path):
    from agentloop.batch.tasks import validate_row
    from agentloop.batch.worker import job_for, row_of

    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC})
    head = git(repo, "rev-parse", "HEAD").strip()
    row, problems = validate_row({"id": "t", "task": "x", "source": {"path": str(repo), "commit": "main"},
                                  "checks": ["true"]}, "row", tmp_path)
    assert row is not None and not problems and row.source.revision == head
    job = job_for(row, 0, tmp_path / "out", {}, "t", tmp_path / "result.json")
    with spawned() as started:
        again = row_of(job)
    assert started == [] and again.source.revision == head and again.source.commit == head
    del job["revision"]  # a job written by hand: its commit is resolved as a task file's is
    with spawned() as started:
        assert row_of(job).source.revision == head
    assert [a[:2] for a in started] == [["git", "rev-parse"]]


def test_set_up_lists_the_ignored_files_once_for_the_secrets_and_the_protected_files(tmp_path: Path):
    """In place, the hidden secrets (`.env`) and the protected files git ignores (a local test)
    come from one `git ls-files --ignored` at set-up; each still finds its own."""
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, ".gitignore": ".env\ntest_local.py\n"})
    (repo / ".env").write_text("KEY=1\n")
    (repo / "test_local.py").write_text("def test_x():\n    assert 1 == 1\n")
    seen: list[list[Path]] = []

    def spy(suite: CheckSuite) -> None:
        real = suite.set_up_sandbox

        def set_up_sandbox(ignored=None):
            from agentloop.workspace import environment

            seen.append(environment.secret_files(repo, [".env"], ignored))
            real(ignored)

        suite.set_up_sandbox = set_up_sandbox  # type: ignore[method-assign]

    suite, started = set_up_suite(repo, tmp_path, spy)
    assert seen == [[repo / ".env"]]
    assert suite.protected is not None and "test_local.py" in suite.protected.start  # kept, not "new"
    assert sum("--ignored" in a for a in started) == 1


def test_set_up_takes_the_test_files_literals_from_the_start_tree_listing(tmp_path: Path):
    """The test files whose literals flag special-cased code are found in the start tree's listing
    (which the protected files' look reads anyway), untracked ones included, without `git ls-files`."""
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "tests/test_calc.py": "assert f(1234) == 'abc'\n"})
    (repo / "test_new.py").write_text("assert g(5678) == 99\n")  # untracked, not ignored: in the start tree
    suite, started = set_up_suite(repo, tmp_path)
    assert {"1234", "abc", "5678", "99"} <= suite.literals
    assert [a for a in started if "ls-files" in a and "--cached" in a] == []
    assert sum("ls-tree" in a for a in started) == 1


def one_turn_rollout(tmp_path: Path, **row) -> tuple[dict, list[list[str]]]:
    """A one-turn rollout that passes (the scripted fix, one check), in process; its result and the
    processes it started."""
    from fake_llm import FakeLLM

    from agentloop.batch.rollout import run_rollout
    from agentloop.batch.tasks import validate_row

    repo = make_repo(tmp_path / "repo", {"calc.py": "def add(a, b):\n    return a - b\n"})
    fix = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"
    task, problems = validate_row({"id": "t", "task": "add must add", "source": {"path": str(repo)},
                                   "checks": ["grep -q 'a + b' calc.py"], "limits": {"max_turns": 2}, **row},
                                  "row", tmp_path)
    assert task is not None, problems
    with FakeLLM([{"content": fix}]) as server, spawned() as started:
        result = run_rollout(task, 0, tmp_path / "out", model="openai/fake", api_base=server.api_base, sandbox="off")
    assert result["status"] == "passed", result
    return result, started


def test_a_one_turn_rollout_asks_git_nothing_it_already_knows(tmp_path: Path):
    """The processes of a one-turn rollout (two checks: the first look, the fix), pinned: each cut
    one (see the commits that cut them) stays cut. Its repository's git directories and HEAD are
    what the rollout made, not asked of git."""
    import json

    result, started = one_turn_rollout(tmp_path)
    git_calls = [a[1] for a in started if a[0] == "git"]
    assert "rev-parse" not in git_calls
    header = json.loads((Path(result["run_dir"]) / "trajectory.jsonl").read_text().splitlines()[0])
    assert header["base_commit"] == git(tmp_path / "repo", "rev-parse", "HEAD").strip()
    assert ["git", "ls-files", "-z", "--others", "--exclude-standard"] not in started  # the snapshot's listing
    listing = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    assert started.count(listing) == 2  # the looks after the two checks, nothing more
    for made_in_process in ("clone", "init", "write-tree", "commit-tree", "config"):  # see rollout.materialise
        assert made_in_process not in git_calls, started
    assert len(started) <= 11, started  # 34 before the cuts of issue 15, 28 before the long-lived git processes,
    # 25 before the rollout's repository, starting state and commits were written without asking git, 14
    # before its branch was
    order = [" ".join(a[1:3]) for a in started if a[0] == "git"][:4]
    assert order == ["cat-file --batch", "diff-tree --stdin", "checkout -q", "ls-tree -r"], started  # side by side
    assert [a[1] for a in started if a[0] == "git"].count("ls-tree") == 1  # set-up takes the checkout's
    moved, with_setup = one_turn_rollout(tmp_path / "setup", setup=["git commit -q --allow-empty -m moved"])
    assert [a[1] for a in with_setup if a[0] == "git"].count("rev-parse") == 2  # setup may move HEAD: asked
    header = json.loads((Path(moved["run_dir"]) / "trajectory.jsonl").read_text().splitlines()[0])
    made = tmp_path / "setup" / "out" / "rollouts" / "t" / "0" / "repo"
    assert header["base_commit"] == git(made, "rev-parse", "agentloop-task").strip()
    assert header["base_commit"] != git(tmp_path / "setup" / "repo", "rev-parse", "HEAD").strip()


def test_the_untracked_files_the_model_is_not_shown_come_from_the_snapshots_listing(tmp_path: Path):
    from dataclasses import replace

    from agentloop.config import Config
    from agentloop.run.session import private_files

    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, ".gitignore": "*.log\n"})
    (repo / "notes.txt").write_text("mine\n")
    (repo / "debug.log").write_text("ignored\n")
    (repo / "calc.py").write_text("changed\n")
    workspace = Workspace(repo)
    tree, untracked = workspace.snapshot_and_untracked()
    assert untracked == ["notes.txt"] and tree == workspace.snapshot()
    config = replace(Config(), files=())
    with spawned() as started:
        assert private_files(workspace, config, untracked) == {"notes.txt"}
    assert started == []
    assert private_files(workspace, config) == {"notes.txt"}  # as git lists them itself


def test_the_opening_prompt_reuses_the_listing_of_the_look_after_the_first_checks_only_while_it_holds(
        tmp_path: Path):
    """After a check, the look at the protected files lists the workspace; the opening prompt
    takes that listing instead of its own, unless something ran, was written or restored since."""
    from dataclasses import replace

    from agentloop.config import Check, Config
    from agentloop.record.trajectory import Trajectory
    from agentloop.workspace.suite import CheckSuite

    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    workspace = Workspace(repo)

    made: list[Trajectory] = []

    def suite_after(command: str) -> CheckSuite:
        config = replace(Config(), sandbox="off", in_place=True, checks=(Check(run=command),))
        made.append(Trajectory(tmp_path / "runs" / str(len(made))))
        suite = CheckSuite(config, workspace, made[-1])
        suite.set_up(workspace.snapshot())
        suite.run()
        return suite

    try:
        _look_at(suite_after, workspace, repo)
    finally:
        for trajectory in made:
            trajectory.close()


def _look_at(suite_after, workspace: Workspace, repo: Path) -> None:

    quiet = suite_after("echo > scratch.txt")  # a check that writes an unprotected file: no restore
    assert quiet.files_now() == workspace.list_files() and "scratch.txt" in quiet.files_now()
    quiet.touched(["calc.py"], was_pristine=True)  # an edit was written
    assert quiet.files_now() is None
    again = suite_after("true")
    assert again.files_now() is not None
    import agentloop.workspace.suite as suite_module

    during: list[object] = []
    real = suite_module.run_command

    def watching(*args, **kwargs):
        during.append(again.files_now())  # while the check runs, the listing no longer holds
        return real(*args, **kwargs)

    suite_module.run_command = watching
    try:
        again.run()
    finally:
        suite_module.run_command = real
    assert during == [None] and again.files_now() is not None
    assert suite_after("echo 'def test_x(): pass' > test_planted.py").files_now() is None  # restored: removed
    assert not (repo / "test_planted.py").exists()
    assert suite_after("git config core.excludesFile /dev/null").files_now() is None  # config put back


def test_later_turns_start_no_git_for_their_tree_their_blobs_or_their_branch(tmp_path: Path):
    """A turn's blobs, tree, commit and branch move are written in process in the rollout's own
    repository (agentloop.workspace.objects), the trees read and the patches made by the rollout's
    long-lived `git cat-file` and `git diff-tree` (agentloop.workspace.gitbatch): one of each per
    rollout, however many turns; per turn only the look after the check starts git. What was
    written is git's own: fsck passes, and each turn's tree is the one git writes of the files."""
    from fake_llm import FakeLLM

    from agentloop.batch.rollout import run_rollout
    from agentloop.batch.tasks import validate_row

    repo = make_repo(tmp_path / "repo", {"calc.py": "def add(a, b):\n    return a - b\n"})

    def edit(old: str, new: str) -> dict:
        return {"content": f"calc.py\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n"}

    replies = [edit("    return a - b", "    return a - b  # try 1"),
               edit("    return a - b  # try 1", "    return a - b  # try 2"),
               edit("    return a - b  # try 2", "    return a + b")]
    task, problems = validate_row({"id": "t", "task": "add must add", "source": {"path": str(repo)},
                                   "checks": ["grep -q 'a + b' calc.py"], "limits": {"max_turns": 4}},
                                  "row", tmp_path)
    assert task is not None, problems
    with FakeLLM(replies) as server, spawned() as started:
        result = run_rollout(task, 0, tmp_path / "out", model="openai/fake", api_base=server.api_base, sandbox="off")
    assert result["status"] == "passed" and result["turns"] == 3, result
    commands = [" ".join(a[1:3]) for a in started if a[0] == "git"]
    assert commands.count("cat-file --batch") == 1, commands
    assert not any(c.startswith(("hash-object", "mktree", "update-ref")) for c in commands), commands
    made = tmp_path / "out" / "rollouts" / "t" / "0" / "repo"
    assert subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=made, capture_output=True).returncode == 0
    index = {**os.environ, "GIT_INDEX_FILE": str(tmp_path / "index")}
    subprocess.run(["git", "add", "-A"], cwd=made, env=index, check=True)
    theirs = subprocess.run(["git", "write-tree"], cwd=made, env=index, capture_output=True, text=True).stdout.strip()
    branch = [r for r in git(made, "for-each-ref", "--format=%(refname)", "refs/heads/agentloop/").split() if r]
    assert git(made, "rev-parse", f"{branch[0]}^{{tree}}").strip() == theirs
    assert git(made, "rev-list", "--count", branch[0]).strip() == str(1 + 1 + 3)  # task, start, a commit a turn
    assert "update-index -z" not in commands and "write-tree" not in commands  # (the start: the checkout's tree)
    assert not any(c.startswith("commit-tree") for c in commands)  # written in process (workspace.objects)
    assert commands.count("diff-tree --stdin") == 1  # every turn's patch (and the end's), its listing with it
    assert not any(c.startswith("diff ") for c in commands), commands


def _files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_rollouts_own_repository_is_exactly_what_the_run_takes_from_it_without_asking(tmp_path: Path):
    """materialise writes the rollout's repository itself (no clone, no init) and says what it holds
    (FreshCheckout); the run then takes its starting state from that, not from git. For each kind of
    source, git's own answers must agree: the snapshot is the commit's tree, nothing untracked or
    ignored, HEAD the commit, fsck clean; and the source is never written."""
    from agentloop.batch.rollout import materialise
    from agentloop.batch.tasks import validate_row
    from agentloop.workspace.repo import ignored_entries

    files = {"calc.py": "def add(a, b):\n    return a - b\n", ".gitignore": "*.log\nbuild/\n",
             "tests/test_calc.py": "import calc\n", "run.sh": "#!/bin/sh\n"}
    root = make_repo(tmp_path / "root", files)
    subprocess.run(["chmod", "+x", str(root / "run.sh")], check=True)
    git(root, "commit", "-qam", "exec")
    (root / "debug.log").write_text("ignored in the source\n")
    (root / "notes.txt").write_text("untracked in the source\n")
    (root / "calc.py").write_text("uncommitted in the source\n")
    borrowing = tmp_path / "borrowing"  # a repository that itself borrows its objects (alternates)
    git(tmp_path, "clone", "-q", "--shared", str(root), str(borrowing))
    linked = tmp_path / "linked"
    git(root, "worktree", "add", "-q", "--detach", str(linked), "HEAD~1")
    plain = tmp_path / "plain"
    plain.mkdir()
    for name, text in files.items():
        (plain / name).parent.mkdir(parents=True, exist_ok=True)
        (plain / name).write_text(text)
    (plain / "debug.log").write_text("left out: .gitignore names it\n")
    sources = {"root": {"path": str(root)}, "borrowing": {"path": str(borrowing)},
               "linked worktree": {"path": str(linked)}, "older commit": {"path": str(root), "commit": "HEAD~1"},
               "plain directory": {"path": str(plain)}}
    before = {name: _files_under(Path(src["path"])) for name, src in sources.items()}
    for name, source in sources.items():
        row, problems = validate_row({"id": "t", "task": "x", "source": source, "checks": ["true"]}, "row", tmp_path)
        assert row is not None, problems
        repo = tmp_path / "out" / name.replace(" ", "-") / "repo"
        fresh = materialise(row, repo)
        assert fresh is not None, name
        assert git(repo, "rev-parse", "HEAD").strip() == fresh.commit, name
        if row.source.is_git:
            assert fresh.commit == row.source.revision and fresh.remote == source["path"], name
        assert git(repo, "rev-parse", "HEAD^{tree}").strip() == fresh.tree, name
        assert git(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/agentloop-task", name
        assert Workspace(repo).snapshot_and_untracked() == (fresh.tree, []), name
        assert ignored_entries(repo) == [], name
        assert git(repo, "status", "--porcelain", "--ignored") == "", name
        assert subprocess.run(["git", "fsck", "--no-dangling"], cwd=repo, capture_output=True).returncode == 0, name
        assert os.access(repo / "run.sh", os.X_OK) == git(repo, "ls-tree", "HEAD", "run.sh").startswith("100755"), name
        assert not (repo / "debug.log").exists() and not (repo / "notes.txt").exists(), name
    assert "uncommitted" not in (tmp_path / "out" / "root" / "repo" / "calc.py").read_text()
    assert os.access(tmp_path / "out" / "root" / "repo" / "run.sh", os.X_OK)
    assert not (tmp_path / "out" / "root" / "repo" / ".git" / "hooks").exists()  # no templates copied
    for name, source in sources.items():
        assert _files_under(Path(source["path"])) == before[name], f"{name}: the source was written"


def test_commits_written_in_process_are_the_ones_git_writes(tmp_path: Path):
    """A rollout's commits (its start, one a turn) are written without `git commit-tree`
    (agentloop.workspace.objects): byte for byte the object git makes of the same input."""
    from agentloop.workspace.objects import commit_body, write_commit, write_loose

    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    parent = git(repo, "rev-parse", "HEAD").strip()
    objects = repo / ".git" / "objects"
    for parents, message in (([], "agentloop run: starting state"), ([parent], "agentloop run: turn 1 é")):
        body = commit_body(tree, parents, message, "agentloop", "agentloop@localhost", when=1_700_000_000)
        zone = body.split(b"\ncommitter ")[1].split(b"\n")[0].split()[-1].decode()
        theirs = subprocess.run(
            ["git", "commit-tree", tree, *[a for p in parents for a in ("-p", p)], "-m", message], cwd=repo,
            env={**os.environ, "GIT_AUTHOR_NAME": "agentloop", "GIT_AUTHOR_EMAIL": "agentloop@localhost",
                 "GIT_COMMITTER_NAME": "agentloop", "GIT_COMMITTER_EMAIL": "agentloop@localhost",
                 "GIT_AUTHOR_DATE": f"1700000000 {zone}", "GIT_COMMITTER_DATE": f"1700000000 {zone}"},
            capture_output=True, text=True, check=True).stdout.strip()
        git(repo, "update-ref", "-d", "refs/heads/x") if parents else None
        ours = write_loose(objects, "commit", body)
        assert ours == theirs
    now = write_commit(objects, tree, [parent], "turn 2", "agentloop", "agentloop@localhost")
    assert now is not None and git(repo, "cat-file", "-t", now).strip() == "commit"
    assert git(repo, "rev-parse", f"{now}^{{tree}}").strip() == tree
    assert git(repo, "rev-parse", f"{now}^").strip() == parent
    git(repo, "update-ref", "refs/heads/check", now)
    assert subprocess.run(["git", "fsck", "--strict"], cwd=repo, capture_output=True).returncode == 0
    assert write_commit(objects, "ab" * 32, [], "sha256 ids", "agentloop", "agentloop@localhost") is None
    assert not list(objects.rglob("tmp_obj_*"))


def test_a_runs_branch_moves_in_process_only_as_git_update_ref_would(tmp_path: Path):
    """objects.write_ref: created only where the branch does not exist, moved only from the commit
    named as its tip, refused (nothing written, no lock left) for a packed ref, a held lock, a name
    agentloop does not make or an id that is not one; git reads what it wrote."""
    from agentloop.workspace.objects import write_ref

    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    first, second = git(repo, "rev-parse", "HEAD~1", "HEAD").split()
    git_dir, unborn, ref = repo / ".git", "0" * 40, "refs/heads/agentloop/run-1"
    assert write_ref(git_dir, ref, first, unborn)
    assert git(repo, "rev-parse", "agentloop/run-1").strip() == first
    assert not write_ref(git_dir, ref, second, unborn)  # exists: not created again
    assert not write_ref(git_dir, ref, second, second)  # not at the tip named
    assert write_ref(git_dir, ref, second, first)
    assert git(repo, "rev-parse", "agentloop/run-1").strip() == second
    (git_dir / f"{ref}.lock").write_text("")  # another writer holds it
    assert not write_ref(git_dir, ref, first, second)
    (git_dir / f"{ref}.lock").unlink()
    for name, new in (("refs/heads/../../x", first), ("refs/tags/v1", first), ("refs/heads/a.lock", first),
                      ("refs/heads/agentloop/run-1", "HEAD"), ("refs/heads/-x/.y", first)):
        assert not write_ref(git_dir, name, new, second if name == ref else unborn), name
    git(repo, "pack-refs", "--all")
    assert not write_ref(git_dir, "refs/heads/agentloop/run-2", first, unborn)  # packed refs: git decides
    assert git(repo, "rev-parse", "agentloop/run-1").strip() == second
    assert not list(git_dir.rglob("*.lock"))
    assert subprocess.run(["git", "fsck", "--strict"], cwd=repo, capture_output=True).returncode == 0


def test_patches_from_the_long_lived_diff_tree_are_byte_for_byte_git_diffs(tmp_path: Path):
    """gitbatch.diff_trees answers, pair after pair, what `git diff --raw -z --no-abbrev -p --text`
    writes (an edit, a file without a final newline, a mode change, a link become a file, bytes that
    are not text, a name out of ASCII, an empty file, nothing at all); anything but two trees' ids is
    refused, and Workspace.diff then asks git."""
    import pytest

    from agentloop.workspace import gitbatch
    from agentloop.workspace.repo import Workspace

    repo = make_repo(tmp_path / "repo", {"a.py": "x\n" * 50, "b.txt": "no newline", "sub/c.sh": "echo\n"})
    os.symlink("a.py", repo / "link")
    (repo / "bin").write_bytes(bytes(range(256)))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "links and bytes")
    one, first = git(repo, "rev-parse", "HEAD^{tree}", "HEAD").split()
    (repo / "a.py").write_text("x\n" * 20 + "y\n" + "x\n" * 29)
    (repo / "b.txt").write_text("no newline either")
    os.chmod(repo / "sub" / "c.sh", 0o755)
    (repo / "link").unlink()
    (repo / "link").write_text("now a file\n")
    (repo / "bin").write_bytes(bytes(range(255, -1, -1)))
    (repo / "new é.txt").write_text("n\n")
    (repo / "sub" / "empty").write_text("")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "changed")
    two = git(repo, "rev-parse", "HEAD^{tree}").strip()
    for old, new in ((one, two), (two, one), (one, one), (one, two)):
        theirs = subprocess.run(["git", "diff", "--raw", "-z", "--no-abbrev", "-p", "--text", old, new], cwd=repo,
                                capture_output=True, check=True,
                                env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}).stdout  # (git's own defaults)
        assert gitbatch.diff_trees(repo, old, new) == theirs
    for old, new in (("HEAD~1", "HEAD"), (first, first), (one, "0" * 40)):
        with pytest.raises(gitbatch.GitBatchError):
            gitbatch.diff_trees(repo, old, new)
    assert gitbatch.diff_trees(repo, one, two)  # (a new process, after one that was refused)
    assert Workspace(repo).diff(first, two) == Workspace(repo).diff(one, two) != ""


def test_a_file_cannot_end_diff_trees_answer_early_with_the_line_it_saw_before(tmp_path: Path, monkeypatch):
    """diff-tree's answer ends at a line it echoes back; a patch line holds a file's bytes, so a file
    written with the line of an earlier request (after a NUL, as a listing ends) must not cut the
    next answer short: each request has a line of its own."""
    from agentloop.workspace import gitbatch

    seen: list[bytes] = []
    real = os.urandom
    monkeypatch.setattr(gitbatch.os, "urandom", lambda n: seen.append(real(n)) or seen[-1])
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n", "z.txt": "z\n"})
    one = git(repo, "rev-parse", "HEAD^{tree}").strip()
    (repo / "a.txt").write_text("b\n")
    git(repo, "commit", "-qam", "b")
    gitbatch.diff_trees(repo, one, git(repo, "rev-parse", "HEAD^{tree}").strip())
    (repo / "a.txt").write_bytes(b"x\0agentloop-end-" + seen[-1].hex().encode() + b"\nmore\n")
    (repo / "z.txt").write_text("changed too\n")
    git(repo, "commit", "-qam", "the line seen before")
    two = git(repo, "rev-parse", "HEAD^{tree}").strip()
    theirs = subprocess.run(["git", "diff", "--raw", "-z", "--no-abbrev", "-p", "--text", one, two], cwd=repo,
                            capture_output=True, check=True, env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}).stdout
    assert gitbatch.diff_trees(repo, one, two) == theirs
    assert b"changed too" in theirs


def test_trees_and_blobs_written_in_process_are_the_ones_git_writes(tmp_path: Path):
    """Names git sorts in its own way (a folder sorts as if it ended in a slash), every file mode,
    bytes that are not text: the in-process tree and blob ids are `git mktree`'s and
    `git hash-object`'s."""
    from agentloop.workspace.objects import write_blob, write_tree

    repo = make_repo(tmp_path / "repo", {"x": "x\n"})
    objects = repo / ".git" / "objects"
    data = bytes(range(256)) * 3 + "é\r\n".encode()
    (repo / "data.bin").write_bytes(data)
    blob = subprocess.run(["git", "hash-object", "-w", "--no-filters", "data.bin"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert write_blob(objects, data) == blob
    sub = write_tree(objects, {b"inner": (b"100644", blob)})
    entries = {b"a": (b"40000", sub), b"a.b": (b"100644", blob), b"a-": (b"100755", blob), b"a0": (b"120000", blob),
               b"A": (b"100644", blob), "ü".encode(): (b"100644", blob), b"b": (b"40000", sub)}
    listing = "".join(f"{m.decode()} {'tree' if m == b'40000' else 'blob'} {oid}\t{n.decode()}\0"
                      for n, (m, oid) in entries.items())
    theirs = subprocess.run(["git", "mktree", "-z"], cwd=repo, input=listing, capture_output=True, text=True,
                            check=True).stdout.strip()
    assert write_tree(objects, entries) == theirs
    assert subprocess.run(["git", "cat-file", "-p", theirs], cwd=repo, capture_output=True).returncode == 0


def test_the_look_after_a_check_lists_files_and_ignored_ones_side_by_side_with_gits_answers(tmp_path: Path):
    """keep_pristine's two listings (the files; the ignored ones) run at the same time, and answer as
    the two commands run one after the other do; a failing one still raises with git's message."""
    import pytest

    from agentloop.workspace.repo import ignored_entries

    repo = make_repo(tmp_path / "repo", {".gitignore": "*.log\nbuild/\n", "a.py": "a\n", "tests/test_a.py": "t\n"})
    for name in ("new.py", "debug.log", "build/out.o", "tests/conftest.py", "tests/x.log"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x\n")
    workspace = Workspace(repo)
    with spawned() as started:
        files, ignored = workspace.files_and_ignored()
    assert (files, ignored) == (workspace.list_files(), ignored_entries(repo))
    assert "tests/conftest.py" in files and "build/" in ignored and "tests/x.log" in ignored
    assert len(started) == 2
    (repo / ".git" / "index").write_bytes(b"not an index")
    with pytest.raises(RuntimeError, match="git ls-files"):
        workspace.files_and_ignored()
