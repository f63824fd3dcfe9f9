"""Pooled worktrees (agentloop.workspace.pool): reused across runs, never shared by two live runs, reset to
exactly the run's start whatever the last run (a hostile check, a kill -9) left. Real git repositories,
real processes, real signals."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, git, make_repo
from fake_llm import FakeLLM
from test_fix_e2e import FIX_ADD, run_fix

from agentloop.workspace import pool
from agentloop.workspace.isolation import state_dir

FILES = {"a.txt": "alpha\n", "b.txt": "bravo\n", "c.sh": "echo c\n", ".gitignore": "*.log\nnode_modules/\n",
         "pkg/mod.py": "X = 1\n", "src/m.py": "M = 1\n", "src/deep/n.py": "N = 1\n"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", FILES)


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD").strip()


def expected(repo: Path, commit: str) -> dict[str, tuple[str, bytes]]:
    """What a fresh checkout of `commit` holds: path -> (mode, content or link target)."""
    out = {}
    for entry in git(repo, "ls-tree", "-r", "-z", commit).split("\0"):
        if entry:
            meta, path = entry.split("\t", 1)
            mode, _, sha = meta.split()
            data = subprocess.run(["git", "cat-file", "blob", sha], cwd=repo, capture_output=True, check=True).stdout
            out[path] = (mode, data)
    return out


def actual(slot: Path) -> dict[str, tuple[str, bytes]]:
    """What the slot holds (everything but its `.git` file), in the same shape."""
    out = {}
    for folder, dirs, files in os.walk(slot):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder) / name
            rel = str(path.relative_to(slot))
            if rel == ".git":
                continue
            if path.is_symlink():
                out[rel] = ("120000", os.readlink(path).encode())
            else:
                mode = "100755" if path.stat().st_mode & 0o100 else "100644"
                out[rel] = (mode, path.read_bytes())
    return out


def assert_exactly(repo: Path, slot: Path, commit: str) -> None:
    assert actual(slot) == expected(repo, commit)
    wanted = 0o777 & ~pool._umask()
    for folder, _, _ in os.walk(slot):
        assert stat.S_IMODE(os.lstat(folder).st_mode) == wanted, folder
        assert not any(n.startswith("system.posix_acl") for n in os.listxattr(folder)), folder
    assert git(slot, "rev-parse", "HEAD").strip() == commit


def take(repo: Path, commit: str) -> pool.Slot:
    return pool.take(repo, state_dir(repo), commit)


def drop_without_cleaning(slot: pool.Slot) -> None:
    """Give a slot back the way a killed run does: the lock goes, nothing is cleaned."""
    assert slot.lock_fd is not None
    os.close(slot.lock_fd)
    slot.lock_fd = None


def test_a_slot_is_reused_and_only_what_differs_is_rewritten(repo):
    first = git(repo, "rev-parse", "HEAD").strip()
    (repo / "a.txt").write_text("alpha 2\n")
    (repo / "new.txt").write_text("new\n")
    (repo / "b.txt").unlink()
    second = commit_all(repo, "second")
    slot = take(repo, first)
    assert not slot.reused and slot.path == state_dir(repo) / "pool" / "slot-0"
    assert_exactly(repo, slot.path, first)
    untouched = (slot.path / "src" / "m.py").stat().st_ino
    slot.release()
    again = take(repo, second)
    assert again.reused and again.path == slot.path
    assert_exactly(repo, again.path, second)
    assert (again.path / "src" / "m.py").stat().st_ino == untouched  # not rewritten
    again.release()
    back = take(repo, first)
    assert back.reused
    assert_exactly(repo, back.path, first)
    back.release()


def test_two_live_takes_never_share_a_worktree(repo):
    commit = git(repo, "rev-parse", "HEAD").strip()
    one, two = take(repo, commit), take(repo, commit)
    assert one.path != two.path and {one.path.name, two.path.name} == {"slot-0", "slot-1"}
    assert pool.in_use(one.path) and pool.in_use(two.path)
    one.release()
    assert not pool.in_use(one.path) and pool.in_use(two.path)
    three = take(repo, commit)
    assert three.path == one.path and three.reused
    two.release()
    three.release()


HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from agentloop.workspace import pool
slot = pool.take(Path({repo!r}), Path({state!r}), {commit!r})
print(slot.path, flush=True)
time.sleep(600)
"""


