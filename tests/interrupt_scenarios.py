"""Kill `agentloop fix` at random moments and check what it leaves behind.

Shared by tests/test_interrupts.py (a few scenarios in CI) and benchmarks/bench_interrupts.py (hundreds).
Each scenario: a fresh repository with uncommitted user changes, a scripted model whose two replies
fix three files, `agentloop fix` as a real subprocess (worktree or --in-place), SIGINT / SIGTERM /
SIGKILL after a random delay. It survives when afterwards:
  - the user's tree is byte-identical to before, or holds the whole accepted result (for SIGKILL:
    after the next run's recovery, and for an --in-place run killed mid-edit after `agentloop undo --force`,
    which is what the documentation tells the user to do);
  - `git fsck` is clean, and no worktree, run record, journal or temp file is left;
  - for SIGINT/SIGTERM: a trajectory that has a header ends with its `outcome` footer (totals, reward).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from conftest import make_repo
from fake_llm import FakeLLM

from agentloop.record.trajectory import read_events
from agentloop.workspace import pool
from agentloop.workspace.isolation import recover, state_dir

FILES = {name: f"def {name[0]}():\n    return 'BUG'\n" for name in ("a.py", "b.py", "c.py")}
CHECK = "! grep -q BUG a.py b.py c.py"
SLOW_APPLY = Path(__file__).with_name("slow_apply.py")  # the CLI with write-back slowed from outside


def reply(*names: str) -> str:
    return "".join(f"{n}\n<<<<<<< SEARCH\n    return 'BUG'\n=======\n    return 'ok'\n>>>>>>> REPLACE\n\n"
                   for n in names)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in (".git", ".agentloop") or path.is_dir():
            continue
        out[str(rel)] = (path.read_bytes(), path.lstat().st_mode & 0o777)
    return out


def make_scenario_repo(path: Path) -> tuple[Path, dict, dict]:
    repo = make_repo(path, {**FILES, "README": "readme\n"})
    with open(repo / "README", "a") as fh:
        fh.write("an unstaged change\n")
    (repo / "notes.txt").write_text("untracked notes\n")
    before = snapshot(repo)
    whole = dict(before)
    for name in FILES:
        whole[name] = (FILES[name].replace("'BUG'", "'ok'").encode(), before[name][1])
    return repo, before, whole


def fix_command(api_base: str, in_place: bool) -> list[str]:
    return [sys.executable, str(SLOW_APPLY), "fix", "-m", "openai/fake", "--api-base", api_base, "--check", CHECK,
            "--json", "-q", "--max-turns", "4", *(["--in-place"] if in_place else [])]


def env(apply_delay: float) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLOOP_") and not k.endswith("_API_KEY")}
    out.update(LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONDONTWRITEBYTECODE="1", PYTHONFAULTHANDLER="1",
               SLOW_APPLY_DELAY=str(apply_delay))
    return out


def leftovers(repo: Path) -> list[str]:
    state = state_dir(repo)
    found = []
    if state.is_dir():
        found += [str(p) for p in state.glob("journal-*")]
        found += [str(p) for p in (state / "runs").glob("*")] if (state / "runs").is_dir() else []
        found += [str(p) for p in (state / "worktrees").glob("*")] if (state / "worktrees").is_dir() else []
    found += [str(p) for p in repo.rglob("*.agentloop-tmp")]
    listed = subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=repo, capture_output=True, text=True)
    others = [line.split(" ", 1)[1] for line in listed.stdout.splitlines() if line.startswith("worktree ")][1:]
    # Pooled worktrees stay (agentloop.workspace.pool), but none may still be held by a run.
    if any(Path(o).parent != state / "pool" or pool.in_use(Path(o)) for o in others):
        found.append("git worktree list: " + listed.stdout)
    return found


def fsck_ok(repo: Path) -> bool:
    proc = subprocess.run(["git", "fsck", "--no-dangling", "--no-progress"], cwd=repo, capture_output=True, text=True)
    return proc.returncode == 0 and "error" not in proc.stderr.lower() and "missing" not in proc.stdout.lower()


def run_once(workdir: Path, rng: random.Random, sig: int | None, window: float, in_place: bool,
             apply_delay: float = 0.1, kill_when=None, anchor: int = 0) -> dict:
    """One scenario; returns what happened and whether it survived (with the reason if not).

    The signal comes `window * random` seconds after the start, or, with `anchor` n, after the run's
    n-th model request reached the server (so kills land among the edits, checks and the apply-back)."""
    repo, before, whole = make_scenario_repo(workdir)
    script = [{"content": reply("a.py"), "delay": rng.uniform(0.0, 0.3)},
              {"content": reply("b.py", "c.py"), "delay": rng.uniform(0.0, 0.3)}]
    result: dict = {"signal": signal.Signals(sig).name if sig else None, "in_place": in_place, "how": "direct"}
    with FakeLLM(script) as server:
        started = time.monotonic()
        proc = subprocess.Popen(fix_command(server.api_base, in_place), cwd=repo, env=env(apply_delay),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(0, window) if sig else None
        first = None
        if sig is None or anchor:  # the delay counts from the run's n-th model request
            while proc.poll() is None and len(server.requests) < max(anchor, 1):
                time.sleep(0.005)
            first = time.monotonic() - started
        if sig and kill_when is not None:  # kill at a chosen moment instead of a random one
            while proc.poll() is None and not kill_when(repo):
                time.sleep(0.01)
            if proc.poll() is None:
                proc.send_signal(sig)
        elif sig:
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # hung: have faulthandler print every thread's stack, count it lost
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=60)
            result.update(delay=delay, exit_code="hung", duration=time.monotonic() - started, first_call=None,
                          anchor=anchor, problems=["hung after the signal: " + err[-4000:]], survived=False,
                          tree="unknown")
            return result
        result.update(delay=delay, exit_code=proc.returncode, duration=time.monotonic() - started, first_call=first,
                      anchor=anchor)
    problems = []
    runs = sorted((repo / ".agentloop" / "runs").glob("2*"))
    if sig != signal.SIGKILL:
        if proc.returncode not in (0, 1, 130, -signal.SIGINT, -signal.SIGTERM):
            problems.append(f"exit code {proc.returncode}: {err.strip()[-300:]}")
        if "Traceback" in err and proc.returncode not in (-signal.SIGINT, 1):
            problems.append("traceback: " + err[-500:])
        for run in runs:
            events = read_events(run / "trajectory.jsonl") if (run / "trajectory.jsonl").exists() else []
            if events and events[0].get("type") == "header":
                last = events[-1]
                if last.get("type") != "outcome" or "totals" not in last or "reward" not in last:
                    problems.append(f"trajectory ends with {last.get('type')}, not the outcome footer")
                elif proc.returncode == 130 and last["outcome"] != "interrupted":
                    problems.append(f"exit 130 but outcome {last['outcome']}")
                result["outcome"] = last.get("outcome")
    else:
        if any(state_dir(repo).glob("journal-*")):
            result["how"] = "journal repaired by the next run"
        recover(repo)  # what the next `agentloop fix` does first
        state = snapshot(repo)
        if in_place and state not in (before, whole) and runs:
            undo = subprocess.run([sys.executable, "-m", "agentloop", "undo", runs[-1].name, "--force"], cwd=repo,
                                  env=env(0), capture_output=True, text=True)
            result["how"] = "restored by agentloop undo --force"
            if undo.returncode != 0:
                problems.append("undo failed: " + undo.stderr.strip())
    state = snapshot(repo)
    result["tree"] = "before" if state == before else "whole result" if state == whole else "OTHER"
    if result["tree"] == "OTHER":
        changed = sorted(k for k in set(state) | set(before) if state.get(k) != before.get(k))
        problems.append(f"tree neither as before nor the whole result: {changed}")
    if not fsck_ok(repo):
        problems.append("git fsck not clean")
    left = leftovers(repo)
    if left:
        problems.append(f"left behind: {left}")
    result["problems"] = problems
    result["survived"] = not problems
    return result


def calibrate(workdir: Path) -> tuple[float, float]:
    """Seconds an uninterrupted run takes here, and how many of them come after its first model call
    (start-up, mostly importing litellm, comes before): the kill delays are drawn from these."""
    result = run_once(workdir, random.Random(0), None, 0, False)
    if not result["survived"] or result["tree"] != "whole result":
        raise AssertionError(f"the uninterrupted scenario itself fails: {result}")
    return result["duration"], result["duration"] - result["first_call"]


def run_many(base: Path, count: int, seed: int = 1, progress=lambda line: None) -> dict:
    """`count` scenarios: SIGINT, SIGTERM, SIGKILL in turn; a fifth killed at a random moment of the whole
    run, the rest 0-1.5 s after its first or second model request (edits, checks, snapshots, apply-back)."""
    rng = random.Random(seed)
    whole, active = calibrate(base / "calibrate")
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
    results = []
    for i in range(count):
        sig = signals[i % 3]
        in_place = rng.random() < 0.35
        anchor = rng.choice([0, 1, 1, 2, 2])
        r = run_once(base / f"s{i}", rng, sig, 1.5 if anchor else whole * 1.1, in_place, anchor=anchor)
        results.append(r)
        progress(json.dumps({k: r[k] for k in ("signal", "in_place", "anchor", "delay", "exit_code", "tree",
                                                 "how",
                                                 "survived")} | ({"problems": r["problems"]} if r["problems"] else {}),
                            default=str))
    survived = sum(r["survived"] for r in results)
    return {"tried": count, "survived": survived, "lost": count - survived,
            "windows_s": {"whole run": round(whole, 2), "after the first model call": round(active, 2)},
            "exit_codes": dict(Counter(str(r["exit_code"]) for r in results)),
            "by_signal": dict(Counter(f"{r['signal']} {'in-place' if r['in_place'] else 'worktree'}: {r['tree']}"
                                      f" ({r['how']})" for r in results)),
            "failures": [r for r in results if not r["survived"]]}
