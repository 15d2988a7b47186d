"""Word timings for subtitles and karaoke: `POST /api/timings`, `words` messages on the WebSocket, and
`appliance say --subtitles`, against the real daemon, voice and espeak-ng.

"Within one window hop" here means within one decoder frame: the decoder turns one latent frame into
`samples_per_frame` samples (256 for joe), the smallest step in which audio is laid out."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np

from appliance.bench import PARAGRAPH
from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.request import SynthesisRequest
from appliance.text.phonemes import Phonemizer
from appliance.text.words import text_words, word_spans

RATE = 22050
HOP_S = 256 / RATE
TRICKY = "Dr. Smith paid $5, i.e. 123 apples, on Jan. 3rd 2024 — of the people, by the people!"
REPO = Path(__file__).resolve().parents[1]


def expected_words(text: str) -> list[str]:
    """The text's words as a reader sees them: whitespace-separated, outer punctuation gone."""
    stripped = (token.strip(".,;:!?—\"'()") for token in text.split())
    return [word for word in stripped if word]


def assert_ordered(words: list[dict], duration: float) -> None:
    for before, after in itertools.pairwise(words):
        assert before["start"] <= before["end"] <= after["start"] + 1e-9, (before, after)
    assert words[0]["start"] >= 0 and words[-1]["end"] <= duration + 1e-5  # rounded to 5 decimals


async def post_json(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, dict]:
    async with session.post(url, json=body) as response:
        return response.status, await response.json()


# -- the pure parts ---------------------------------------------------------------------------------------------

def test_words_are_the_texts_words_without_punctuation_at_their_ends() -> None:
    assert text_words("Hello, world! It's “well-known” — (really)...") == ["Hello", "world", "It's", "well-known",
                                                                            "really"]
    assert text_words(" ... — ") == []


def test_merged_expanded_and_unmatched_phonemes_give_each_word_a_span_in_order() -> None:
    phonemize = Phonemizer()

    def spans(text: str) -> tuple[list[str], list[range], list[str]]:
        words = text_words(text)
        alone = [[p for s in phonemize.sentences(w, "en-us") for p in [*s, " "]] for w in words]
        phonemes = [p for s in phonemize.sentences(text, "en-us") for p in s]
        return words, word_spans(alone, phonemes), phonemes

    # espeak says "of the" as one word ("ʌvðə"): each text word still gets its own sounds.
    _, found, phonemes = spans("of the people")
    assert [("".join(phonemes[r.start:r.stop])) for r in found] == ["ʌv", "ðə", "pˈiːpəl"]
    # "123" becomes four spoken words: all of them are the one text word's.
    _, found, phonemes = spans("I have 123 apples")
    assert "".join(phonemes[found[2].start:found[2].stop]).replace(" ", "") == "wˈʌnhˈʌndɹɪdtwˈɛntiθɹˈiː"
    # Nothing matches (another script's phonemes): the sounds are spread evenly, in order, over the words.
    spread = word_spans([["x"], ["y"], ["z"]], list("abcdef"))
    assert spread == [range(0, 2), range(2, 4), range(4, 6)]
    # More words than sounds: some words are empty, none goes backwards.
    few = word_spans([["x"], ["y"], ["z"]], ["a"])
    assert [r.start for r in few] == sorted(r.start for r in few) and sum(len(r) for r in few) == 1


def test_the_prelude_alone_gives_the_durations_the_full_encoding_uses(engine: SpeechEngine) -> None:
    prepared = engine.prepare(SynthesisRequest(text=PARAGRAPH, seed=11))
    request = prepared.voice.start_request(prepared.params, prepared.seed)
    for ids in engine.sentence_ids(prepared.voice, "Welcome back. Let us start with a simple experiment."):
        plan = request.encode(ids)
        durations, frames = request.durations(ids)
        assert np.array_equal(durations, plan.durations) and len(durations) == len(ids)
        assert frames == plan.frames == int(plan.durations.sum())
        emitted = sum(plan.window_samples(w) for w in plan.windows)
        assert emitted == frames * plan.samples_per_frame == request.sentence_audio(ids).size


# -- HTTP --------------------------------------------------------------------------------------------------------

async def test_timings_of_a_paragraph_match_the_audio_tts_makes_with_the_reported_seed(server: str) -> None:
    async with aiohttp.ClientSession() as session:
        status, timed = await post_json(session, f"{server}/api/timings", {"text": PARAGRAPH})
        assert status == 200, timed
        async with session.post(f"{server}/api/tts", json={"text": PARAGRAPH, "seed": timed["seed"],
                                                           "format": "pcm"}) as response:
            audio = await response.read()
    assert (timed["voice"], timed["sample_rate"]) == ("en_US-joe-medium", RATE)
    assert [w["word"] for w in timed["words"]] == expected_words(PARAGRAPH)
    seconds = len(audio) / 2 / RATE
    assert abs(timed["duration"] - seconds) < 1e-4
    assert abs(timed["words"][-1]["end"] - seconds) <= HOP_S
    assert_ordered(timed["words"], timed["duration"])
    # The paragraph's six sentences are laid out one after the other: every word lies inside the audio and the
    # first word of a later sentence starts well after the start.
    starts = {w["word"]: w["start"] for w in timed["words"]}
    assert 0 <= starts["Welcome"] < 0.3 and starts["orange"] > seconds - 1.5


async def test_numbers_and_abbreviations_keep_the_texts_words_in_order(server: str) -> None:
    async with aiohttp.ClientSession() as session:
        status, timed = await post_json(session, f"{server}/api/timings", {"text": TRICKY, "seed": 5})
    assert status == 200, timed
    assert timed["seed"] == 5
    assert [w["word"] for w in timed["words"]] == expected_words(TRICKY)
    assert_ordered(timed["words"], timed["duration"])
    assert timed["words"][-1]["end"] == timed["duration"]
    # "123" is said as four words: it lasts far longer than "i.e" or "Dr".
    length = {w["word"]: w["end"] - w["start"] for w in timed["words"]}
    assert length["123"] > 0.5


