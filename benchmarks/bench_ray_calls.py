"""What Ray itself costs a call, the way the Ray backend of `agentloop batch` calls it: Ray tasks
against method calls on a pool of long-lived actors, each call sleeping like a rollout waiting on the
model (and optionally burning a rollout's CPU in the callee), at most N in flight (`ray.wait`).

Per call: the driver's round trip (submitted -> fetched) minus the time spent inside the call; printed
as median and p95 per kind, in-flight count and variant. Each round runs each kind in a fresh local
Ray (`ray.init(num_cpus=8)`, a subprocess of its own: actors holding their CPUs would starve tasks in
a shared session), the kinds alternating, so a busy machine weighs on both alike. A warm-up pass at
the largest in-flight count comes first (the task kind's worker processes, the actors' start).

Run:  python benchmarks/bench_ray_calls.py [--rounds 3] [--inflight 1,4,8] [--sleep 1.0] [--burn 0.15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def callee(sleep_s: float, burn_s: float) -> float:
    """Half the CPU burn, the sleep, the other half (set-up, the model's reply, the checks); the
    seconds spent inside."""
    started = time.monotonic()
    for part in (burn_s / 2, None, burn_s / 2):
        if part is None:
            time.sleep(sleep_s)
            continue
        until = time.process_time() + part
        while time.process_time() < until:
            pass
    return time.monotonic() - started


class Caller:
    """One long-lived actor: the actor pool's member."""

    def call(self, sleep_s: float, burn_s: float) -> float:
        return callee(sleep_s, burn_s)

    def ping(self) -> int:
        return os.getpid()


def run_loop(ray, submit, calls: int, inflight: int, sleep_s: float, burn_s: float,
             batch_get: bool = False) -> list[float]:
    """The backend's loop: at most `inflight` submitted, wait for one, fetch every one back (one
    `ray.get` each, or one for all with `batch_get`); the overhead of each call in seconds.
    `submit(slot)` returns a ref; slots are handed back on return."""
    free = list(range(inflight))
    pending: dict = {}
    overheads = []
    left = calls
    while left or pending:
        while left and free:
            slot = free.pop()
            pending[submit(slot, sleep_s, burn_s)] = (slot, time.monotonic())
            left -= 1
        ready, waiting = ray.wait(list(pending), num_returns=1, timeout=0.5)
        if ready and waiting:
            ready += ray.wait(waiting, num_returns=len(waiting), timeout=0)[0]
        together = ray.get(ready) if batch_get else None
        for i, ref in enumerate(ready):
            inner = together[i] if together is not None else ray.get(ref)
            slot, sent = pending.pop(ref)
            overheads.append(time.monotonic() - sent - inner)
            free.append(slot)
    return overheads


def session(kind: str, inflights: list[int], sleep_s: float, burn_s: float) -> dict:
    """One fresh local Ray: warm-up, then each in-flight count with and without the CPU burn. A kind
    ending in `+batch` fetches the calls back together with one `ray.get`."""
    import ray

    kind, batch_get = kind.removesuffix("+batch"), kind.endswith("+batch")
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        most = max(inflights)
        if kind == "task":
            task = ray.remote(num_cpus=1, max_retries=0)(callee)

            def submit(slot, s, b):
                return task.remote(s, b)
        else:
            actors = [ray.remote(num_cpus=1)(Caller).remote() for _ in range(most)]
            ray.get([a.ping.remote() for a in actors])

            def submit(slot, s, b):
                return actors[slot].call.remote(s, b)
        run_loop(ray, submit, 2 * most, most, sleep_s, 0.0)  # warm-up
        out = {}
        for burn in (0.0, burn_s):
            for n in inflights:
                calls = max(12, 3 * n)
                out[f"{n}/{burn}"] = run_loop(ray, submit, calls, n, sleep_s, burn, batch_get)
        return out
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", default="1,4,8")
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--burn", type=float, default=0.15)
    parser.add_argument("--kinds", default="task,actor", help="task, actor, task+batch, actor+batch")
    parser.add_argument("--session", help=argparse.SUPPRESS)
    args = parser.parse_args()
    inflights = [int(n) for n in args.inflight.split(",")]
    if args.session:
        print(json.dumps(session(args.session, inflights, args.sleep, args.burn)))
        return
    print(f"{os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    every: dict[tuple[str, str], list[float]] = {}
    kinds = args.kinds.split(",")
    for rnd in range(args.rounds):
        for kind in (kinds if rnd % 2 == 0 else kinds[::-1]):
            started = time.monotonic()
            proc = subprocess.run([sys.executable, __file__, "--session", kind, "--inflight", args.inflight,
                                   "--sleep", str(args.sleep), "--burn", str(args.burn)],
                                  capture_output=True, text=True, check=True)
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            cells = []
            for key, values in got.items():
                every.setdefault((kind, key), []).extend(values)
                cells.append(f"{key} {1000 * statistics.median(values):.1f}")
            print(f"round {rnd + 1} {kind:11} {time.monotonic() - started:5.0f}s  load "
                  f"{os.getloadavg()[0]:.2f}  ms p50: {'  '.join(cells)}", flush=True)
    print(f"all rounds (ms, median/p95 of the calls; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
    print(f"{'in flight/burn s':>16} " + " ".join(f"{kind:>12}" for kind in kinds))
    for key in sorted({k for _, k in every}, key=lambda k: (float(k.split('/')[1]), int(k.split('/')[0]))):
        cells = []
        for kind in kinds:
            values = sorted(every.get((kind, key), []))
            p95 = values[min(len(values) - 1, max(0, round(0.95 * len(values)) - 1))]
            cells.append(f"{1000 * statistics.median(values):.1f}/{1000 * p95:.1f}")
        print(f"{key:>16} " + " ".join(f"{cell:>12}" for cell in cells))


if __name__ == "__main__":
    main()
