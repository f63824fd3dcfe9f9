"""Workspace set-up time and sandbox overhead per check; prints figures (never asserts).

1. Set-up of a run's workspace (snapshot, starting commit, pooled worktree reset to it, the ignored
   environment detected and mounted; the first run makes the pooled worktree, later runs reuse it,
   the user having edited 5 files in between) on a generated 5,000-file repository with a 200 MB ignored node_modules/,
   and the disk the worktree takes (node_modules is mounted, never copied).
2. The fixed cost of one trivial check (`true`) with the full sandbox against `--sandbox off`.
3. `cargo test` in two consecutive runs (if cargo is installed): the second reuses target/.

    python benchmarks/bench_workspace.py [--repeat 7] [--node-mb 200] [--files 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentloop.workspace import environment as workspace_env  # noqa: E402
from agentloop.workspace import sandbox  # noqa: E402
from agentloop.workspace.checks import run_command  # noqa: E402
from agentloop.workspace.isolation import Isolation, state_dir  # noqa: E402
from agentloop.workspace.repo import Workspace, git  # noqa: E402


def make_repo(root: Path, files: int, node_mb: int) -> None:
    root.mkdir(parents=True)
    git(["init", "-q", "-b", "main"], root)
    for i in range(files):
        path = root / f"pkg{i % 50}" / f"mod{i}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"VALUE_{i} = {i}\n" * 20)
    (root / ".gitignore").write_text("node_modules/\n")
    chunk = os.urandom(100_000)
    for i in range(node_mb * 10):  # 100 kB files
        path = root / "node_modules" / f"dep{i % 100}" / f"f{i}.js"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(chunk)
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@b"}
    git(["add", "-A"], root)
    git(["commit", "-qm", "initial"], root, env=env)


def du_kb(path: Path) -> int:
    return int(subprocess.run(["du", "-sk", "-x", str(path)], capture_output=True, text=True).stdout.split()[0])


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (git)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def p50(values: list[float]) -> float:
    return statistics.median(values)


def bench_setup(root: Path, repeat: int) -> None:
    user = Workspace(root)
    times, cpu, env_times, disk = [], [], [], []
    reused = []
    for n in range(repeat):
        # The user keeps working between runs: a few files differ from the previous run's start.
        for k in range(5):
            index = n * 5 + k
            edited = root / f"pkg{index % 50}" / f"mod{index}.py"
            edited.write_text(edited.read_text() + f"EDIT_{n} = {k}\n")
        run_dir = root / ".agentloop" / "runs" / f"bench{n}"
        run_dir.mkdir(parents=True, exist_ok=True)
        iso = Isolation(user, f"bench{n}", run_dir)
        started, cpu_started = time.perf_counter(), cpu_seconds()
        iso.prepare()
        work = iso.begin(user.snapshot())
        env_started = time.perf_counter()
        dirs = workspace_env.detect(root, {})
        env = workspace_env.Environment(root, work.root, dirs, state_dir(root), sandboxed=True)
        box = sandbox.resolve("auto", work.root, [work.git_dir, state_dir(root).parent], run_dir.parent,
                              user_root=root, state_dir=state_dir(root), binds=env.binds())
        box.wrapper()
        times.append(time.perf_counter() - started)
        cpu.append(cpu_seconds() - cpu_started)
        reused.append(bool(getattr(iso, "slot", None) and iso.slot.reused))
        env_times.append(time.perf_counter() - env_started)
        with env.present():
            result = run_command("ls node_modules | wc -l", work.root, timeout=60, wrapper=box.wrapper())
        disk.append(du_kb(work.root))
        iso.finish("budget_exhausted", None)
    fresh = [t for t, r in zip(times, reused, strict=True) if not r]
    again = [t for t, r in zip(times, reused, strict=True) if r]
    print(f"workspace set-up ({repeat} runs): p50 {p50(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s")
    if fresh:
        print(f"  making the pooled worktree (first run, a full checkout): {', '.join(f'{t:.3f}' for t in fresh)} s")
    if again:
        print(f"  reusing it ({len(again)} runs, 5 files changed each time): p50 {p50(again):.3f} s, "
              f"min {min(again):.3f} s, max {max(again):.3f} s")
        cpu_again = [c for c, r in zip(cpu, reused, strict=True) if r]
        print(f"  CPU time of those set-ups (agentloop + its git processes; what a quiet machine would "
              f"take, less I/O waits): p50 {p50(cpu_again):.3f} s, min {min(cpu_again):.3f} s")
    print(f"  load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"  of which the ignored environment (detect + mounts): p50 {p50(env_times) * 1000:.1f} ms; the rest is "
          "git (snapshot, starting commit, worktree checkout of the tracked files)")
    node_mb = du_kb(root / "node_modules") / 1024
    print(f"  worktree on disk: {p50(disk) / 1024:.1f} MB; user's node_modules: {node_mb:.1f} MB "
          f"(mounted, not copied; a check saw {result.output.strip()} packages, sandbox {box.mode})")


def bench_check_overhead(root: Path, repeat: int) -> None:
    user = Workspace(root)
    state = state_dir(root)
    box = sandbox.resolve("auto", root, [user.git_dir], root / ".agentloop" / "runs", user_root=root, state_dir=state)
    figures = {}
    for mode, wrapper in (("off", []), ("bwrap", box.wrapper() if box.mode == "bwrap" else None)):
        if wrapper is None:
            print(f"  sandbox: {sandbox.probe()}")
            continue
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            run_command("true", root, timeout=30, wrapper=wrapper)
            times.append(time.perf_counter() - started)
        figures[mode] = p50(times)
        print(f"trivial check (`true`), sandbox {mode}: p50 {p50(times) * 1000:.1f} ms over {repeat}")
    if len(figures) == 2:
        print(f"  sandbox overhead per check: {(figures['bwrap'] - figures['off']) * 1000:.1f} ms")


CARGO_TOML = '[package]\nname = "calc"\nversion = "0.1.0"\nedition = "2021"\n'
FUNCTIONS = 800  # enough generated code that compiling it from nothing takes seconds


def lib_rs() -> str:
    lines = ["pub fn add(a: i64, b: i64) -> i64 { a + b }"]
    lines += [f"pub fn f{i}(x: i64) -> i64 {{ let v: Vec<i64> = (0..x).map(|y| y * {i} + 1).collect(); "
              f"v.iter().sum::<i64>() + {i} }}" for i in range(FUNCTIONS)]
    lines.append("#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() { assert_eq!(super::add(2, 3), 5); }\n}")
    return "\n".join(lines) + "\n"


def bench_cargo(base: Path) -> None:
    cargo = shutil.which("cargo") or (str(Path.home() / ".cargo/bin/cargo")
                                      if (Path.home() / ".cargo/bin/cargo").exists() else None)
    if cargo is None:
        print("cargo: not installed, skipped")
        return
    root = base / "rust"
    root.mkdir()
    (root / "src").mkdir()
    (root / "Cargo.toml").write_text(CARGO_TOML)
    (root / "src" / "lib.rs").write_text(lib_rs())
    (root / ".gitignore").write_text("target/\n")
    env = {**os.environ, "PATH": f"{Path(cargo).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    git(["init", "-q", "-b", "main"], root)
    subprocess.run([cargo, "generate-lockfile", "-q"], cwd=root, env=env, check=True)
    git(["add", "-A"], root)
    git(["commit", "-qm", "initial"], root, env=env)
    started = time.perf_counter()
    subprocess.run([cargo, "test", "-q"], cwd=root, env=env, capture_output=True, check=True)
    print(f"cargo test in the user's own checkout (cold): {time.perf_counter() - started:.2f} s")
    no_env = base / "no-env.yaml"
    no_env.write_text("workspace: {detect: false}\n")
    for label, extra in (("target/ brought in", []), ("without target/ (workspace: {detect: false})",
                                                       ["--config", str(no_env)])):
        for n in (1, 2, 3):
            out = subprocess.run([sys.executable, "-m", "agentloop", "fix", "-m", "none", "--check", "cargo test -q",
                                  "--json", "-q", *extra], cwd=root, env=env, capture_output=True, text=True)
            if not out.stdout.strip():
                print(f"agentloop run {n}, {label}: failed (exit {out.returncode}): {out.stderr.strip()[-300:]}")
                continue
            summary = json.loads(out.stdout.strip().splitlines()[-1])
            events = [json.loads(line) for line in Path(summary["trajectory"]).read_text().splitlines()]
            check = next(e for e in events if e["type"] == "check")
            print(f"agentloop run {n}, {label}: `cargo test` took {check['duration_s']:.2f} s "
                  f"(passed: {check['passed']}, sandbox: {check.get('sandbox')})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--node-mb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentloop-bench-ws-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "repo"
        started = time.perf_counter()
        make_repo(root, args.files, args.node_mb)
        print(f"generated {args.files} tracked files + {args.node_mb} MB ignored node_modules/ in "
              f"{time.perf_counter() - started:.1f} s")
        bench_setup(root, args.repeat)
        bench_check_overhead(root, args.repeat * 3)
        bench_cargo(Path(tmp))


if __name__ == "__main__":
    main()