async def test_bad_timings_bodies_are_refused_with_json_errors(server: str) -> None:
    async with aiohttp.ClientSession() as session:
        for body, status, code in [({"text": 5}, 400, "invalid_text"), ({"text": "  "}, 400, "empty_text"),
                                   ({"text": "hi", "speed": 2}, 400, "unknown_option"),
                                   ({"text": "hi", "voice": "nobody"}, 404, "unknown_voice"),
                                   ({"text": "hi", "noise_w": 9}, 400, "out_of_range")]:
            got, answer = await post_json(session, f"{server}/api/timings", body)
            assert (got, answer["error"]["code"]) == (status, code), body
        async with session.post(f"{server}/api/timings", data=b"{not json",
                                headers={"Content-Type": "application/json"}) as response:
            assert response.status == 400 and (await response.json())["error"]["code"] == "malformed_json"
        async with session.get(f"{server}/api/timings") as response:
            assert response.status == 405 and "error" in await response.json()


# -- WebSocket ---------------------------------------------------------------------------------------------------

async def test_websocket_words_come_before_their_audio_and_equal_the_timings_route(server: str) -> None:
    text = "The first sentence is short. The second one, however, goes on for a little while longer. Done."
    words: list[dict] = []
    received = 0
    async with aiohttp.ClientSession() as session:
        _, timed = await post_json(session, f"{server}/api/timings", {"text": text, "seed": 21})
        async with session.ws_connect(f"{server}/ws/tts") as ws:
            await ws.send_json({"type": "speak", "text": text, "seed": 21, "format": "pcm", "timings": True,
                                "id": "w"})
            while True:
                message = await asyncio.wait_for(ws.receive(), 60)
                if message.type == aiohttp.WSMsgType.BINARY:
                    received += len(message.data)
                    continue
                body = json.loads(message.data)
                if body["type"] == "words":
                    assert body["id"] == "w" and body["words"]
                    # None of the audio these words cover has arrived yet.
                    assert body["words"][0]["start"] >= received / 2 / RATE - 1e-9
                    words.extend(body["words"])
                elif body["type"] == "end":
                    end = body
                    break
    assert words == timed["words"]  # every sentence's offset, the same as the prelude-only route's
    assert [w["word"] for w in words] == expected_words(text)
    assert_ordered(words, received / 2 / RATE)
    assert abs(words[-1]["end"] - received / 2 / RATE) <= HOP_S and abs(end["audio_seconds"] - words[-1]["end"]) < 2e-3


async def test_websocket_without_timings_sends_no_words_and_a_bad_flag_is_refused(server: str) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server}/ws/tts") as ws:
        await ws.send_json({"type": "speak", "text": "Hi.", "timings": "yes"})
        error = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
        assert (error["type"], error["code"]) == ("error", "invalid_option")
        await ws.send_json({"type": "speak", "text": "Hi.", "format": "pcm"})
        kinds = []
        while not kinds or kinds[-1] != "end":
            message = await asyncio.wait_for(ws.receive(), 30)
            if message.type == aiohttp.WSMsgType.TEXT:
                kinds.append(json.loads(message.data)["type"])
    assert kinds == ["start", "end"]


# -- the command line --------------------------------------------------------------------------------------------

def say(state_folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "--state", str(state_folder), "say", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


CUE = re.compile(r"(\d\d):(\d\d):(\d\d)([.,])(\d\d\d) --> (\d\d):(\d\d):(\d\d)([.,])(\d\d\d)")


def parse_cues(text: str, separator: str) -> list[tuple[float, float, str]]:
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        timing = next(i for i, line in enumerate(lines) if "-->" in line)
        match = CUE.fullmatch(lines[timing])
        assert match and match.group(4) == match.group(9) == separator, lines[timing]
        g = [int(x) if x.isdigit() else x for x in match.groups()]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[4] / 1000
        end = g[5] * 3600 + g[6] * 60 + g[7] + g[9] / 1000
        cues.append((start, end, " ".join(lines[timing + 1:])))
    return cues


def test_say_writes_webvtt_and_srt_beside_the_audio(state_folder: Path, tmp_path: Path) -> None:
    for name, separator in (("out.vtt", "."), ("out.srt", ",")):
        subtitles = tmp_path / name
        done = say(state_folder, PARAGRAPH, "-o", str(tmp_path / "out.wav"), "--seed", "4", "--subtitles",
                   str(subtitles))
        assert done.returncode == 0, done.stderr
        seconds = float(re.search(r"\(([\d.]+) s of audio\)", done.stdout).group(1))
        text = subtitles.read_text(encoding="utf-8")
        if separator == ".":
            assert text.startswith("WEBVTT\n\n")
            text = text[len("WEBVTT\n\n"):]
        else:
            assert [block.split("\n")[0] for block in text.strip().split("\n\n")][:3] == ["1", "2", "3"]
        cues = parse_cues(text, separator)
        assert " ".join(cue[2] for cue in cues).split() == expected_words(PARAGRAPH)
        assert all(start <= end for start, end, _ in cues)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(cues))
        assert abs(cues[-1][1] - seconds) <= 0.01
    done = say(state_folder, "Hi.", "-o", str(tmp_path / "hi.wav"), "--subtitles", str(tmp_path / "hi.txt"))
    assert done.returncode == 2 and "unknown subtitle type '.txt'" in done.stderr
    assert not (tmp_path / "hi.wav").exists()
