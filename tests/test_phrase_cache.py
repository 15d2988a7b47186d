"""The phrase cache and pre-rendered prompts, as a client sees them: a repeated sentence comes back byte for byte
from the cache and starts at once, over every transport and across restarts; a bad cache file is never played;
pre-rendering fills the cache without holding up live requests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize

from appliance.daemon import create_app
from appliance.synthesis.cache_files import HEADER_BYTES, file_bytes
from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.loading import load_engine
from appliance.synthesis.phrase_cache import PhraseCache, PhraseKey
from appliance.synthesis.prerender import parse_phrase_lines
from tests.conftest import make_config, start_app
from tests.daemon_process import running_daemon
from tests.test_websocket import receive_utterance
from tests.test_wyoming import hear

KETTLE = "The kettle has boiled."
DOOR = "Someone is at the front door."
LAUNDRY = "The washing machine has finished."
POLL_S = 0.05
WAIT_S = 60.0


def fresh_state(tmp_path: Path, shared_state: Path) -> Path:
    """A state folder of its own (an empty phrase cache) that shares the session's split models."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "split-cache").symlink_to(shared_state / "split-cache", target_is_directory=True)
    return state


@contextlib.asynccontextmanager
async def cached_server(state: Path, **overrides: object) -> AsyncIterator[tuple[str, SpeechEngine]]:
    """A real daemon app on loopback with its own engine, the phrase cache on."""
    config = make_config(state, **{"cache.enabled": True, **overrides})
    engine = await asyncio.to_thread(load_engine, config)
    listener, url = await start_app(create_app(config, engine=engine))
    try:
        yield url, engine
    finally:
        await listener.stop()
        await asyncio.to_thread(engine.close)


async def tts(url: str, **body: object) -> tuple[dict[str, str], bytes, float]:
    """Headers, body, and seconds from the headers to the first body bytes."""
    async with aiohttp.ClientSession() as session, session.post(f"{url}/api/tts", json=body) as response:
        assert response.status == 200, await response.text()
        headers_at = time.perf_counter()
        first = await response.content.readany()
        first_after_headers = time.perf_counter() - headers_at
        return dict(response.headers), first + await response.read(), first_after_headers


