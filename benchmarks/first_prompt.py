"""Count agentloop's first-prompt tokens on the suite exactly, without running the model.

On a CPU server the first prompt is what a run waits for (read at ~20-25 tokens a second), so its size
decides whether a run can finish at all. This runs `agentloop fix` on each task against a scripted
server on 127.0.0.1 (tests/fake_llm.py, one turn), takes the first request, renders it with the
model's own chat template from the GGUF and counts the tokens with its tokenizer (llama-cpp-python
from the rig's virtualenv, vocabulary only: no weights are loaded).

    python benchmarks/first_prompt.py --llama-python /work/cache/local-model/venv/bin/python \
        --gguf /work/cache/local-model/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf [--edit-format F] [--tasks ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from fake_llm import FakeLLM  # noqa: E402
from run_suite import fix_command, load_tasks, prepare_repo  # noqa: E402

COUNT = """
import json, sys
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
llm = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
template = llm.metadata["tokenizer.chat_template"]
eos = llm._model.token_get_text(llm.token_eos())
bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
for line in sys.stdin:
    req = json.loads(line)
    prompt = fmt(messages=req["messages"], tools=req.get("tools")).prompt
    print(len(llm.tokenize(prompt.encode(), add_bos=False, special=True)), flush=True)
"""


def first_request(task, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"fp-{task.name}-") as tmp, \
            FakeLLM([{"content": "I cannot tell."}], models=[args.model.split("/", 1)[1]]) as server:
        repo = prepare_repo(task, Path(tmp) / "repo")
        cmd = fix_command(task, args, server.api_base, "--max-turns", "1")
        proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300,
                              env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"})
        if not server.requests:
            raise SystemExit(f"{task.name}: agentloop sent no request:\n{(proc.stdout + proc.stderr)[-2000:]}")
        return server.requests[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-python", required=True, help="python of the rig's virtualenv (has llama_cpp)")
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--model", default="openai/qwen2.5-coder-1.5b")
    ap.add_argument("--edit-format")
    ap.add_argument("--tasks", nargs="*")
    ap.add_argument("--real", action="store_true", help="only the tasks cut from PyPI packages")
    ap.add_argument("--agentloop", default=f"{shlex.quote(sys.executable)} -m agentloop")
    ap.add_argument("--out", type=Path, help="JSON of {task: tokens}")
    args = ap.parse_args(argv)
    tasks = [t for t in load_tasks(args.tasks) if t.source or not args.real]
    requests = [first_request(t, args) for t in tasks]
    counter = subprocess.run([args.llama_python, "-c", COUNT, args.gguf], input="".join(
        json.dumps(r) + "\n" for r in requests), capture_output=True, text=True, check=True)
    counts = [int(n) for n in counter.stdout.split()]
    from agentloop.run import budget, rules
    cap = rules.first_prompt_tokens(args.model)
    result = {}
    for task, n, req in zip(tasks, counts, requests, strict=True):
        lines = len((task.repo / task.files[0]).read_text(encoding="utf-8").splitlines())
        chars = sum(len(m.get("content") or "") for m in req["messages"])
        estimate = sum(budget.estimate_tokens(m.get("content") or "") for m in req["messages"])
        result[task.name] = {"first_prompt_tokens": n, "estimate": estimate, "cap": cap, "file_lines": lines,
                             "characters": chars}
        print(f"{task.name:26} {lines:5} lines  first prompt {n:6} tokens, estimated {estimate:6} (cap {cap}; "
              f"{chars / n:.2f} characters a token)", flush=True)
    big = [n for t, n in zip(tasks, counts, strict=True) if result[t.name]["file_lines"] > 500]
    print(f"median {statistics.median(counts):.0f} tokens over {len(counts)} tasks"
          + (f"; over files > 500 lines: {statistics.median(big):.0f}" if big else ""))
    if args.out:
        args.out.write_text(json.dumps({"edit_format": args.edit_format, "tasks": result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
