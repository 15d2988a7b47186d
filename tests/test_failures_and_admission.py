"""What a client sees when things go wrong on the appliance's side: synthesis failing after the audio has
started (HTTP: a cut stream, never a second response; WebSocket: an error for that utterance, then the next
one plays), and more requests than streams (503 busy with Retry-After; WebSocket: busy and queue_full)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import pytest

from appliance.synthesis.admission import Admission
from appliance.synthesis.engine import SpeechEngine
from appliance.text.phonemes import Phonemizer
from tests.test_websocket import next_json, receive_utterance

FAILS = "Explode"


class FailingPhonemizer(Phonemizer):
    """The real phonemizer, except that a text containing FAILS raises (standing in for any fault in the
    native code: the transports must cope with whatever the engine raises, wherever in the stream)."""

    def sentences(self, text: str, espeak_voice: str) -> list[list[str]]:
        if FAILS in text:
            raise RuntimeError("simulated failure inside synthesis")
        return super().sentences(text, espeak_voice)


@pytest.fixture
def failing_engine(engine: SpeechEngine, monkeypatch: pytest.MonkeyPatch) -> SpeechEngine:
    monkeypatch.setattr(engine, "phonemizer", FailingPhonemizer())
    return engine


@pytest.fixture
def one_stream(engine: SpeechEngine, monkeypatch: pytest.MonkeyPatch) -> Admission:
    """The engine admits one stream at a time and lets a request wait 0.3 s for it."""
    admission = Admission(max_streams=1, queue_s=0.3)
    monkeypatch.setattr(engine, "admission", admission)
    return admission


LONG = " ".join(["This sentence keeps the only stream busy for a good while."] * 6)


async def test_a_failure_after_the_headers_cuts_the_stream_and_the_daemon_carries_on(
    server: str, failing_engine: SpeechEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as session:
        body = {"text": f"The first sentence is spoken. Then it all goes wrong: {FAILS}.", "format": "pcm"}
        async with session.post(f"{server}/api/tts", json=body) as response:
            assert response.status == 200
            request_id = response.headers["X-Request-Id"]
            received = b""
            with pytest.raises(aiohttp.ClientPayloadError):
                while chunk := await response.content.readany():
                    received += chunk
        assert len(received) > 22050  # the first sentence arrived before the cut
        assert b"HTTP/1.1" not in received  # never a second response inside the body
        async with session.post(f"{server}/api/tts", json={"text": "Still here.", "format": "pcm"}) as response:
            assert response.status == 200 and len(await response.read()) > 10_000
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and request_id in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_failed_utterance_is_reported_and_the_next_one_plays(server: str,
                                                                    failing_engine: SpeechEngine) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server}/ws/tts") as ws:
        await ws.send_json({"type": "speak", "id": "bad", "text": f"{FAILS} right away.", "format": "pcm"})
        await ws.send_json({"type": "speak", "id": "good", "text": "This one plays.", "format": "pcm"})
        events = []
        while not events or events[-1].get("type") != "error":
            events.append(await next_json(ws))
        assert events[-1]["id"] == "bad" and events[-1]["code"] == "synthesis_failed"
        start, audio, end = await receive_utterance(ws)
        assert start["id"] == "good" and end["id"] == "good" and len(audio) > 10_000
        await ws.send_json({"type": "cancel"})
        assert (await next_json(ws))["type"] == "cancelled"
    assert ws.close_code == 1000  # closed normally, not by an HTTP 500 written into the socket


async def test_with_every_stream_busy_a_request_gets_503_busy_within_the_wait(server: str,
                                                                              one_stream: Admission) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server}/api/tts", json={"text": LONG, "format": "pcm"}) as first:
            assert first.status == 200
            await first.content.readany()
            started = time.monotonic()
            async with session.post(f"{server}/api/tts", json={"text": "Me too.", "format": "pcm"}) as second:
                waited = time.monotonic() - started
                assert second.status == 503
                assert second.headers["Retry-After"] == "1"
                error = (await second.json())["error"]
            assert error["code"] == "busy" and error["retry_after"] == 1
            assert 0.3 <= waited <= 0.3 + 0.1 + 0.2  # the wait, plus loopback and a loaded machine
            assert len(await first.read()) > 100_000  # the admitted stream was not disturbed
        assert one_stream.counters.rejected == 1
        async with session.post(f"{server}/api/tts", json={"text": "Now there is room.", "format": "pcm"}) as third:
            assert third.status == 200


async def test_a_request_that_waits_gets_the_stream_another_frees(server: str, engine: SpeechEngine,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "admission", Admission(max_streams=1, queue_s=30))
    async with aiohttp.ClientSession() as session:
        bodies = [{"text": "First in line.", "format": "pcm"}, {"text": "Second in line.", "format": "pcm"}]

        async def fetch(body: dict) -> int:
            async with session.post(f"{server}/api/tts", json=body) as response:
                await response.read()
                return response.status

        assert await asyncio.gather(*(fetch(b) for b in bodies)) == [200, 200]


async def test_websocket_utterances_get_busy_and_queue_full(server: str, one_stream: Admission,
                                                           engine: SpeechEngine) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server}/ws/tts") as hog, \
            session.ws_connect(f"{server}/ws/tts") as ws:
        await hog.send_json({"type": "speak", "text": LONG, "format": "pcm"})
        assert (await next_json(hog))["type"] == "start"
        await ws.send_json({"type": "speak", "id": "waits", "text": "Short.", "format": "pcm"})
        busy = await next_json(ws)
        assert busy["type"] == "error" and busy["code"] == "busy" and busy["id"] == "waits"
        assert busy["retry_after"] == 1
        await hog.send_json({"type": "cancel"})
        # Fill one connection's queue: one plays, eight wait, the next is refused.
        one_stream.queue_s = 30
        await ws.send_json({"type": "speak", "id": "q0", "text": LONG, "format": "pcm"})
        while (await next_json(ws))["type"] != "start":
            pass
        for n in range(1, 10):
            await ws.send_json({"type": "speak", "id": f"q{n}", "text": LONG, "format": "pcm"})
        refusal = None
        while refusal is None:
            message = await asyncio.wait_for(ws.receive(), 30)
            if message.type == aiohttp.WSMsgType.TEXT and json.loads(message.data)["type"] == "error":
                refusal = json.loads(message.data)
        assert refusal["code"] == "queue_full" and refusal["id"] == "q9"
        await ws.send_json({"type": "cancel"})


async def test_unknown_websocket_options_are_refused_by_name(server: str) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server}/ws/tts") as ws:
        await ws.send_json({"type": "speak", "text": "Hi.", "speed": 2})
        error = await next_json(ws)
        assert error["type"] == "error" and error["code"] == "unknown_option" and "speed" in error["message"]
        await ws.send_json({"type": "speak", "text": "Hi.", "format": "pcm"})
        start, audio, _end = await receive_utterance(ws)
        assert start["type"] == "start" and audio


async def test_a_body_that_never_finishes_gets_408(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /api/tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"text\": ")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    assert head.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_a_plain_request_id_is_kept_and_any_other_replaced(server: str) -> None:
    async with aiohttp.ClientSession() as session:
        for offered, kept in (("job-42.a", True), ("Bearer abc def", False), ("x" * 65, False)):
            async with session.get(f"{server}/api/tts", params={"text": ""},
                                   headers={"X-Request-Id": offered}) as response:
                assert response.status == 400
                assert (response.headers["X-Request-Id"] == offered) is kept
