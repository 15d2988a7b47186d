"""Nothing a client sends takes the appliance down: a huge word, a long text without punctuation, invalid
Unicode or control characters are spoken (or refused) with bounded memory, and the daemon carries on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.request import SynthesisRequest
from appliance.text.sentences import text_units
from tests.test_http_api import pcm_of, post_tts
from tests.test_websocket import next_json

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the quick brown fox jumps over the lazy dog near the river while a small bird sings "


def unpunctuated(chars: int) -> str:
    return (WORDS * (chars // len(WORDS) + 1))[:chars].strip()


async def first_audio_after(server: str, text: str) -> float:
    """Seconds from the request to its first audio bytes; the connection is then dropped."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        started = loop.time()
        async with session.post(f"{server}/api/tts", json={"text": text, "format": "pcm"}) as response:
            assert response.status == 200
            assert await response.content.readany()
            return loop.time() - started


async def test_a_single_huge_word_is_spoken_and_the_daemon_still_answers(server: str) -> None:
    status, _headers, audio = await post_tts(server, text="super" * 700, format="pcm", seed=1)
    assert status == 200 and len(audio) > 22050 * 2
    assert len(await pcm_of(server, "Still here.")) > 0


async def test_a_long_unpunctuated_text_starts_speaking_about_as_fast_as_a_sentence(server: str) -> None:
    sentence = await first_audio_after(server, "The quick brown fox jumps over the lazy dog near the river.")
    long_text = await first_audio_after(server, unpunctuated(4000))
    assert long_text < max(4 * sentence, 3.0), f"first audio after {long_text:.2f} s (a sentence: {sentence:.2f} s)"


async def test_a_lone_surrogate_is_refused_before_any_audio(server: str) -> None:
    body = '{"text": "Hi \\ud800 there.", "format": "pcm"}'  # valid JSON, invalid Unicode
    async with aiohttp.ClientSession() as session, session.post(
        f"{server}/api/tts", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["code"] == "invalid_text" and "U+D800" in error["message"] and "character 3" in error["message"]
    assert len(await pcm_of(server, "Still here.")) > 0


async def test_control_characters_are_spoken_as_spaces(server: str) -> None:
    with_controls = await pcm_of(server, "Hello\x00there\x07my\x1bfriend\x85again.")
    with_spaces = await pcm_of(server, "Hello there my friend again.")
    assert np.array_equal(with_controls, with_spaces)


async def test_units_of_a_long_unpunctuated_text_join_without_a_jump(engine: SpeechEngine) -> None:
    """Each unit starts and ends near zero: no click at a seam. (A unit that begins with /s/ starts on the
    fricative at once, as Piper's own sentences do, so the start is checked over 2 ms, not for silence.)"""
    text = unpunctuated(700)
    prepared = engine.prepare(SynthesisRequest(text=text, seed=5))
    voice = prepared.voice
    synthesis = voice.start_request(prepared.params, prepared.seed)
    units = [synthesis.sentence_audio(ids) for unit in text_units(text) for ids in engine.sentence_ids(voice, unit)]
    streamed = np.concatenate([chunk.samples async for chunk in engine.stream(prepared)])
    assert np.array_equal(streamed, np.concatenate(units)), "the stream is its units, in order"
    assert len(units) >= 3
    rate = prepared.facts.sample_rate
    for index, unit_audio in enumerate(units):
        audio = np.abs(unit_audio)
        peak = audio.max()
        start, end = audio[: rate // 500].max(), audio[-rate // 50 :].max()  # first 2 ms, last 20 ms
        assert start < 0.05 * peak and end < 0.01 * peak, f"unit {index}: {start:.4f} / {end:.4f} of {peak:.4f}"


async def test_streamed_words_without_punctuation_are_spoken_before_any_flush(server: str) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server}/ws/tts") as ws:
        for _ in range(1000):
            await ws.send_json({"type": "text", "text": "la ", "format": "pcm"})
        start = await next_json(ws)
        assert start["type"] == "start"
        audio = await asyncio.wait_for(ws.receive(), 30)
        assert audio.type == aiohttp.WSMsgType.BINARY and audio.data
        await ws.send_json({"type": "cancel"})
        while (await next_json(ws))["type"] != "cancelled":
            pass


async def test_a_streamed_lone_surrogate_is_refused_and_the_connection_carries_on(server: str) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server}/ws/tts") as ws:
        await ws.send_str('{"type": "text", "text": "Hi \\udfff"}')
        error = await next_json(ws)
        assert error["type"] == "error" and error["code"] == "invalid_text" and "character 3" in error["message"]
        await ws.send_json({"type": "text", "text": "Still\x00listening. "})
        await ws.send_json({"type": "flush"})
        assert (await next_json(ws))["type"] == "start"


@pytest.mark.slow
def test_a_long_unpunctuated_text_peaks_within_150_mb_of_one_unit(engine: SpeechEngine, state_folder: Path) -> None:
    """Memory does not grow with the text beyond one synthesis unit (250 characters: the largest encoder call
    and decoder windows). Each case in a fresh process (onnxruntime keeps what it took); `engine` has filled
    the split cache."""

    def peak_mb(case: str) -> int:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory.py"), "--case", case,
                               "--state-folder", str(state_folder)], capture_output=True, text=True, env=env,
                              check=True, timeout=600)
        return json.loads(done.stdout.strip().splitlines()[-1])["synthesis_peak_mb"]

    unit, long_text = peak_mb("unit-250"), peak_mb("unpunctuated-4000")
    assert long_text - unit <= 150, f"4,000 unpunctuated characters: {long_text} MB, one unit: {unit} MB"
