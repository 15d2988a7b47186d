"""`appliance say`: the daemon's engine and output pipeline writing a file, through the real command line."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

from appliance.audio.pcm import to_s16le
from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.request import SynthesisRequest
from tests.audio_checks import decode_ogg_opus

TEXT = "The appliance writes this sentence to a file. And this one too."
REPO = Path(__file__).resolve().parents[1]


def say(state_folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "--state", str(state_folder), "say", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


async def test_say_writes_the_engines_audio_as_a_complete_wav_and_as_ogg_opus(
    engine: SpeechEngine, state_folder: Path, tmp_path: Path
) -> None:
    prepared = engine.prepare(SynthesisRequest(text=TEXT, seed=3))
    expected = np.concatenate([chunk.samples async for chunk in engine.stream(prepared)])

    wav_path, ogg_path = tmp_path / "out.wav", tmp_path / "out.ogg"
    for path in (wav_path, ogg_path):
        done = say(state_folder, TEXT, "-o", str(path), "--seed", "3")
        assert done.returncode == 0, done.stderr
        assert f"wrote {path}" in done.stdout

    with wave.open(str(wav_path)) as wav:  # real sizes in the header: `wave` trusts them
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (22050, 1, 2)
        assert wav.getnframes() == expected.size
        assert wav.readframes(wav.getnframes()) == to_s16le(expected)
    assert wav_path.stat().st_size == 44 + 2 * expected.size

    decoded, rate = decode_ogg_opus(ogg_path.read_bytes())
    assert abs(decoded.size / rate - expected.size / 22050) < 0.01


def test_say_refuses_an_unknown_file_type_and_an_unknown_voice(state_folder: Path, tmp_path: Path) -> None:
    done = say(state_folder, TEXT, "-o", str(tmp_path / "out.mp4"))
    assert done.returncode == 2 and "unknown output type '.mp4'" in done.stderr
    done = say(state_folder, TEXT, "-o", str(tmp_path / "out.wav"), "--voice", "nobody")
    assert done.returncode == 2 and "unknown voice 'nobody'" in done.stderr
    assert not (tmp_path / "out.mp4").exists()