def test_a_slot_held_by_another_process_is_skipped_and_reclaimed_when_it_dies(repo):
    commit = git(repo, "rev-parse", "HEAD").strip()
    code = HOLD.format(root=str(ROOT), repo=str(repo), state=str(state_dir(repo)), commit=commit)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        held = Path(holder.stdout.readline().strip())
        assert held.name == "slot-0" and pool.in_use(held)
        (held / "a.txt").write_text("the holder's edit\n")
        mine = take(repo, commit)
        assert mine.path.name == "slot-1"
        assert (held / "a.txt").read_text() == "the holder's edit\n"  # taking another slot never touches it
        mine.release()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not pool.in_use(held)  # the kernel dropped the dead process's lock
    reclaimed = take(repo, commit)
    assert reclaimed.path == held and reclaimed.reused
    assert_exactly(repo, held, commit)
    reclaimed.release()


def set_default_acl(folder: Path) -> None:
    """A default ACL (user, group, other: rwx), in the kernel's xattr format; skipped where unsupported."""
    import struct

    entries = b"".join(struct.pack("<HHI", tag, 7, 0xFFFFFFFF) for tag in (0x01, 0x04, 0x20))
    try:
        os.setxattr(folder, "system.posix_acl_default", struct.pack("<I", 2) + entries)
    except OSError:
        return
    assert "system.posix_acl_default" in os.listxattr(folder)


