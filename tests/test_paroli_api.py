"""A client written for Paroli, unchanged, against the real daemon on loopback: the JSON its web page and API
document send (`/api/v1/synthesise`, `/api/v1/speakers`, the `/api/v1/stream` WebSocket), and the replies read
the way they do (Ogg Opus decoded by opusdec, raw PCM counted in samples, `finished` and `failed` messages)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from appliance.daemon import add_routes, create_app
from appliance.synthesis.admission import Admission
from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.loading import load_engine
from appliance.transports.errors import json_errors
from appliance.tunnel.remote_listener import build_remote_app
from tests.audio_checks import decode_ogg_opus
from tests.conftest import make_config, start_app
from tests.voice_factory import (
    MULTI_SPEAKER_VOICE,
    SAMPLE_RATE,
    SINGLE_SPEAKER_VOICE,
    SPEAKERS,
    small_voices_folder,  # noqa: F401  (fixture)
)

JOE = "en_US-joe-medium"
SENTENCE = "How can I help you? Is there anything wrong?"
"""The request body example of Paroli's API document."""
QUIET = {"noise_scale": 0, "noise_w": 0}
"""No random draws: the same request gives the same samples, on any route."""
FINISHED = {"status": "ok", "message": "finished"}


@pytest.fixture(scope="module")
def voices_engine(small_voices_folder: Path, state_folder: Path) -> Iterator[SpeechEngine]:  # noqa: F811
    """joe and the small test voices; the default (the voice Paroli's routes speak) is the three-speaker one."""
    config = make_config(state_folder, **{"voices.folder": str(small_voices_folder),
                                          "voices.default": MULTI_SPEAKER_VOICE})
    engine = load_engine(config)
    yield engine
    engine.close()


@contextlib.asynccontextmanager
async def daemon(engine: SpeechEngine, state_folder: Path, **overrides: object) -> AsyncIterator[str]:
    listener, url = await start_app(create_app(make_config(state_folder, **overrides), engine=engine))
    try:
        yield url
    finally:
        await listener.stop()


@pytest.fixture
async def paroli(voices_engine: SpeechEngine, state_folder: Path) -> AsyncIterator[str]:
    """The daemon's base URL, as a Paroli client would be given it."""
    async with daemon(voices_engine, state_folder) as url:
        yield url


async def post(url: str, body: Any, **kwargs: Any) -> tuple[aiohttp.ClientResponse, bytes]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body, **kwargs) as response:
        return response, await response.read()


async def paroli_reply(ws: aiohttp.ClientWebSocketResponse) -> tuple[bytes, dict]:
    """Binary blobs up to the next text message: the audio, and the status message that ends it."""
    audio = bytearray()
    while True:
        message = await ws.receive(timeout=60)
        if message.type == aiohttp.WSMsgType.BINARY:
            audio += message.data
        elif message.type == aiohttp.WSMsgType.TEXT:
            return bytes(audio), json.loads(message.data)
        else:
            raise AssertionError(f"the socket ended: {message}")


