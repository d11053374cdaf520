"""The Space's latency as a person meets it: `supreme app` started, then one ECG asked twenty queries.

    .venv/bin/python benchmarks/bench_space.py                      # the shipped model, 5 repeats
    .venv/bin/python benchmarks/bench_space.py --model DIR_OR_REPO --repeats 10

Starts `supreme app` in a subprocess on a free port of 127.0.0.1 (offline) and times, through gradio_client (HTTP,
the page's own `classify` endpoint: reading the ECG, scoring, drawing the printed ECG and the attention map, the JSON
file, the images sent back; not the browser's rendering):

- `startup_s`: from the command to the page answering (imports, loading the model, encoding the preset lists);
- `first_answer_s`: the first request, one real ECG (the Space's first example) and twenty queries no preset holds
  (the first twenty of `training/prompts/ptbxl_sub_class_paraphrases.json`), so their encoding is included;
- `repeat_answer_s`: the median of `--repeats` further requests with the same list (its encoding kept);
- `preset_answer_s`: the median of `--repeats` requests with a preset list (PTB-XL rhythm, 12 queries, encoded at
  start-up).

Appends one row (`--no-record`: prints it only) to `benchmarks/results/bench_space.jsonl` with the machine and its load
(`common.append_rows`): other work on a shared machine slows every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

from common import REPO, append_rows

QUERIES_FILE = REPO / "training" / "prompts" / "ptbxl_sub_class_paraphrases.json"
PRESET_FILE = REPO / "training" / "prompts" / "ptbxl_rhythm.json"
EXAMPLE = "PTB-XL 9: normal ECG"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(model: str | None, port: int) -> subprocess.Popen:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "training.cli", "app", "--host", "127.0.0.1", "--port", str(port)]
    if model:
        command += ["--model", model]
    return subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_until_up(server: subprocess.Popen, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"supreme app exited: {server.stderr.read().decode()[-2000:]}") from None
            if time.monotonic() > deadline:
                raise SystemExit(f"supreme app did not answer within {timeout:.0f} s") from None
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a SuPreME folder or Hub repo id (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-record", action="store_true", help="print the row only, append nothing")
    args = parser.parse_args()
    from gradio_client import Client

    queries = "\n".join(list(json.loads(QUERIES_FILE.read_text()).values())[:20])
    preset = "\n".join(json.loads(PRESET_FILE.read_text()).values())
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    server = start_app(args.model, port)
    try:
        wait_until_up(server, url, timeout=900)
        startup = time.perf_counter() - start
        client = Client(url, verbose=False)

        def answer(text: str) -> float:
            began = time.perf_counter()
            client.predict(None, EXAMPLE, 500, "", text, api_name="/classify")
            return time.perf_counter() - began

        first = answer(queries)
        repeat = [answer(queries) for _ in range(args.repeats)]
        preset_times = [answer(preset) for _ in range(args.repeats)]
    finally:
        server.terminate()
        server.wait(timeout=30)
    append_rows("bench_space", [{
        "model": args.model or "checkpoints/supreme-ptbxl",
        "ecgs": 1,
        "queries": 20,
        "startup_s": round(startup, 2),
        "first_answer_s": round(first, 3),
        "repeat_answer_s": round(statistics.median(repeat), 3),
        "preset_answer_s": round(statistics.median(preset_times), 3),
        "repeats": args.repeats,
        "torch_threads": "default (the cores this process may use)",
    }], dry_run=args.no_record)


if __name__ == "__main__":
    main()