@pytest.mark.parametrize("ending", ["released", "killed"])
def test_nothing_a_hostile_run_left_survives_into_the_next(repo, ending):
    """Given back normally (cleaned then) or by a killed run (cleaned when taken next)."""
    commit = git(repo, "rev-parse", "HEAD").strip()
    slot = take(repo, commit)
    w = slot.path
    # A tracked file changed with its size and times put back: only its ctime tells (an old mtime, known
    # to the index, so that git's racy-timestamp check does not catch it by chance).
    os.utime(w / "a.txt", (1_600_000_000, 1_600_000_000))
    git(w, "update-index", "--refresh")
    (w / "a.txt").write_text("ALPHA\n")
    os.utime(w / "a.txt", (1_600_000_000, 1_600_000_000))
    (w / "b.txt").unlink()
    os.chmod(w / "c.sh", 0o755)
    (w / "junk.txt").write_text("planted\n")
    (w / "x.log").write_text("ignored\n")
    (w / "node_modules" / "evil").mkdir(parents=True)
    (w / "node_modules" / "evil" / "index.js").write_text("pwn\n")
    (w / "nested" / ".git").mkdir(parents=True)  # a repository git clean -fdx alone would keep
    (w / "nested" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (w / "nested" / "x").write_text("x\n")
    (w / "locked").mkdir()
    (w / "locked" / "f").write_text("f\n")
    os.chmod(w / "locked", 0)
    os.chmod(w / "pkg", 0o555)  # the next run's checks could not write there
    os.chmod(w, 0o2777)  # setgid on the worktree itself
    (w / "src").rename(w / "src_old")  # a tracked folder swapped for a link to an edited copy
    (w / "src_old" / "m.py").write_text("M = 2\n")
    (w / "src").symlink_to("src_old")
    os.symlink("/etc/passwd", w / "a_link")
    set_default_acl(w / "pkg")  # files made there later would get these permissions
    if ending == "released":
        slot.release()
        assert (w.parent / f"{w.name}.clean").exists()
    else:
        drop_without_cleaning(slot)
    again = take(repo, commit)
    assert again.path == w and again.reused
    assert_exactly(repo, w, commit)
    again.release()


def test_a_slot_whose_git_link_was_tampered_with_is_made_afresh(repo):
    commit = git(repo, "rev-parse", "HEAD").strip()
    index_before = (repo / ".git" / "index").read_bytes()
    slot = take(repo, commit)
    (slot.path / "junk").write_text("x\n")
    (slot.path / ".git").write_text(f"gitdir: {repo / '.git'}\n")  # would turn our reset on the user's index
    drop_without_cleaning(slot)
    again = take(repo, commit)
    assert not again.reused
    assert_exactly(repo, again.path, commit)
    assert (repo / ".git" / "index").read_bytes() == index_before
    git_dir = Path(git(again.path, "rev-parse", "--absolute-git-dir").strip())
    (git_dir / "config.worktree").write_text("[core]\n\ttrustctime = false\n")
    drop_without_cleaning(again)
    third = take(repo, commit)
    assert not third.reused and not (Path(git(third.path, "rev-parse", "--absolute-git-dir").strip())
                                     / "config.worktree").exists()
    assert_exactly(repo, third.path, commit)
    third.release()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 2


def test_a_slot_still_unclean_after_its_reset_is_made_afresh(repo, monkeypatch):
    """The last line of defence: were `git clean` to miss something, the check after the reset sees it."""
    commit = git(repo, "rev-parse", "HEAD").strip()
    slot = take(repo, commit)
    (slot.path / "junk.txt").write_text("planted\n")
    (slot.path / "x.log").write_text("planted\n")
    time.sleep(0.05)
    pool._touch_stamp(slot.path)  # as if planted before the last reset ended: only `git clean` could catch them
    drop_without_cleaning(slot)
    real = pool._git
    monkeypatch.setattr(pool, "_git", lambda path, args, **kw: "" if args[0] == "clean" else real(path, args, **kw))
    again = take(repo, commit)
    assert not again.reused
    assert_exactly(repo, again.path, commit)
    again.release()


def test_half_made_or_half_reset_slots_are_recovered(repo):
    commit = git(repo, "rev-parse", "HEAD").strip()
    slot = take(repo, commit)
    git_dir = Path(git(slot.path, "rev-parse", "--absolute-git-dir").strip())
    (git_dir / "index.lock").write_text("")  # a git of a killed run, maybe still writing
    (slot.path / "a.txt").unlink()
    (slot.path / ".a.txt.tmp").write_text("half\n")
    drop_without_cleaning(slot)
    other = take(repo, commit)
    assert other.path.name == "slot-1"  # a young lock: that git may not be done, so the slot is left alone
    other.release()
    os.utime(git_dir / "index.lock", (time.time() - 60, time.time() - 60))
    again = take(repo, commit)
    assert again.reused and again.path == slot.path and not (git_dir / "index.lock").exists()
    assert_exactly(repo, again.path, commit)
    drop_without_cleaning(again)
    (state_dir(repo) / "pool" / "slot-0.json").unlink()  # killed between `worktree add` and its record
    third = take(repo, commit)
    assert not third.reused and third.path.name == "slot-0"
    assert_exactly(repo, third.path, commit)
    drop_without_cleaning(third)
    # Killed inside `git worktree add`: registered and locked ("initializing"), no folder, no record.
    git_dir = Path(git(third.path, "rev-parse", "--absolute-git-dir").strip())
    (git_dir / "locked").write_text("initializing\n")
    shutil.rmtree(third.path)
    (state_dir(repo) / "pool" / "slot-0.json").unlink()
    fourth = take(repo, commit)
    assert not fourth.reused and fourth.path.name == "slot-0"
    assert_exactly(repo, fourth.path, commit)
    fourth.release()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 3  # the repo, slot-0, slot-1


CYCLE = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from agentloop.workspace import pool
commits = {commits!r}
print("ready", flush=True)
n = 0
while True:
    slot = pool.take(Path({repo!r}), Path({state!r}), commits[n % 2])
    slot.release()
    n += 1
"""


def test_a_kill_at_any_moment_of_a_reset_is_recovered(tmp_path):
    """A process resetting one slot back and forth between two commits that differ in every file,
    SIGKILLed at random moments; the next take always gives exactly the wanted tree."""
    files = {f"d{i % 10}/f{i}.txt": f"one {i}\n" * 50 for i in range(400)}
    repo = make_repo(tmp_path / "repo", files)
    one = git(repo, "rev-parse", "HEAD").strip()
    for i in range(400):
        path = repo / f"d{i % 10}" / f"f{i}.txt"
        if i % 7 == 0:
            path.unlink()
        else:
            path.write_text(f"two {i}\n" * 50)
    (repo / "added").mkdir()
    (repo / "added" / "new.txt").write_text("new\n")
    two = commit_all(repo, "two")
    rng = random.Random(7)
    code = CYCLE.format(root=str(ROOT), repo=str(repo), state=str(state_dir(repo)), commits=[one, two])
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        want = (one, two)[attempt % 2]
        slot = take(repo, want)  # slot-0, or another if a git the kill orphaned holds slot-0's lock
        assert_exactly(repo, slot.path, want)
        slot.release()
    left = [p for p in (state_dir(repo) / "pool").iterdir() if p.is_dir()]
    taken = []
    for path in left:  # every slot the kills left behind, taken in turn, is exact
        assert not pool.in_use(path)
        taken.append(take(repo, one))
        assert_exactly(repo, taken[-1].path, one)
    assert sorted(s.path for s in taken) == sorted(left)
    for slot in taken:
        slot.release()


def test_removing_free_slots_keeps_the_held_ones(repo):
    commit = git(repo, "rev-parse", "HEAD").strip()
    held, free = take(repo, commit), take(repo, commit)
    free.release()
    os.chmod(free.path / "pkg", 0)  # even a folder a check locked is removed
    removed = pool.remove_free_slots(repo, state_dir(repo))
    assert removed == [free.path] and not free.path.exists() and held.path.is_dir()
    listed = git(repo, "worktree", "list", "--porcelain")
    assert str(held.path) in listed and str(free.path) not in listed
    held.release()
    assert pool.remove_free_slots(repo, state_dir(repo)) == [held.path]
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


PLANT = ("echo junk > junk.txt; echo log > x.log; mkdir -p node_modules/evil && echo e > node_modules/evil/i.js; "
         "mkdir -p sub/.git && echo x > sub/.git/HEAD; echo pwn >> test_calc.py; rm -f notes.txt; "
         "mkdir locked && touch locked/f && chmod 000 locked; chmod 555 pkg; false")
VERIFY = ("test ! -e junk.txt && test ! -e x.log && test ! -e node_modules && test ! -e sub && test ! -e locked "
          "&& ! grep -q pwn test_calc.py && test -e notes.txt && grep -q 'a - b' calc.py && touch pkg/w")


@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_a_check_in_one_run_cannot_influence_the_next(calc_repo, monkeypatch, sandbox):
    (calc_repo / ".gitignore").write_text("*.log\n")
    (calc_repo / "pkg").mkdir()
    (calc_repo / "pkg" / "mod.py").write_text("X = 1\n")
    commit_all(calc_repo, "more")
    (calc_repo / "notes.txt").write_text("mine, untracked\n")
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, summary, err = run_fix(calc_repo, server, "--check", PLANT, "--max-turns", "1", "--sandbox", sandbox,
                                     monkeypatch=monkeypatch)
    assert code == 1 and summary["outcome"] != "accepted", err
    with FakeLLM([]) as server:
        code, summary, err = run_fix(calc_repo, server, "--check", VERIFY, "--sandbox", sandbox,
                                     monkeypatch=monkeypatch)
    assert code == 0 and summary["checks"][0]["passed"], err
    events = [json.loads(line) for line in Path(summary["trajectory"]).read_text().splitlines()]
    assert not any(e["type"] == "turn" for e in events)  # passed at once: no model call hid a failure
    assert [p.name for p in (state_dir(calc_repo) / "pool").iterdir() if p.is_dir()] == ["slot-0"]
    assert (calc_repo / "notes.txt").read_text() == "mine, untracked\n"


def test_discarding_slots_leaves_the_users_own_worktrees_registered(repo, tmp_path):
    """A worktree of the user's whose folder is away (an unmounted disk, a folder moved for a while) keeps
    its registration, and with it its index and HEAD: `git worktree prune` would drop them."""
    commit = git(repo, "rev-parse", "HEAD").strip()
    away = tmp_path / "usb" / "feature"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(away))
    (away / "a.txt").write_text("staged work\n")
    git(away, "add", "a.txt")
    shutil.rmtree(tmp_path / "usb")  # the disk is unmounted
    slot = take(repo, commit)
    (slot.path / ".git").write_text("gitdir: /nowhere\n")  # unusable: the next take discards it
    drop_without_cleaning(slot)
    again = take(repo, commit)
    assert not again.reused
    again.release()
    pool.remove_free_slots(repo, state_dir(repo))
    listed = git(repo, "worktree", "list", "--porcelain")
    assert str(away) in listed and "slot-" not in listed
    assert len(list((repo / ".git" / "worktrees").iterdir())) == 1


def test_a_worktree_that_cannot_be_made_is_one_line_not_a_traceback(calc_repo, monkeypatch):
    state_dir(calc_repo).mkdir(parents=True, exist_ok=True)
    (state_dir(calc_repo) / "pool").write_text("a file where the pool's folder goes\n")
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, _, err = run_fix(calc_repo, server, "--check", "false", monkeypatch=monkeypatch)
    assert code == 3 and err.strip().splitlines()[-1].startswith("agentloop: cannot set up the run's worktree:"), err
    assert "Traceback" not in err and not server.requests
    assert git(calc_repo, "status", "--porcelain") == ""
