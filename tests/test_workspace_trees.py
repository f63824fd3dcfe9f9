"""A turn's tree written in process (agentloop.workspace.trees) is the tree git's own index would
write, byte for byte, and the long-lived git processes behind it (agentloop.workspace.gitbatch)
are reused, survive nothing they should not, and leave nothing behind. Real git repositories."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import git, make_repo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rollout_processes import spawned

from agentloop.files import looks_binary
from agentloop.workspace import gitbatch, trees
from agentloop.workspace import repo as repo_module
from agentloop.workspace.repo import Workspace, file_blobs, read_blob

NAMES = ("a", "b", "a.b", "a-", "x.py", "é", "s p", 'q"t')
PATHS = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
ACTIONS = st.sampled_from(["write", "write", "delete", "chmod", "link", "folder"])


def index_tree(workspace: Workspace, base: str, paths: list[str]) -> str:
    """What git's index writes for `base` with `paths` as on disk: a fresh private index each time."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        return workspace._index_tree(env, base, workspace._file_entries(paths))


def run_git(root: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], cwd=root, input=data, capture_output=True, check=True).stdout


def reference_diff(root: Path, old: str, new: str) -> str:
    """Workspace.diff as it was written before the listing and the patch came from one git diff: the
    listing, each blob read to tell text from binary, then a --text and a --binary diff."""
    raw = run_git(root, "diff", "--raw", "-z", "--no-renames", "--no-abbrev", "--no-ext-diff", "--no-textconv",
                  old, new)
    fields = raw.split(b"\0")
    changes = [(path.decode("utf-8", "surrogateescape"), meta.split()[2:4])
               for meta, path in zip(fields[0::2], fields[1::2], strict=False) if meta.startswith(b":")]

    def binary(sha: bytes) -> bool:
        if sha == b"0" * 40:
            return False
        body = run_git(root, "cat-file", "-p", sha.decode())
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return looks_binary(body)

    text = [p for p, shas in changes if not any(binary(s) for s in shas)]
    other = [p for p, _ in changes if p not in text]
    base = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames"]
    out = b""
    if text:
        out += run_git(root, "--literal-pathspecs", *base, "--text", old, new, "--", *text)
    if other:
        out += run_git(root, "--literal-pathspecs", *base, "--binary", old, new, "--", *other)
    return out.decode("utf-8", "surrogateescape")


def act(root: Path, rel: str, action: str, content: bytes) -> None:
    """Change `rel` on disk; a step that cannot be done there (a file in the way of a folder) is skipped."""
    path = root / rel
    try:
        if action in ("delete", "write", "link", "folder") and path.is_symlink():
            path.unlink()
        if action == "delete":
            if path.is_file():
                path.unlink()
        elif action == "chmod":
            if path.is_file():
                path.chmod(path.stat().st_mode ^ 0o100)
        elif path.is_dir():
            return
        elif action == "write":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        elif action == "link":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(content.replace(b"\0", b"").decode("latin-1") or "target")
        elif action == "folder":
            if path.exists():
                path.unlink()
            (path / "inner").mkdir(parents=True)
            (path / "inner" / "f").write_bytes(content)
    except (FileExistsError, NotADirectoryError):
        return


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.dictionaries(PATHS, st.binary(max_size=20), min_size=1, max_size=6),
       turns=st.lists(st.lists(st.tuples(PATHS, ACTIONS, st.binary(max_size=12)), min_size=1, max_size=4),
                      min_size=1, max_size=3))
def test_tree_with_writes_what_the_index_writes(tmp_path_factory, start, turns):
    repo = tmp_path_factory.mktemp("repo")
    git(repo, "init", "-q")
    for rel, content in start.items():
        act(repo, rel, "write", content)
    workspace = Workspace(repo)
    try:
        tree = base = workspace.snapshot()
        for steps in turns:
            for rel, action, content in steps:
                act(repo, rel, action, content)
            paths = [rel for rel, _, _ in steps]
            expected = index_tree(workspace, tree, paths)
            before, tree = tree, workspace.tree_with(tree, paths)
            assert tree == expected
            repo_module._CHANGES.clear()
            assert workspace._diff(before, tree) == reference_diff(repo, before, tree)  # listing and patch at once
            assert workspace._diff(before, tree) == reference_diff(repo, before, tree)  # the listing known
            assert workspace.tree_with(base, paths) == index_tree(workspace, base, paths)
            assert workspace.tree_with(None, paths) == index_tree(workspace, "--empty", paths)
    finally:
        workspace.close()