async def healthz(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
        return await response.json()


async def wait_for_cache(url: str, ready: object) -> dict:
    """The cache's health once `ready(cache)` holds (stores happen on the cache's writer thread)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        cache = (await healthz(url))["cache"]
        if ready(cache):  # type: ignore[operator]
            return cache
        assert time.monotonic() < deadline, f"cache never got there: {cache}"
        await asyncio.sleep(POLL_S)


@pytest.fixture
def state(tmp_path: Path, state_folder: Path) -> Path:
    return fresh_state(tmp_path, state_folder)


async def test_a_repeated_sentence_is_a_hit_byte_for_byte_and_starts_within_10_ms(state: Path) -> None:
    async with cached_server(state) as (url, _engine):
        headers, missed, _ = await tts(url, text=KETTLE, format="pcm")
        assert headers["X-Cache"] == "miss"
        await wait_for_cache(url, lambda c: c["entries"] == 1)
        headers, hit, _ = await tts(url, text=KETTLE, format="pcm")
        assert headers["X-Cache"] == "hit"
        assert hit == missed and len(hit) > 22050  # over half a second of speech
        headers, wav, _ = await tts(url, text="  The kettle   has boiled.\n", format="wav")  # whitespace: same key
        assert headers["X-Cache"] == "hit" and wav[44:] == missed
        firsts = [(await tts(url, text=KETTLE, format="pcm"))[2] for _ in range(3)]
        assert min(firsts) <= 0.010, f"first audio after the headers: {firsts}"
        cache = (await healthz(url))["cache"]
        assert (cache["hits"], cache["misses"], cache["entries"]) == (5, 1, 1)
        assert 0 < cache["bytes"] <= cache["max_bytes"] and cache["rejected_files"] == 0


async def test_a_text_partly_cached_is_partial_and_sounds_as_if_synthesised(state: Path, server: str) -> None:
    text = f"{KETTLE} {DOOR}"
    _, synthesised, _ = await tts(server, text=text, format="pcm")  # the shared engine: no cache
    async with cached_server(state) as (url, _engine):
        await tts(url, text=KETTLE, format="pcm")
        await wait_for_cache(url, lambda c: c["entries"] == 1)
        headers, partial, _ = await tts(url, text=text, format="pcm")
        assert headers["X-Cache"] == "partial"
        assert partial == synthesised
        await wait_for_cache(url, lambda c: c["entries"] == 2)
        headers, hit, _ = await tts(url, text=text, format="pcm")
        assert headers["X-Cache"] == "hit" and hit == synthesised


async def test_the_seed_is_part_of_the_key(state: Path) -> None:
    async with cached_server(state) as (url, _engine):
        _, unseeded, _ = await tts(url, text=KETTLE, format="pcm")
        headers, seeded, _ = await tts(url, text=KETTLE, format="pcm", seed=5)
        assert headers["X-Cache"] == "miss" and seeded != unseeded
        await wait_for_cache(url, lambda c: c["entries"] == 2)
        headers, again, _ = await tts(url, text=KETTLE, format="pcm", seed=5)
        assert headers["X-Cache"] == "hit" and again == seeded


async def test_with_vary_only_requests_that_give_a_seed_use_the_cache(state: Path) -> None:
    async with cached_server(state, **{"synthesis.vary": True}) as (url, _engine):
        first_headers, first, _ = await tts(url, text=KETTLE, format="pcm")
        _, second, _ = await tts(url, text=KETTLE, format="pcm")
        assert "X-Cache" not in first_headers and first != second  # fresh noise each time
        assert (await healthz(url))["cache"]["entries"] == 0
        headers, seeded, _ = await tts(url, text=KETTLE, format="pcm", seed=3)
        assert headers["X-Cache"] == "miss"
        await wait_for_cache(url, lambda c: c["entries"] == 1)
        headers, again, _ = await tts(url, text=KETTLE, format="pcm", seed=3)
        assert headers["X-Cache"] == "hit" and again == seeded


async def test_a_corrupt_or_truncated_file_is_removed_and_never_played(state: Path) -> None:
    folder = state / "phrase-cache"
    async with cached_server(state) as (url, _engine):
        _, good, _ = await tts(url, text=KETTLE, format="pcm")
        await wait_for_cache(url, lambda c: c["entries"] == 1)
        (path,) = folder.glob("*.phrase")
        original = path.read_bytes()
        data = bytearray(original)
        data[HEADER_BYTES + 1000] ^= 0x40  # one bit of one sample
        path.write_bytes(bytes(data))
        _, answered, _ = await tts(url, text=KETTLE, format="pcm")
        assert answered == good
        await wait_for_cache(url, lambda c: c["rejected_files"] == 1 and c["entries"] == 1)  # stored anew
        assert path.read_bytes() == original
        path.write_bytes(path.read_bytes()[:-4000])  # a write cut short
        _, answered, _ = await tts(url, text=KETTLE, format="pcm")
        assert answered == good
        cache = await wait_for_cache(url, lambda c: c["rejected_files"] == 2 and c["entries"] == 1)
        assert cache["hits"] == 0 and cache["misses"] == 3
        headers, answered, _ = await tts(url, text=KETTLE, format="pcm")
        assert headers["X-Cache"] == "hit" and answered == good
        assert (await healthz(url))["cache"]["hits"] == 1


async def test_the_least_recently_used_sentence_goes_first_when_the_cache_is_full(state: Path) -> None:
    folder = state / "phrase-cache"
    async with cached_server(state, **{"cache.max_mb": 0.3}) as (url, _engine):
        for text in (KETTLE, DOOR):
            await tts(url, text=text, format="pcm")
        await wait_for_cache(url, lambda c: c["entries"] == 2)
        two = sum(p.stat().st_size for p in folder.glob("*.phrase"))
        assert two <= 300_000
        assert (await tts(url, text=KETTLE, format="pcm"))[0]["X-Cache"] == "hit"  # now the most recent
        await tts(url, text=LAUNDRY, format="pcm")
        cache = await wait_for_cache(url, lambda c: c["misses"] == 3 and c["entries"] == 2)
        assert cache["bytes"] <= 300_000 and cache["bytes"] == sum(p.stat().st_size for p in folder.glob("*.phrase"))
        assert (await tts(url, text=KETTLE, format="pcm"))[0]["X-Cache"] == "hit"
        assert (await tts(url, text=LAUNDRY, format="pcm"))[0]["X-Cache"] == "hit"
        assert (await tts(url, text=DOOR, format="pcm"))[0]["X-Cache"] == "miss"  # the one evicted


async def test_the_websocket_end_says_how_many_sentences_came_from_the_cache(state: Path) -> None:
    async with cached_server(state) as (url, _engine), aiohttp.ClientSession() as session, \
            session.ws_connect(f"{url}/ws/tts") as ws:
        await ws.send_json({"type": "speak", "text": KETTLE, "format": "pcm"})
        _, first, end = await receive_utterance(ws)
        assert end["cached_sentences"] == 0
        await wait_for_cache(url, lambda c: c["entries"] == 1)
        await ws.send_json({"type": "speak", "text": f"{KETTLE} {DOOR}", "format": "pcm"})
        _, both, end = await receive_utterance(ws)
        assert end["cached_sentences"] == 1 and both.startswith(first)
        await wait_for_cache(url, lambda c: c["entries"] == 2)
        for piece in (KETTLE + " Some", "one is at the front door."):  # streamed, as from a language model
            await ws.send_json({"type": "text", "text": piece, "format": "pcm"})
        await ws.send_json({"type": "flush"})
        _, streamed, end = await receive_utterance(ws)
        assert end["cached_sentences"] == 2 and streamed == both


async def test_the_cache_survives_a_restart_and_every_transport_can_hit_it(tmp_path: Path, state_folder: Path
                                                                           ) -> None:
    fresh_state(tmp_path, state_folder)  # the daemon's state folder is tmp_path/state
    with running_daemon(tmp_path) as daemon:
        headers, missed, _ = await tts(daemon.lan_url, text=KETTLE, format="pcm")
        assert headers["X-Cache"] == "miss"
        await wait_for_cache(daemon.lan_url, lambda c: c["entries"] == 1)
    with running_daemon(tmp_path) as daemon:
        url = daemon.lan_url
        assert (await healthz(url))["cache"]["entries"] == 1
        headers, hit, _ = await tts(url, text=KETTLE, format="pcm")
        assert headers["X-Cache"] == "hit" and hit == missed
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/audio/speech", json={"model": "tts-1", "input": KETTLE,
                                                                     "voice": "alloy"}) as response:
                assert response.status == 200 and response.headers["X-Cache"] == "hit"
                mp3 = await response.read()
                assert mp3[:3] == b"ID3" or mp3[:2] in (b"\xff\xfb", b"\xff\xf3")  # a tag or an MPEG frame
            async with session.post(f"{url}/api/v1/synthesise", json={"text": KETTLE, "audio_format": "pcm"}
                                    ) as response:  # Paroli's route
                assert response.headers["X-Cache"] == "hit" and await response.read() == missed
        async with AsyncTcpClient("127.0.0.1", daemon.wyoming_port) as client:
            await client.write_event(Synthesize(text=KETTLE).event())
            spoken = await hear(client, "audio-stop")
        assert spoken.audio == missed
        cache = (await healthz(url))["cache"]
        assert cache["misses"] == 0 and cache["hits"] == 4


async def test_prerendered_phrases_from_the_file_and_the_api_are_hits(tmp_path: Path, state: Path) -> None:
    phrases = tmp_path / "prerender.txt"
    phrases.write_text(f"# welcome prompts\n\n{KETTLE}\nen_US-joe-medium|{DOOR}\nno-such-voice|Never.\n")
    async with cached_server(state, **{"cache.prerender": str(phrases)}) as (url, _engine):
        cache = await wait_for_cache(url, lambda c: c["prerender"]["done"] == 2)
        assert cache["prerender"] == {"queued": 0, "done": 2, "failed": 1} and cache["entries"] == 2
        for text in (KETTLE, DOOR):
            assert (await tts(url, text=text, format="pcm"))[0]["X-Cache"] == "hit"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/api/cache/prerender", json={"texts": [LAUNDRY]}) as response:
                assert response.status == 202 and (await response.json())["queued"] == 1
            for body, status, code in (({"texts": "one"}, 400, "invalid_texts"),
                                       ({"texts": [LAUNDRY], "voice": "nobody"}, 404, "unknown_voice"),
                                       ({"texts": ["x" * 20_000]}, 413, "text_too_long"),
                                       ({"texts": ["Hi."] * 1001}, 400, "too_many_texts"),
                                       ({"text": "Hi."}, 400, "unknown_option")):
                async with session.post(f"{url}/api/cache/prerender", json=body) as response:
                    assert response.status == status and (await response.json())["error"]["code"] == code
        await wait_for_cache(url, lambda c: c["prerender"]["done"] == 3 and c["entries"] == 3)
        assert (await tts(url, text=LAUNDRY, format="pcm"))[0]["X-Cache"] == "hit"


async def first_audio_s(url: str, text: str) -> float:
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.post(f"{url}/api/tts", json={"text": text, "format": "pcm"}) as response:
            assert response.headers["X-Cache"] == "miss"
            await response.content.readany()
            first = time.perf_counter() - started
            await response.read()
    return first


NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


async def test_a_live_request_during_prerendering_waits_at_most_one_prerender_job(state: Path) -> None:
    """Pre-rendering submits one job at a time, only while no stream is active, due at infinity: a live request
    finds at most one pre-render job running, on one of the workers. Each job here (a short sentence's encoding,
    or one of its decoder windows) is no longer than the live request's own way to its first audio (encoding a
    sentence of the same length, then its first window), so the live first audio stays within twice its time
    alone (plus 100 ms for a shared machine's noise)."""
    async with cached_server(state) as (url, _engine):
        alone = min([await first_audio_s(url, f"The live request number {n} is here.") for n in NUMBERS[:3]])
        async with aiohttp.ClientSession() as session:
            texts = [f"Prompt number {n} {m} is ready." for n in NUMBERS for m in NUMBERS[:4]]
            async with session.post(f"{url}/api/cache/prerender", json={"texts": texts}) as response:
                assert response.status == 202
        await wait_for_cache(url, lambda c: c["prerender"]["done"] >= 1)
        during = []
        for n in NUMBERS[3:6]:
            during.append(await first_audio_s(url, f"The live request number {n} is here."))
            await asyncio.sleep(0.2)  # pre-rendering resumes
        cache = (await healthz(url))["cache"]
        assert cache["prerender"]["queued"] > 0, "pre-rendering finished before the live requests: not tested"
        assert max(during) <= 2 * alone + 0.1, f"alone {alone:.3f} s, during pre-rendering {during}"


def test_phrase_lines_name_a_voice_only_with_a_bare_prefix() -> None:
    lines = ["# greetings", "", "  Welcome back.  ", "en_US-joe-medium|Good morning.", "Press 1 | or 2.", "|Hi."]
    assert parse_phrase_lines(lines) == [(None, "Welcome back."), ("en_US-joe-medium", "Good morning."),
                                         (None, "Press 1 | or 2."), (None, "|Hi.")]


def test_the_index_is_rebuilt_from_the_folder_oldest_first_and_half_written_files_are_removed(tmp_path: Path
                                                                                             ) -> None:
    key = PhraseKey("sha", "cpu", None, (1.0, 0.667, 0.8), 0, "")
    keys = [dataclasses.replace(key, text=f"Sentence {n}.") for n in range(3)]
    cache = PhraseCache(tmp_path, max_bytes=3 * file_bytes(1000))
    for n, k in enumerate(keys):
        cache.store(k, np.full(1000, n / 10, dtype=np.float32), 22050)
    assert cache.load(keys[0]) is not None  # now the most recent
    cache.close()
    now = time.time()
    assert os.stat(tmp_path / keys[0].file_name()).st_mtime >= now - 5  # the hit is on disk
    for age, k in ((30, keys[1]), (20, keys[2]), (10, keys[0])):  # distinct times, whatever the clock's grain
        os.utime(tmp_path / k.file_name(), (now - age, now - age))
    (tmp_path / "leftover.phrase.tmp").write_bytes(b"half")
    again = PhraseCache(tmp_path, max_bytes=2 * file_bytes(1000))  # the limit shrank: the oldest goes
    assert not (tmp_path / "leftover.phrase.tmp").exists()
    assert [again.contains(k) for k in keys] == [True, False, True]
    loaded = again.load(keys[2])
    assert loaded is not None and np.array_equal(loaded, np.full(1000, 0.2, dtype=np.float32))
    assert again.health().bytes == 2 * file_bytes(1000)
    again.close()