def s16(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


# -- speakers -------------------------------------------------------------------------------------------------


async def test_speakers_is_the_voice_s_name_to_id_map(paroli: str, voices_engine: SpeechEngine) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{paroli}/api/v1/speakers") as response:
        assert response.status == 200 and response.content_type == "application/json"
        speakers = await response.json()
    assert speakers == dict(voices_engine.voices[MULTI_SPEAKER_VOICE].config.speaker_id_map)
    assert speakers == {name: number for number, name in enumerate(SPEAKERS)}


async def test_a_single_speaker_voice_lists_no_speakers_and_takes_the_web_page_s_null_id(
    paroli: str, voices_engine: SpeechEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(voices_engine, "default_voice", SINGLE_SPEAKER_VOICE)
    async with aiohttp.ClientSession() as session, session.get(f"{paroli}/api/v1/speakers") as response:
        assert await response.json() == {}
    # Paroli's page sends parseInt() of an empty speaker list: NaN, which JSON.stringify writes as null.
    response, pcm = await post(f"{paroli}/api/v1/synthesise", {"text": "Hi there.", "speaker_id": None,
                                                              "audio_format": "pcm"})
    assert response.status == 200 and len(pcm) > SAMPLE_RATE // 4


# -- POST /api/v1/synthesise ----------------------------------------------------------------------------------


async def test_the_readme_s_curl_gets_ogg_opus_of_the_whole_text(paroli: str, voices_engine: SpeechEngine,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voices_engine, "default_voice", JOE)
    response, audio = await post(f"{paroli}/api/v1/synthesise", {"text": "To be or not to be, that is the question"})
    assert response.status == 200
    assert response.headers["Content-Type"] == "audio/ogg; codecs=opus"
    samples, rate = decode_ogg_opus(audio)
    assert rate == 48_000 and 1.2 < len(samples) / rate < 5.0
    assert np.sqrt(np.mean(samples**2)) > 0.01  # speech, not silence


async def test_pcm_is_raw_s16le_at_the_voice_rate_the_same_samples_as_our_own_route(paroli: str) -> None:
    response, pcm = await post(f"{paroli}/api/v1/synthesise",
                               {"text": SENTENCE, "speaker_id": 1, "audio_format": "pcm", **QUIET})
    assert response.status == 200
    assert response.headers["Content-Type"] == "audio/raw"
    assert response.headers["X-Sample-Rate"] == str(SAMPLE_RATE)
    ours_response, ours = await post(f"{paroli}/api/tts", {"text": SENTENCE, "speaker": 1, "format": "pcm", **QUIET})
    assert ours_response.status == 200
    assert len(pcm) % 2 == 0 and pcm == ours
    # The Opus answer to the same request lasts as long, once decoded.
    response, opus = await post(f"{paroli}/api/v1/synthesise",
                                {"text": SENTENCE, "speaker_id": 1, "audio_format": "opus", **QUIET})
    decoded, rate = decode_ogg_opus(opus)
    assert abs(len(decoded) / rate - len(pcm) / 2 / SAMPLE_RATE) < 0.025


async def test_a_speaker_by_name_is_the_speaker_with_that_id_and_wins_over_speaker_id(paroli: str) -> None:
    url = f"{paroli}/api/v1/synthesise"
    by_id = (await post(url, {"text": SENTENCE, "speaker_id": 1, "audio_format": "pcm", **QUIET}))[1]
    by_name = (await post(url, {"text": SENTENCE, "speaker": "bob", "audio_format": "pcm", **QUIET}))[1]
    both = (await post(url, {"text": SENTENCE, "speaker": "bob", "speaker_id": 2, "audio_format": "pcm", **QUIET}))[1]
    carol = (await post(url, {"text": SENTENCE, "speaker_id": 2, "audio_format": "pcm", **QUIET}))[1]
    assert by_name == by_id == both
    assert carol != by_id


async def test_synthesise_streams_the_audio_while_it_is_made(paroli: str, voices_engine: SpeechEngine,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voices_engine, "default_voice", JOE)
    text = " ".join(["This sentence is here so that the audio goes on for a while."] * 4)
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(f"{paroli}/api/v1/synthesise", json={"text": text, "audio_format": "pcm"}) as response:
            assert response.status == 200 and "Content-Length" not in response.headers
            first = await response.content.readany()
            first_at = time.monotonic() - started
            rest = await response.read()
            total = time.monotonic() - started
    assert first and len(first) + len(rest) > 4 * 22050 * 2  # over four seconds of 22,050 Hz samples
    assert first_at < total / 2


async def test_keys_paroli_ignores_are_ignored_and_logged(paroli: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.transports.paroli_api")
    # `audio_formt` is the spelling in Paroli's own API document; Paroli ignores it and answers Opus.
    response, audio = await post(f"{paroli}/api/v1/synthesise", {"text": "Hello.", "audio_formt": "pcm"})
    assert response.status == 200 and audio[:4] == b"OggS"
    assert any("'audio_formt'" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(("body", "code", "says"), [
    ({"hello": "blablabla"}, "invalid_text", "Missing 'text' field"),
    ({"text": ["a list"]}, "invalid_text", "'text' must be a string"),
    ({"text": "   "}, "empty_text", "empty"),
    ({"text": "x" * 10_001}, "text_too_long", "10000"),
    ({"text": "Hi.", "speaker": "dave"}, "unknown_speaker", "Unknown speaker name 'dave'"),
    ({"text": "Hi.", "speaker": 1}, "invalid_option", "speaker must be a speaker's name"),
    ({"text": "Hi.", "speaker_id": 3}, "unknown_speaker", "out of range"),
    ({"text": "Hi.", "speaker_id": -1}, "unknown_speaker", "out of range"),
    ({"text": "Hi.", "speaker_id": "1"}, "invalid_option", "speaker_id must be a whole number"),
    ({"text": "Hi.", "audio_format": "mp3"}, "invalid_option", 'audio_format must be "opus" or "pcm"'),
    ({"text": "Hi.", "audio_format": "wav"}, "invalid_option", 'audio_format must be "opus" or "pcm"'),
    ({"text": "Hi.", "length_scale": "slow"}, "invalid_option", "length_scale must be a number"),
    ({"text": "Hi.", "noise_w": 7}, "out_of_range", "noise_w must be between"),
    (["text", "Hi."], "malformed_json", "JSON object"),
])
async def test_a_bad_request_gets_paroli_s_400_with_the_reason_as_text(paroli: str, body: Any, code: str,
                                                                       says: str) -> None:
    response, reason = await post(f"{paroli}/api/v1/synthesise", body)
    assert response.status == 400 and response.content_type == "text/plain"
    assert says in reason.decode() and response.headers["X-Error-Code"] == code


async def test_a_body_that_is_not_json_gets_a_400_too(paroli: str) -> None:
    async with aiohttp.ClientSession() as session:
        for data, content_type, says in ((b'{"text": "unfinished', "application/json", "not valid JSON"),
                                         (b"text=hello", "application/x-www-form-urlencoded", "application/json")):
            async with session.post(f"{paroli}/api/v1/synthesise", data=data,
                                    headers={"Content-Type": content_type}) as response:
                assert response.status == 400 and response.content_type == "text/plain"
                assert says in await response.text()


# -- busy -----------------------------------------------------------------------------------------------------


async def test_with_every_stream_busy_a_post_gets_503_and_a_socket_a_failed_message_then_carries_on(
    paroli: str, voices_engine: SpeechEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    admission = Admission(max_streams=1, queue_s=0.3)
    monkeypatch.setattr(voices_engine, "admission", admission)
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{paroli}/api/v1/stream") as ws:
        async with admission.slot():  # another client holds the only stream
            async with session.post(f"{paroli}/api/v1/synthesise", json={"text": "Me too."}) as response:
                assert response.status == 503 and response.content_type == "text/plain"
                assert response.headers["Retry-After"] == "1" and response.headers["X-Error-Code"] == "busy"
                assert "busy" in await response.text()
            await ws.send_str(json.dumps({"text": "Me too.", "audio_format": "pcm"}))
            audio, reply = await paroli_reply(ws)
            assert audio == b"" and reply["status"] == "failed" and "busy" in reply["message"]
            assert reply["retry_after"] == 1
        await ws.send_str(json.dumps({"text": "Now there is room.", "audio_format": "pcm"}))
        audio, reply = await paroli_reply(ws)
    assert reply == FINISHED and len(audio) > SAMPLE_RATE // 2
    assert admission.counters.rejected == 2


# -- WebSocket /api/v1/stream ---------------------------------------------------------------------------------


async def test_the_web_page_s_flow_pcm_blobs_then_finished(paroli: str) -> None:
    """What Paroli's index.js sends and reads: {text, speaker_id, audio_format: 'pcm'}, binary blobs fed to a PCM
    player, then a text message whose status is "ok"."""
    request = {"text": SENTENCE, "speaker_id": 2, "audio_format": "pcm", **QUIET}
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{paroli}/api/v1/stream") as ws:
        await ws.send_str(json.dumps(request))
        audio, reply = await paroli_reply(ws)
    assert reply == FINISHED
    whole = (await post(f"{paroli}/api/v1/synthesise", request))[1]
    assert audio == whole


async def test_the_documented_example_streams_opus_blobs_that_make_one_ogg_opus_file(paroli: str) -> None:
    blobs = []
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{paroli}/api/v1/stream") as ws:
        await ws.send_str(json.dumps({"text": "Hello! how can I help you"}))
        while (message := await ws.receive(timeout=60)).type == aiohttp.WSMsgType.BINARY:
            blobs.append(message.data)
        assert json.loads(message.data) == FINISHED
    assert len(blobs) >= 2 and blobs[0][:4] == b"OggS"
    samples, rate = decode_ogg_opus(b"".join(blobs))
    assert len(samples) / rate > 0.5


async def test_errors_are_failed_messages_and_the_next_request_on_the_socket_plays(paroli: str) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{paroli}/api/v1/stream") as ws:
        await ws.send_str(json.dumps({"hello": "blablabla"}))  # the example of Paroli's API document
        assert await paroli_reply(ws) == (b"", {"status": "failed", "message": "Missing 'text' field"})
        for bad, says in (("not json at all", "not valid JSON"),
                          (json.dumps({"text": "Hi.", "speaker": "dave"}), "Unknown speaker name"),
                          (json.dumps({"text": "Hi.", "audio_format": "flac"}), "audio_format"),
                          (json.dumps({"text": "x" * 10_001}), "10000"),
                          (json.dumps({"text": "x" * 70_000}), "limited to 65536 bytes")):
            await ws.send_str(bad)
            audio, reply = await paroli_reply(ws)
            assert audio == b"" and reply["status"] == "failed" and says in reply["message"]
        await ws.send_bytes(b"\x00\x01")  # Paroli ignores binary messages; we say why nothing will play
        audio, reply = await paroli_reply(ws)
        assert audio == b"" and reply["status"] == "failed"
        await ws.send_str(json.dumps({"text": "Still here.", "audio_format": "pcm"}))
        audio, reply = await paroli_reply(ws)
    assert reply == FINISHED and len(audio) > SAMPLE_RATE // 2


async def test_requests_on_one_socket_play_in_order_each_ended_by_finished(paroli: str) -> None:
    requests = [{"text": SENTENCE, "speaker": name, "audio_format": "pcm", **QUIET} for name in ("carol", "alice")]
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{paroli}/api/v1/stream") as ws:
        for request in requests:
            await ws.send_str(json.dumps(request))
        replies = [await paroli_reply(ws) for _ in requests]
    for request, (audio, reply) in zip(requests, replies, strict=True):
        assert reply == FINISHED
        assert audio == (await post(f"{paroli}/api/v1/synthesise", request))[1]


async def test_an_idle_socket_is_closed_as_our_own_is(voices_engine: SpeechEngine, state_folder: Path) -> None:
    async with daemon(voices_engine, state_folder, **{"server.ws_idle_timeout_s": 0.5}) as url, \
            aiohttp.ClientSession() as session, session.ws_connect(f"{url}/api/v1/stream") as ws:
        started = time.monotonic()
        message = await ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.CLOSE and time.monotonic() - started < 5


# -- the tunnel's listener ------------------------------------------------------------------------------------


async def test_the_tunnel_listener_serves_the_paroli_routes_only_with_the_bearer_token(
    voices_engine: SpeechEngine, state_folder: Path
) -> None:
    token = "paroli-test-token-0123456789"
    lan = create_app(make_config(state_folder), engine=voices_engine)
    listener, url = await start_app(build_remote_app(lan, add_routes, token, [json_errors]))
    bearer = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/api/v1/speakers") as response:
                assert response.status == 401
            async with session.post(f"{url}/api/v1/synthesise", json={"text": "Hi."}) as response:
                assert response.status == 401
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{url}/api/v1/stream")
            assert refused.value.status == 401
            async with session.get(f"{url}/api/v1/speakers", headers=bearer) as response:
                assert response.status == 200 and "bob" in await response.json()
            async with session.post(f"{url}/api/v1/synthesise", json={"text": "Hi.", "audio_format": "pcm"},
                                    headers=bearer) as response:
                assert response.status == 200 and len(await response.read()) > SAMPLE_RATE // 4
            async with session.ws_connect(f"{url}/api/v1/stream", headers=bearer) as ws:
                await ws.send_str(json.dumps({"text": "Over the tunnel."}))
                audio, reply = await asyncio.wait_for(paroli_reply(ws), 60)
            assert reply == FINISHED and audio[:4] == b"OggS"
    finally:
        await listener.stop()