def test_a_plain_edit_starts_no_git_and_an_unusual_one_asks_the_index(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"pkg/calc.py": "x = 1\n", "pkg/deep/d.py": "d\n", "top.py": "t\n"})
    workspace = Workspace(repo)
    try:
        start = workspace.snapshot()
        (repo / "pkg" / "calc.py").write_text("x = 2\n")
        (repo / "pkg" / "new" / "n.py").parent.mkdir()
        (repo / "pkg" / "new" / "n.py").write_text("n\n")
        (repo / "top.py").unlink()
        paths = ["pkg/calc.py", "pkg/new/n.py", "top.py", "gone/never.py"]
        workspace.tree_with(start, ["pkg/deep/d.py"])  # (the long-lived processes start here)
        workspace.tree_with(None, ["pkg/deep/d.py"])
        with spawned() as started:
            tree = workspace.tree_with(start, paths)
        assert started == []
        assert tree == index_tree(workspace, start, paths)
        listing = git(repo, "ls-tree", "-r", "--name-only", tree).split()
        assert listing == ["pkg/calc.py", "pkg/deep/d.py", "pkg/new/n.py"]
        (repo / "pkg" / "calc.py").unlink()
        (repo / "pkg" / "calc.py").mkdir()  # a folder where the file was: the index decides
        (repo / "pkg" / "calc.py" / "f").write_text("f\n")
        with spawned() as started:
            tree = workspace.tree_with(start, ["pkg/calc.py/f"])
        assert ["git", "write-tree"] in started
        assert tree == index_tree(workspace, start, ["pkg/calc.py/f"])
    finally:
        workspace.close()


@pytest.mark.parametrize("rel", ["a/../b", ".git/config", "a//b", "./a", ".GIT/x", "a/.gitmodules"])
def test_a_path_git_treats_specially_is_left_to_git(rel: str):
    assert not trees.plain_path(rel)
    assert trees.edit_tree(Path("/nonexistent"), None, {rel: ("100644", "0" * 40)}) is None


def test_one_reader_and_one_writer_serve_a_whole_run_and_close_with_the_workspace(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"a.py": "a\n", "b.py": "b\n"})
    workspace = Workspace(repo)
    blobs = file_blobs(repo, ["a.py", "b.py"], store=True)
    assert blobs == git(repo, "hash-object", "a.py", "b.py").split()
    with spawned() as started:
        for _ in range(3):
            assert file_blobs(repo, ["b.py", "a.py"], store=True) == blobs[::-1]
            assert read_blob(repo, blobs[0]) == b"a\n"
    assert started == [["git", "cat-file", "--batch"]]  # the first read starts it; the writer was running
    running = [gitbatch._OPEN[k].proc for k in list(gitbatch._OPEN) if k[0] == os.path.realpath(repo)]
    assert len(running) == 2 and all(p.poll() is None for p in running)
    assert all(os.getsid(p.pid) == p.pid for p in running)  # a Ctrl-C at the terminal does not reach them
    workspace.close()
    assert all(p.poll() is not None for p in running)
    assert not any(k[0] == os.path.realpath(repo) for k in gitbatch._OPEN)


def test_a_failed_request_raises_gits_message_and_the_next_one_starts_afresh(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"a.py": "a\n"})
    file_blobs(repo, ["a.py"], store=True)
    with pytest.raises(RuntimeError, match="git hash-object -w failed: .*could not open 'missing.py'"):
        file_blobs(repo, ["missing.py"], store=True)
    assert file_blobs(repo, ["a.py"], store=True) == git(repo, "hash-object", "a.py").split()
    reader = gitbatch.batch(repo, gitbatch.CAT_FILE)
    os.kill(reader.proc.pid, signal.SIGKILL)  # ended by someone else between two requests
    reader.proc.wait()
    assert read_blob(repo, git(repo, "hash-object", "a.py").strip()) == b"a\n"
    with pytest.raises(RuntimeError, match="cat-file failed"):
        read_blob(repo, "1" * 40)  # (a missing object: asked the old way, which says so)
    gitbatch.close_all(repo)


