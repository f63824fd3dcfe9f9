"""How fast agentloop starts: `--help`, the pre-commit hook's pass path, `import agentloop`.

  python benchmarks/bench_startup.py [-n 21] [--aider PATH/TO/aider] [--check CMD]

Every figure is the wall time of a fresh process (as a shell or pre-commit starts it), over n
rounds after one warm-up round, each round running every command once in turn (so a swing in the
machine's load falls on all of them alike); the table shows the median and the spread. The hook's pass path is
timed against the bare check command run through the shell, as the hook runs it: the difference
is agentloop's overhead. Wall time is what a person waits; CPU time (user + system) is printed
beside it because, on a shared and busy machine, it moves far less than wall time does.
Targets: `--help` < 150 ms, pass-path overhead < 250 ms, and litellm absent from sys.modules on
the pass path (tests/test_hook.py asserts it; this script reports it).
With --aider, `aider --help` is timed the same way, for comparison.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELP_TARGET_MS = 150
OVERHEAD_TARGET_MS = 250


class Samples(list):
    """Wall milliseconds per run; `.cpu` holds the CPU milliseconds (user + system, the process and
    the children it waited for), which a busy machine inflates far less than wall time."""

    cpu: list[float]


def run_once(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, cpu ms) of one run of `argv`; a failing run stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed, (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000


def timed(cases: dict[str, tuple[list[str], Path]], env: dict[str, str], n: int) -> dict[str, Samples]:
    """n rounds (after one warm-up round), each running every case once in turn: a swing in the
    machine's load then falls on all cases alike instead of on whichever ran at that moment."""
    results = {key: Samples() for key in cases}
    for samples in results.values():
        samples.cpu = []
    for round_ in range(n + 1):
        for key, (argv, cwd) in cases.items():
            wall, cpu = run_once(argv, cwd, env)
            if round_:
                results[key].append(wall)
                results[key].cpu.append(cpu)
    return results


def row(label: str, samples: Samples, note: str = "") -> str:
    q = statistics.quantiles(samples, n=10) if len(samples) >= 2 else [samples[0]] * 9
    return (f"{label:<44} {statistics.median(samples):8.1f} {q[0]:8.1f} {q[-1]:8.1f} {min(samples):8.1f} "
            f"{statistics.median(samples.cpu):8.1f}  {note}")


def make_repo(path: Path, config: str | None) -> Path:
    path.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "b@example.com"], ["config", "user.name", "bench"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "a.py").write_text("x = 1\n")
    if config is not None:
        (path / ".agentloop.yaml").write_text(config)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=path, check=True)
    return path


def heavy_modules_on_pass_path(agentloop: str, repo: Path, check: str, env: dict[str, str]) -> list[str]:
    """Modules the hook's pass path imports that it should not (via -X importtime of the real entry point)."""
    python = Path(agentloop).read_text(encoding="utf-8", errors="replace").splitlines()[0].removeprefix("#!")
    proc = subprocess.run([python.strip(), "-X", "importtime", agentloop, "hook", check], cwd=repo, env=env,
                          capture_output=True, text=True)
    names = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return sorted(n for n in names if n.split(".")[0] in ("litellm", "openai", "httpx", "tiktoken", "jinja2")
                  or n in ("agentloop.run.loop", "agentloop.run.model", "agentloop.run.session",
                           "agentloop.record.trajectory"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=21, help="runs per measurement (after one warm-up)")
    parser.add_argument("--agentloop", default=shutil.which("agentloop", path=str(Path(sys.executable).parent))
                        or shutil.which("agentloop"), help="the agentloop console script to time")
    parser.add_argument("--aider", help="path to an aider executable, to time `aider --help` beside ours")
    parser.add_argument("--check", default="true", help="the check command the hook runs (default: true)")
    args = parser.parse_args()
    if not args.agentloop:
        raise SystemExit("no agentloop executable found; pip install -e . or pass --agentloop PATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLOOP_")}
    env["AGENTLOOP_MODEL"] = "openai/not-used"  # a model is configured: the pass path must still not load it
    python = Path(args.agentloop).read_text(encoding="utf-8", errors="replace").splitlines()[0][2:].strip()

    print(f"agentloop: {args.agentloop}\npython: {python}\nruns: {args.n} (+1 warm-up), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n")
    print(f"{'a fresh process, milliseconds':<44} {'median':>8} {'p10':>8} {'p90':>8} {'min':>8} {'cpu':>8}")
    print(f"{'':<44} {'(wall)':>8} {'(wall)':>8} {'(wall)':>8} {'(wall)':>8} {'(median)':>8}")
    with tempfile.TemporaryDirectory(prefix="agentloop-bench-") as tmp:
        plain = make_repo(Path(tmp) / "plain", None)
        configured = make_repo(Path(tmp) / "configured", f"checks: [{args.check!r}]\nhook: {{max_turns: 3}}\n")
        labels = {
            "python": ("python -c pass (interpreter floor)", [python, "-c", "pass"], plain),
            "import": ("python -c 'import agentloop'", [python, "-c", "import agentloop"], plain),
            "import_cli": ("python -c 'import agentloop.cli'", [python, "-c", "import agentloop.cli"], plain),
            "help": ("agentloop --help", [args.agentloop, "--help"], plain),
            "bare": (f"bare check: sh -c {args.check!r}", ["/bin/sh", "-c", args.check], plain),
            "hook": ("agentloop hook CHECK (pass path)", [args.agentloop, "hook", args.check], plain),
            "hook_yaml": ("agentloop hook, checks from .agentloop.yaml", [args.agentloop, "hook"], configured),
        }
        if args.aider:
            labels["aider"] = ("aider --help", [args.aider, "--help"], plain)
        results = timed({key: (argv, cwd) for key, (_, argv, cwd) in labels.items()}, env, args.n)
        for key, (label, _, _) in labels.items():
            note = ""
            if key == "help":
                ok = statistics.median(results["help"]) < HELP_TARGET_MS
                note = f"target < {HELP_TARGET_MS}: {'ok' if ok else 'MISSED'}"
            print(row(label, results[key], note))
        heavy = heavy_modules_on_pass_path(args.agentloop, plain, args.check, env)

    bare = statistics.median(results["bare"])
    print()
    for key, label in (("hook", "check in args"), ("hook_yaml", "checks from .agentloop.yaml")):
        overhead = statistics.median(results[key]) - bare
        cpu = statistics.median(results[key].cpu) - statistics.median(results["bare"].cpu)
        verdict = "ok" if overhead < OVERHEAD_TARGET_MS else "MISSED"
        print(f"pass-path overhead ({label}): {overhead:.1f} ms wall, {cpu:.1f} ms cpu "
              f"(target < {OVERHEAD_TARGET_MS} wall: {verdict})")
    print(f"heavy modules imported on the pass path: {', '.join(heavy) if heavy else 'none (no litellm)'}")
    if args.aider:
        ratio = statistics.median(results["aider"]) / statistics.median(results["help"])
        print(f"aider --help / agentloop --help: {ratio:.1f}x")


if __name__ == "__main__":
    main()
