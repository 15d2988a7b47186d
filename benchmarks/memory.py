"""Peak memory must not depend on the text: the daemon's engine speaks each case in a fresh process, and the
peak RSS (the kernel's VmHWM) of each is compared with one full synthesis unit's (250 characters: the longest
text one encoder call and the largest decoder windows see, two of them decoding at once).

    .venv/bin/python benchmarks/memory.py                 # all cases, a table
    .venv/bin/python benchmarks/memory.py --case super    # one case in this process, as JSON

For each case: `load` is the peak while loading and warming the voice; `synthesis` is the peak while speaking
the whole text (VmHWM is reset after loading by writing 5 to /proc/self/clear_refs, so loading does not hide
it); `vs unit` compares that with the one-unit case's. Every case should stay within 150 MB of it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.config import config_from_dict
from appliance.synthesis.loading import load_engine
from appliance.synthesis.request import SynthesisRequest

ALLOWED_GROWTH_MB = 150
WORDS = ("the quick brown fox jumps over the lazy dog near the river while a small bird sings in the old tree "
         "and children walk home from school talking about the weather and the long summer holidays ahead ")


def unpunctuated(chars: int) -> str:
    """Realistic words with no punctuation at all, cut to `chars` characters."""
    return (WORDS * (chars // len(WORDS) + 1))[:chars].strip()


CASES: dict[str, str] = {
    "sentence": "The quick brown fox jumps over the lazy dog near the river.",
    "unit-250": unpunctuated(250),
    "unpunctuated-1000": unpunctuated(1000),
    "unpunctuated-4000": unpunctuated(4000),
    "unpunctuated-10000": unpunctuated(10000),
    "super": "super" * 700,
    "numbers-500": ("1234567 " * 63)[:500].strip(),
}


def _status_mb(field: str) -> float:
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert match is not None
    return int(match.group(1)) / 1024


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


async def _speak(engine, text: str) -> float:
    prepared = engine.prepare(SynthesisRequest(text=text, seed=0))
    samples = 0
    async for chunk in engine.stream(prepared):
        samples += len(chunk.samples)
    return samples / prepared.facts.sample_rate


def run_case(name: str, state_folder: Path) -> dict:
    """Loads the engine and speaks one case in this process; returns its figures."""
    config = config_from_dict({"mdns": {"enabled": False}, "cache": {"enabled": False},
                              "service": {"state_folder": str(state_folder)}})
    engine = load_engine(config)
    try:
        load_peak = _status_mb("VmHWM")
        reset = _reset_peak()
        started = time.perf_counter()
        audio_s = asyncio.run(_speak(engine, CASES[name]))
        return {"case": name, "chars": len(CASES[name]), "load_peak_mb": round(load_peak),
                "synthesis_peak_mb": round(_status_mb("VmHWM")), "peak_reset_after_load": reset,
                "audio_s": round(audio_s, 1), "seconds": round(time.perf_counter() - started, 1)}
    finally:
        engine.close()


def run_in_subprocess(name: str, state_folder: Path) -> dict:
    """One case in a fresh interpreter, so no case inherits another's memory (onnxruntime keeps what it took)."""
    done = subprocess.run([sys.executable, __file__, "--case", name, "--state-folder", str(state_folder)],
                          capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        return {"case": name, "chars": len(CASES[name]), "error": f"exit {done.returncode}",
                "stderr": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    base = next(r["synthesis_peak_mb"] for r in results if r["case"] == "unit-250")
    lines = ["| case | chars | load peak | synthesis peak | vs one unit | audio | time |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['chars']:,} | {r['error']} | | | | |")
            continue
        growth = r["synthesis_peak_mb"] - base
        lines.append(f"| {r['case']} | {r['chars']:,} | {r['load_peak_mb']} MB | {r['synthesis_peak_mb']} MB | "
                     f"{growth:+} MB | {r['audio_s']} s | {r['seconds']} s |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), help="run one case in this process and print JSON")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--state-folder", type=Path,
                        default=Path(tempfile.gettempdir()) / "appliance-memory-bench",
                        help="where the split model is cached between cases")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.state_folder)))
        return 0
    names = ["unit-250", *(n for n in args.cases if n != "unit-250")]
    run_in_subprocess("sentence", args.state_folder)  # fills the split cache: splitting costs memory once
    results = []
    for name in names:
        results.append(run_in_subprocess(name, args.state_folder))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(f"$ {sys.executable} {' '.join(sys.argv)}   # {datetime.date.today()}, {os.cpu_count()} cores")
    print(table(results))
    base = results[0].get("synthesis_peak_mb", 0)
    worst = max((r.get("synthesis_peak_mb", 1e9) - base for r in results), default=0)
    print(f"\nlargest growth over one unit: {worst:+.0f} MB (allowed {ALLOWED_GROWTH_MB})")
    return 0 if worst <= ALLOWED_GROWTH_MB else 1


if __name__ == "__main__":
    sys.exit(main())