def test_a_forked_child_starts_its_own_and_leaves_the_parents_alone(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"a.py": "a\n"})
    blob = git(repo, "hash-object", "a.py").strip()
    assert read_blob(repo, blob) == b"a\n"
    parents = gitbatch.batch(repo, gitbatch.CAT_FILE)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            # the parent's pipes are closed in the child (else git would wait for the child's copy)
            inherited = parents.proc.stdin is not None and parents.proc.stdin.closed
            mine = gitbatch.batch(repo, gitbatch.CAT_FILE)
            code = 0 if inherited and mine is not parents and read_blob(repo, blob) == b"a\n" else 2
            gitbatch.close_all()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parents.alive and gitbatch.batch(repo, gitbatch.CAT_FILE) is parents
    assert read_blob(repo, blob) == b"a\n"
    gitbatch.close_all(repo)


def test_an_exchange_cut_short_drops_the_process_so_no_answer_is_read_for_the_next(tmp_path, monkeypatch):
    """An interrupt between a request and the end of its answer (Ctrl-C in file_blobs) leaves the rest of
    the answer in the pipe: read by the next request, it would give a file another file's blob id."""
    repo = make_repo(tmp_path / "repo", {"a.py": "a\n", "b.py": "b\n", "c.py": "c\n"})
    writer = gitbatch.batch(repo, gitbatch.HASH_OBJECT)
    real_read_line, calls = gitbatch.GitBatch.read_line, []

    def interrupted_on_the_second(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_read_line(self)

    monkeypatch.setattr(gitbatch.GitBatch, "read_line", interrupted_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        file_blobs(repo, ["a.py", "b.py"], store=True)
    monkeypatch.undo()
    assert writer.proc.poll() is not None  # dropped, not left with b.py's id unread
    assert file_blobs(repo, ["c.py"], store=True) == [git(repo, "hash-object", "c.py").strip()]
    gitbatch.close_all(repo)


def test_a_killed_owner_leaves_no_git_process(tmp_path: Path):
    """A process killed outright (SIGKILL: no atexit, no finally) takes its long-lived git with it:
    their input ends when the kernel closes its pipes."""
    repo = make_repo(tmp_path / "repo", {"a.py": "a\n"})
    script = ("import os, sys; from pathlib import Path; from agentloop.workspace.repo import file_blobs, read_blob\n"
              "from agentloop.workspace import gitbatch\n"
              "sha = file_blobs(Path(sys.argv[1]), ['a.py'], store=True)[0]; read_blob(Path(sys.argv[1]), sha)\n"
              "print(' '.join(str(b.proc.pid) for b in gitbatch._OPEN.values()), flush=True)\n"
              "os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([os.sys.executable, "-c", script, str(repo)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == -9
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    for pid in pids:
        for _ in range(200):
            if not _running(pid):
                break
            import time

            time.sleep(0.01)
        assert not _running(pid)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_turns_branch_moves_in_one_transaction_of_the_long_lived_update_ref(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"a.py": "a\n"})
    first = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    second = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "branch", "run", first)
    with spawned() as started:
        assert gitbatch.update_ref(repo, "refs/heads/run", second, first)
        assert gitbatch.update_ref(repo, "refs/heads/run", first, second)
    assert started == [["git", "update-ref", "--stdin"]]
    assert git(repo, "rev-parse", "run").strip() == first
    with pytest.raises(RuntimeError, match="is at .* but expected"):  # refused where it is not at `old`
        gitbatch.update_ref(repo, "refs/heads/run", first, second)
    assert git(repo, "rev-parse", "run").strip() == first
    assert gitbatch.update_ref(repo, "refs/heads/run", second, first)  # (a new process after the refusal)
    assert git(repo, "rev-parse", "run").strip() == second
    gitbatch.close_all(repo)
