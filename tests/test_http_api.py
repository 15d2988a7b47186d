"""A client of the HTTP API on a real daemon on loopback: streamed audio in three formats, voices, health,
and a clear JSON error for every kind of bad request, after which the daemon carries on."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import numpy as np
import pytest

from appliance.synthesis.engine import SpeechEngine
from tests.audio_checks import best_correlation, decode_ogg_opus, resample

TEXT = "Hello there. This appliance speaks while it is still thinking."
SEED = 1234
OPUS_FRAME_S = 0.020


async def post_tts(url: str, **body: object) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.post(f"{url}/api/tts", json=body) as response:
        return response.status, dict(response.headers), await response.read()


async def pcm_of(url: str, text: str = TEXT) -> np.ndarray:
    status, _headers, data = await post_tts(url, text=text, format="pcm", seed=SEED)
    assert status == 200
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


async def test_opus_stream_decodes_to_the_pcm_we_made(server: str) -> None:
    status, headers, data = await post_tts(server, text=TEXT, format="opus", seed=SEED)
    assert status == 200
    assert headers["Content-Type"] == "audio/ogg; codecs=opus"
    assert headers["Transfer-Encoding"] == "chunked"
    decoded, rate = decode_ogg_opus(data)
    pcm = await pcm_of(server)
    assert abs(len(decoded) / rate - len(pcm) / 22050) <= OPUS_FRAME_S
    reference = resample(pcm, 22050, rate)
    assert best_correlation(reference, decoded, max_lag=480) > 0.9


async def test_wav_and_pcm_carry_the_same_samples(server: str) -> None:
    status, headers, wav = await post_tts(server, text=TEXT, format="wav", seed=SEED)
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt "
    status, headers, pcm = await post_tts(server, text=TEXT, format="pcm", seed=SEED)
    assert headers["Content-Type"] == "audio/L16; rate=22050; channels=1"
    assert wav[44:] == pcm
    assert len(pcm) / 2 / 22050 > 2.0  # two sentences of speech


async def test_the_first_audio_arrives_long_before_the_last(server: str) -> None:
    text = " ".join(["This is one of many sentences in a long text that keeps going."] * 8)
    async with aiohttp.ClientSession() as session:
        started = asyncio.get_running_loop().time()
        async with session.post(f"{server}/api/tts", json={"text": text, "format": "pcm"}) as response:
            first = await response.content.readany()
            first_at = asyncio.get_running_loop().time() - started
            rest = await response.read()
            total = asyncio.get_running_loop().time() - started
    assert first and rest
    assert first_at < total / 4, f"first audio after {first_at:.2f} s of {total:.2f} s"


async def test_get_with_query_string_streams_for_audio_elements(server: str) -> None:
    params = {"text": "Hi.", "format": "opus", "length_scale": "1.2"}
    async with aiohttp.ClientSession() as session, session.get(f"{server}/api/tts", params=params) as r:
        assert r.status == 200
        assert (await r.read())[:4] == b"OggS"


async def test_voices_and_health_describe_the_appliance(server: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server}/api/voices") as r:
            voices = await r.json()
        async with session.get(f"{server}/healthz") as r:
            health = await r.json()
    (joe,) = [v for v in voices["voices"] if v["name"] == "en_US-joe-medium"]
    assert voices["default"] == "en_US-joe-medium"
    assert joe["sample_rate"] == 22050 and joe["language"] == "en_US" and joe["num_speakers"] == 1
    assert health["status"] == "ok"
    assert health["voices"]["en_US-joe-medium"]["backend"] == "cpu"
    assert health["voices"]["en_US-joe-medium"]["reason"]
    assert health["version"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": ""}, 400, "empty_text"),
        ({"text": "   \n "}, 400, "empty_text"),
        ({"text": "x" * 10_001}, 413, "text_too_long"),
        ({"text": "Hi.", "voice": "nobody"}, 404, "unknown_voice"),
        ({"text": "Hi.", "speaker": "bob"}, 404, "unknown_speaker"),
        ({"text": "Hi.", "length_scale": 0}, 400, "out_of_range"),
        ({"text": "Hi.", "noise_scale": 9}, 400, "out_of_range"),
        ({"text": "Hi.", "noise_w": "loud"}, 400, "invalid_option"),
        ({"text": "Hi.", "format": "m4a"}, 400, "invalid_option"),
        ({"text": 42}, 400, "invalid_text"),
        ({}, 400, "invalid_text"),
    ],
)
async def test_bad_requests_get_a_json_error(server: str, body: dict, status: int, code: str) -> None:
    got_status, _headers, data = await post_tts(server, **body)
    assert got_status == status
    error = json.loads(data)["error"]
    assert error["code"] == code and error["message"]


async def test_malformed_json_wrong_type_and_wrong_method_are_refused_in_json(server: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server}/api/tts", data="{not json",
                                headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "malformed_json"
        async with session.post(f"{server}/api/tts", data="[1, 2]",
                                headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "malformed_json"
        async with session.post(f"{server}/api/tts", data="text=hello") as r:
            assert r.status == 415 and (await r.json())["error"]["code"] == "unsupported_media_type"
        async with session.delete(f"{server}/api/tts") as r:
            assert r.status == 405 and "error" in await r.json()
        async with session.post(f"{server}/api/tts", data=b"x" * 300_000,
                                headers={"Content-Type": "application/json"}) as r:
            assert r.status == 413 and "error" in await r.json()
    assert len(await pcm_of(server, "Still here.")) > 0


async def test_a_client_that_goes_away_stops_its_synthesis(server: str, engine: SpeechEngine) -> None:
    text = " ".join(["A very long story that nobody will hear to the end."] * 40)
    cancelled_before = engine.counters.cancelled
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{server}/api/tts", json={"text": text, "format": "pcm"})
        assert await response.content.readany()
        response.close()  # drop the connection mid-stream
    for _ in range(100):
        if engine.counters.active_streams == 0:
            break
        await asyncio.sleep(0.05)
    assert engine.counters.active_streams == 0
    assert engine.counters.cancelled == cancelled_before + 1
    windows = engine.counters.windows
    await asyncio.sleep(0.5)
    assert engine.counters.windows == windows, "no window is decoded for a request whose client is gone"


async def test_concurrent_clients_each_get_complete_audio(server: str) -> None:
    alone = await pcm_of(server)
    together = await asyncio.gather(*(pcm_of(server) for _ in range(3)))
    for audio in together:
        assert np.array_equal(audio, alone)
