"""A client of `/ws/tts`, as a voice agent would use it: binary audio frames, text streamed piece by piece,
barge-in, several utterances per connection, and error messages that leave the connection usable."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from appliance.synthesis.engine import SpeechEngine

LONG_TEXT = " ".join(["This sentence is here so that the audio goes on for quite a while."] * 20)


async def receive_utterance(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict, bytes, dict]:
    """Messages up to and including `end`: the start message, the audio bytes, the end message."""
    start: dict[str, Any] | None = None
    audio = bytearray()
    while True:
        message = await asyncio.wait_for(ws.receive(), 60)
        if message.type == aiohttp.WSMsgType.BINARY:
            assert start is not None, "audio before start"
            audio += message.data
            continue
        assert message.type == aiohttp.WSMsgType.TEXT, message
        body = json.loads(message.data)
        if body["type"] == "start":
            start = body
        elif body["type"] == "end":
            assert start is not None
            return start, bytes(audio), body
        else:
            raise AssertionError(f"unexpected message {body}")


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict:
    while True:
        message = await asyncio.wait_for(ws.receive(), 30)
        if message.type == aiohttp.WSMsgType.TEXT:
            return json.loads(message.data)
        assert message.type == aiohttp.WSMsgType.BINARY, message


async def test_speak_sends_start_binary_audio_and_end(server: str) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server}/ws/tts") as ws:
        await ws.send_json({"type": "speak", "text": "Hello over the socket.", "format": "opus", "id": "a1"})
        start, audio, end = await receive_utterance(ws)
    assert start == {"type": "start", "id": "a1", "format": "opus", "content_type": "audio/ogg; codecs=opus",
                     "sample_rate": 22050, "voice": "en_US-joe-medium"}
    assert audio[:4] == b"OggS"
    assert end["id"] == "a1" and end["audio_seconds"] > 0.5
    assert 0 < end["first_audio_ms"] <= end["synthesis_ms"] + 1000


async def test_streamed_text_starts_speaking_each_sentence_when_it_is_complete(server: str) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server}/ws/tts") as ws:
        await ws.send_json({"type": "text", "text": "The first sentence arrives ", "format": "pcm"})
        await ws.send_json({"type": "text", "text": "in pieces. The second one"})
        start = await next_json(ws)
        assert start["type"] == "start" and start["format"] == "pcm"
        first_audio = await asyncio.wait_for(ws.receive(), 30)
        assert first_audio.type == aiohttp.WSMsgType.BINARY, "the complete sentence is spoken before the flush"
        await ws.send_json({"type": "text", "text": " is not finished until the flush"})
        await ws.send_json({"type": "flush"})
        audio = bytearray(first_audio.data)
        while True:
            message = await asyncio.wait_for(ws.receive(), 30)
            if message.type == aiohttp.WSMsgType.BINARY:
                audio += message.data
                continue
            end = json.loads(message.data)
            break
    assert end["type"] == "end" and end["id"] == start["id"]
    assert end["audio_seconds"] > 3.0  # both sentences
    assert abs(len(audio) / 2 / 22050 - end["audio_seconds"]) < 0.001


async def test_cancel_stops_the_audio_within_a_window_and_is_acknowledged(server: str, engine: SpeechEngine) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server}/ws/tts") as ws:
        await ws.send_json({"type": "speak", "text": LONG_TEXT, "format": "pcm", "id": "long"})
        await ws.send_json({"type": "speak", "text": "Queued and never spoken.", "id": "queued"})
        assert (await next_json(ws))["type"] == "start"
        assert (await asyncio.wait_for(ws.receive(), 30)).type == aiohttp.WSMsgType.BINARY
        await ws.send_json({"type": "cancel"})
        # At most the window in flight when the cancel arrived, then the acknowledgement.
        frames_after_cancel = 0
        while True:
            message = await asyncio.wait_for(ws.receive(), 30)
            if message.type == aiohttp.WSMsgType.BINARY:
                frames_after_cancel += 1
                continue
            ack = json.loads(message.data)
            break
        assert ack == {"type": "cancelled", "ids": ["long", "queued"]}
        assert frames_after_cancel <= 1
        windows = engine.counters.windows
        await asyncio.sleep(0.5)
        assert engine.counters.windows == windows
        # The connection is still good for the next utterance.
        await ws.send_json({"type": "speak", "text": "After the barge-in.", "id": "next"})
        start, audio, _end = await receive_utterance(ws)
        assert start["id"] == "next" and audio


async def test_several_utterances_play_in_order_on_one_connection(server: str) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server}/ws/tts") as ws:
        for i in range(3):
            await ws.send_json({"type": "speak", "text": f"Utterance number {i + 1}.", "format": "wav"})
        ids = []
        for _ in range(3):
            _start, audio, end = await receive_utterance(ws)
            assert audio[:4] == b"RIFF"
            ids.append(end["id"])
    assert ids == ["u1", "u2", "u3"]


async def test_bad_messages_get_error_messages_and_the_connection_carries_on(server: str) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server}/ws/tts") as ws:
        await ws.send_str("{oops")
        assert (await next_json(ws))["code"] == "malformed_json"
        await ws.send_json({"type": "sing"})
        assert (await next_json(ws))["code"] == "unknown_type"
        await ws.send_json({"type": "speak", "text": ""})
        assert (await next_json(ws))["code"] == "empty_text"
        await ws.send_json({"type": "speak", "text": "Hi.", "voice": "nobody", "id": "x"})
        assert await next_json(ws) == {"type": "error", "code": "unknown_voice",
                                       "message": "unknown voice 'nobody'; see /api/voices", "id": "x"}
        await ws.send_json({"type": "speak", "text": "Hi.", "length_scale": 99})
        assert (await next_json(ws))["code"] == "out_of_range"
        await ws.send_json({"type": "speak", "text": "y" * 70_000})
        assert (await next_json(ws))["code"] == "message_too_large"
        await ws.send_bytes(b"\x00\x01")
        assert (await next_json(ws))["code"] == "unexpected_binary"
        await ws.send_json({"type": "speak", "text": "Still listening."})
        _start, audio, _end = await receive_utterance(ws)
        assert audio


async def test_streamed_text_over_the_limit_is_refused(server: str) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server}/ws/tts") as ws:
        for _ in range(3):
            await ws.send_json({"type": "text", "text": "z" * 4000})
        messages = [await next_json(ws) for _ in range(2)]
    assert {m["type"] for m in messages} >= {"cancelled", "error"}
    assert any(m.get("code") == "text_too_long" for m in messages)
