"""Home Assistant's protocol, Wyoming, spoken to the real daemon by the `wyoming` library's own client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from appliance.daemon import create_app
from appliance.synthesis.engine import SpeechEngine
from appliance.transports.wyoming_tts import WYOMING
from tests.conftest import make_config
from tests.daemon_process import DaemonProcess, running_daemon

VOICE = "en_US-joe-medium"
EVENT_TIMEOUT_S = 30.0
SEEDED = "[synthesis]\nseed = 7\n"


@dataclass
class Spoken:
    """What a client heard in answer to one request, in order."""

    events: list[Event] = field(default_factory=list)
    first_chunk_at: float | None = None

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.events]

    @property
    def audio(self) -> bytes:
        return b"".join(AudioChunk.from_event(e).audio for e in self.events if AudioChunk.is_type(e.type))

    @property
    def chunks(self) -> int:
        return sum(AudioChunk.is_type(e.type) for e in self.events)


async def read(client: AsyncTcpClient) -> Event:
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        event = await client.read_event()
    assert event is not None, "the server closed the connection"
    return event


async def hear(client: AsyncTcpClient, until: str, spoken: Spoken | None = None, past_errors: bool = False
               ) -> Spoken:
    """Events until one of type `until` (or an error, unless `past_errors`), kept in order."""
    spoken = spoken or Spoken()
    while True:
        event = await read(client)
        spoken.events.append(event)
        if AudioChunk.is_type(event.type) and spoken.first_chunk_at is None:
            spoken.first_chunk_at = time.monotonic()
        if event.type == until or (event.type == "error" and not past_errors):
            return spoken


def http_pcm(daemon: DaemonProcess, text: str) -> bytes:
    body = json.dumps({"text": text, "format": "pcm"}).encode()
    request = urllib.request.Request(f"{daemon.lan_url}/api/tts", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def wyoming_client(daemon: DaemonProcess) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", daemon.wyoming_port)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """`appliance serve` with a fixed seed, so Wyoming's audio (which has no seed) can be compared with HTTP's."""
    with running_daemon(tmp_path_factory.mktemp("wyoming"), SEEDED) as process:
        yield process


# --- describe, while the voices load ----------------------------------------------------------------------


async def test_describe_is_answered_within_100_ms_while_the_voices_are_still_loading(tmp_path: Path) -> None:
    with running_daemon(tmp_path, wait_ready=False) as daemon:  # a fresh state folder: the split is not cached
        client = wyoming_client(daemon)
        deadline = time.monotonic() + 60
        while True:
            try:
                await client.connect()
                break
            except OSError:
                assert daemon.process.poll() is None, daemon.log_text()
                assert time.monotonic() < deadline, "the Wyoming port never opened"
                await asyncio.sleep(0.01)
        try:
            asked = time.monotonic()
            await client.write_event(Describe().event())
            event = await read(client)
            answered_ms = (time.monotonic() - asked) * 1000
            assert Info.is_type(event.type), event
            with pytest.raises(OSError):  # the HTTP API is not up yet: the voices are loading
                urllib.request.urlopen(f"{daemon.lan_url}/healthz", timeout=0.2)
            assert answered_ms < 100, f"info took {answered_ms:.0f} ms"

            info = Info.from_event(event)
            [program] = info.tts
            assert program.supports_synthesize_streaming
            assert program.version and program.attribution.name
            voice = next(v for v in program.voices if v.name == VOICE)
            assert voice.languages == ["en_US"]

            # Synthesis is refused, not hung, until the voices are loaded...
            await client.write_event(Synthesize(text="Too early.").event())
            refused = Error.from_event(await read(client))
            assert refused.code == "loading", refused
            # ...and once they are, the same connection speaks.
            while True:
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{daemon.lan_url}/healthz", timeout=2):
                    break
                assert time.monotonic() < deadline + 60, "the voices never loaded"
                await asyncio.sleep(0.1)
            await client.write_event(Synthesize(text="Now it speaks.").event())
            spoken = await hear(client, "audio-stop")
            assert spoken.types[0] == "audio-start" and spoken.types[-1] == "audio-stop", spoken.types
        finally:
            await client.disconnect()


# --- one request: synthesize ------------------------------------------------------------------------------


async def test_synthesize_speaks_the_same_samples_as_the_http_api(daemon: DaemonProcess) -> None:
    text = "The kitchen lights are now off, and the front door is locked."
    async with wyoming_client(daemon) as client:
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=VOICE)).event())
        spoken = await hear(client, "audio-stop")
    assert spoken.types[0] == "audio-start" and spoken.types[-1] == "audio-stop", spoken.types
    start = AudioStart.from_event(spoken.events[0])
    assert (start.rate, start.width, start.channels) == (22050, 2, 1)
    assert spoken.chunks > 1, "audio comes window by window, not as one block per sentence"
    assert spoken.audio == await asyncio.to_thread(http_pcm, daemon, text)


async def test_a_voice_chosen_by_language_speaks(daemon: DaemonProcess) -> None:
    async with wyoming_client(daemon) as client:
        await client.write_event(Synthesize(text="Hello.", voice=SynthesizeVoice(language="en")).event())
        spoken = await hear(client, "audio-stop")
    assert spoken.types[0] == "audio-start" and len(spoken.audio) > 22050  # more than half a second


# --- streaming: synthesize-start, chunks, synthesize-stop -------------------------------------------------


async def test_each_streamed_sentence_is_spoken_as_soon_as_it_is_complete(daemon: DaemonProcess) -> None:
    first, second = "The first sentence is complete. ", "The second one arrives later."
    async with wyoming_client(daemon) as client:
        await client.write_event(SynthesizeStart().event())  # as Home Assistant may send it: no data
        await client.write_event(SynthesizeChunk(text=first).event())
        await client.write_event(SynthesizeChunk(text="The second").event())
        spoken = await hear(client, "audio-chunk")  # before synthesize-stop is sent
        assert spoken.types == ["audio-start", "audio-chunk"], spoken.types
        await client.write_event(SynthesizeChunk(text=second.removeprefix("The second")).event())
        # The compatibility copy Home Assistant sends with the whole text: not spoken a second time.
        await client.write_event(Synthesize(text=first + second).event())
        await client.write_event(SynthesizeStop().event())
        spoken = await hear(client, "synthesize-stopped", spoken)
    assert spoken.types.count("audio-start") == 1 and spoken.types.count("audio-stop") == 1, spoken.types
    assert spoken.types[-2:] == ["audio-stop", "synthesize-stopped"]
    assert "error" not in spoken.types
    assert spoken.audio == await asyncio.to_thread(http_pcm, daemon, first + second)


async def test_a_stream_with_a_voice_then_a_second_stream_on_the_same_connection(daemon: DaemonProcess) -> None:
    async with wyoming_client(daemon) as client:
        for text in ("One.", "Two."):
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name=VOICE)).event())
            await client.write_event(SynthesizeChunk(text=text).event())
            await client.write_event(SynthesizeStop().event())
            spoken = await hear(client, "synthesize-stopped")
            assert spoken.types[0] == "audio-start" and spoken.types[-1] == "synthesize-stopped", spoken.types
            assert spoken.chunks > 0


# --- errors: an `error` event, and the connection carries on ----------------------------------------------


async def test_an_unknown_voice_is_an_error_and_the_next_request_on_the_connection_speaks(
        daemon: DaemonProcess) -> None:
    async with wyoming_client(daemon) as client:
        await client.write_event(Synthesize(text="Hi.", voice=SynthesizeVoice(name="nobody")).event())
        error = Error.from_event(await read(client))
        assert error.code == "unknown_voice" and "nobody" in error.text
        # A refused stream is told once; what follows up to its stop is swallowed, and the stop is answered.
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="nobody")).event())
        await client.write_event(SynthesizeChunk(text="Hi. ").event())
        await client.write_event(Synthesize(text="Hi. ", voice=SynthesizeVoice(name="nobody")).event())
        await client.write_event(SynthesizeStop().event())
        spoken = await hear(client, "synthesize-stopped", past_errors=True)
        assert spoken.types == ["error", "synthesize-stopped"], spoken.types
        assert Error.from_event(spoken.events[0]).code == "unknown_voice"
        await client.write_event(Synthesize(text="Hi.").event())
        assert (await hear(client, "audio-stop")).types[0] == "audio-start"


@contextlib.asynccontextmanager
async def raw_connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()


async def next_event(reader: asyncio.StreamReader) -> Event:
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        event = await async_read_event(reader)
    assert event is not None, "the server closed the connection"
    return event


@pytest.mark.parametrize(("raw", "code"), [
    (b"this is not json\n", "malformed_event"),
    (b'["a list"]\n', "malformed_event"),
    (b'{"type": "synthesize", "data": {"no_text": 1}}\n', "malformed_event"),
    (b'{"type": "synthesize", "data": {"text": 5}}\n', "invalid_text"),
    (b'{"type": "synthesize", "data": {"text": "hi", "voice": "x"}}\n', "invalid_voice"),
    (b'{"type": "synthesize-chunk", "data": {"text": "hi"}}\n', "no_stream"),
    (b'{"type": "transcribe"}\n', "unknown_event"),
    (b'{"type": "synthesize", "data_length": 1000000}\n' + b" " * 1_000_000, "event_too_large"),
])
async def test_a_malformed_event_is_an_error_and_the_connection_carries_on(
        daemon: DaemonProcess, raw: bytes, code: str) -> None:
    async with raw_connection(daemon.wyoming_port) as (reader, writer):
        writer.write(raw)
        error = await next_event(reader)
        assert Error.is_type(error.type) and Error.from_event(error).code == code, error
        writer.write(b'{"type": "describe"}\n')
        assert Info.is_type((await next_event(reader)).type)


async def test_streamed_text_over_the_limit_is_an_error(daemon: DaemonProcess) -> None:
    async with wyoming_client(daemon) as client:
        await client.write_event(SynthesizeStart().event())
        # 10,000 characters is the default limit; 21 chunks of 500 spaces-and-words exceed it.
        for _ in range(21):
            await client.write_event(SynthesizeChunk(text="la " * 166 + "la").event())
        spoken = await hear(client, "error")
        assert Error.from_event(spoken.events[-1]).code == "text_too_long"
        await client.write_event(SynthesizeStop().event())
        spoken = await hear(client, "synthesize-stopped")
        await client.write_event(Describe().event())
        assert Info.is_type((await read(client)).type)


# --- limits shared with HTTP: connections and admission ---------------------------------------------------


@contextlib.asynccontextmanager
async def in_process_daemon(engine: SpeechEngine, state_folder: Path, **overrides: object) -> AsyncIterator[int]:
    """The daemon's application around the session's engine, its Wyoming listener on a loopback port."""
    config = make_config(state_folder, **{"wyoming.enabled": True, "wyoming.host": "127.0.0.1", "wyoming.port": 0,
                                          **overrides})
    app = create_app(config, engine=engine)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        yield app[WYOMING].bound_port
    finally:
        await runner.cleanup()


async def test_connections_over_the_cap_are_told_so_and_closed(engine: SpeechEngine, state_folder: Path) -> None:
    async with in_process_daemon(engine, state_folder, **{"server.max_connections": 2}) as port:
        first, second = AsyncTcpClient("127.0.0.1", port), AsyncTcpClient("127.0.0.1", port)
        async with first, second:
            for client in (first, second):
                await client.write_event(Describe().event())
                assert Info.is_type((await read(client)).type)
            async with AsyncTcpClient("127.0.0.1", port) as third:
                error = Error.from_event(await read(third))
                assert error.code == "too_many_connections"
                async with asyncio.timeout(5):
                    assert await third.read_event() is None  # closed
        await asyncio.sleep(0.1)
        async with AsyncTcpClient("127.0.0.1", port) as again:
            await again.write_event(Describe().event())
            assert Info.is_type((await read(again)).type)


async def test_busy_is_an_error_event_and_the_connection_carries_on(engine: SpeechEngine, state_folder: Path) -> None:
    async with in_process_daemon(engine, state_folder) as port, AsyncTcpClient("127.0.0.1", port) as client:
        async with contextlib.AsyncExitStack() as taken:
            for _ in range(engine.admission.max_streams):
                await taken.enter_async_context(engine.admission.slot())
            await client.write_event(Synthesize(text="Are you there?").event())
            error = Error.from_event(await read(client))
            assert error.code == "busy" and "busy" in error.text
        await client.write_event(Synthesize(text="Yes.").event())
        assert (await hear(client, "audio-stop")).types[0] == "audio-start"


# --- anything a client sends ------------------------------------------------------------------------------

EVENT_TYPES = ("describe", "synthesize", "synthesize-start", "synthesize-chunk", "synthesize-stop", "audio-chunk",
               "transcribe", "", "x" * 300)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
VOICE_VALUES = JSON_VALUES | st.fixed_dictionaries({}, optional={"name": st.sampled_from([VOICE, "nope"]) | JSON_VALUES,
                                                                  "speaker": JSON_VALUES,
                                                                  "language": st.sampled_from(["en_US", "xx"])})
EVENT_DATA = st.fixed_dictionaries({}, optional={"text": st.text(max_size=20) | JSON_VALUES, "voice": VOICE_VALUES})


@st.composite
def client_bytes(draw: st.DrawFn) -> tuple[bytes, bool]:
    """One or more events or junk lines as a client could write them; True if a header promises more body
    bytes than are written (the server then waits for them, up to its body timeout)."""
    written, short = b"", False
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["event", "event", "junk"]))
        if kind == "junk":
            written += draw(st.binary(max_size=60)).replace(b"\n", b" ") + b"\n"
            continue
        header: dict[str, object] = {"type": draw(st.sampled_from(EVENT_TYPES) | JSON_VALUES)}
        data = draw(EVENT_DATA | JSON_VALUES)
        if draw(st.booleans()):
            header["data"] = data
        body = json.dumps(draw(EVENT_DATA)).encode() if draw(st.booleans()) else b""
        payload = draw(st.binary(max_size=40))
        header["data_length"] = draw(st.sampled_from([len(body), len(body) + 5, -1, "7", None]))
        header["payload_length"] = draw(st.sampled_from([len(payload), 0, len(payload) + 3, 2**40]))
        promised = [n for n in (header["data_length"], header["payload_length"]) if isinstance(n, int) and n > 0]
        short |= sum(promised) > len(body) + len(payload) and sum(promised) <= 300_000
        written += json.dumps(header).encode() + b"\n" + body + payload
    return written, short


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(client_bytes())
def test_anything_a_client_writes_gets_error_events_or_a_close_and_the_daemon_carries_on(
        daemon: DaemonProcess, sent: tuple[bytes, bool]) -> None:
    written, short = sent
    answers = ("error", "info", "audio-start", "audio-chunk", "audio-stop", "synthesize-stopped")

    async def exchange() -> None:
        async with raw_connection(daemon.wyoming_port) as (reader, writer):
            writer.write(written + b'{"type": "synthesize-stop"}\n{"type": "describe"}\n')
            try:
                async with asyncio.timeout(3 if short else EVENT_TIMEOUT_S):
                    while (event := await async_read_event(reader)) is not None:
                        assert event.type in answers, event
                        if Info.is_type(event.type):
                            break
            except TimeoutError:
                assert short, "no answer, though every promised byte was written"
            except (ConnectionError, ValueError):
                pass  # closed by the server, e.g. after an oversized header line
        # Whatever happened on that connection, a new one is served at once.
        async with wyoming_client(daemon) as client:
            await client.write_event(Describe().event())
            async with asyncio.timeout(1):
                assert Info.is_type((await read(client)).type)

    asyncio.run(exchange())
    assert daemon.process.poll() is None, daemon.log_text()


async def test_healthz_shows_the_wyoming_listener_its_connections_and_errors(daemon: DaemonProcess) -> None:
    def wyoming_health() -> dict:
        with urllib.request.urlopen(f"{daemon.lan_url}/healthz", timeout=5) as response:
            return json.load(response)["wyoming"]

    before = wyoming_health()
    assert before["listening"] and before["port"] == daemon.wyoming_port and before["host"] == "127.0.0.1"
    async with raw_connection(daemon.wyoming_port) as (reader, writer):
        writer.write(b'{"type": "transcribe"}\n')
        assert Error.is_type((await next_event(reader)).type)
        during = wyoming_health()
        assert during["connections"] >= 1
        assert during["errors"] == before["errors"] + 1
    deadline = time.monotonic() + 5
    while wyoming_health()["connections"] > before["connections"]:
        assert time.monotonic() < deadline, "the closed connection is still counted"
        await asyncio.sleep(0.05)
