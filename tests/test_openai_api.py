"""An app written for OpenAI's speech API, pointed at the appliance: the official `openai` client against the real
daemon process on loopback, on the LAN listener and on the tunnel's token-only listener (its token is the API
key). Every format comes back as the same speech as `/api/tts` gives, judged by an independent decoder (Debian's
ffmpeg); refusals are OpenAI-shaped, so the client raises its usual errors."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.audio.wav import HEADER_BYTES
from appliance.config import ConfigError, config_from_dict, load_config
from appliance.security.token import ensure_token
from appliance.transports.openai_speech import OpenAIError, parse_speech_request, voice_table
from tests.audio_checks import decode_with_ffmpeg
from tests.daemon_process import DaemonProcess, running_daemon

TEXT = "Hello from the appliance. It speaks every format that OpenAI does."
VOICE_RATE = 22050
PCM_RATE = 24000
LONG_TEXT = " ".join(["This sentence keeps a synthesis stream busy for a good while."] * 12)
MISSING_VOICE = "en_GB-nobody-medium"

SLACK_S = {
    # What an independent decoder may add to the speech's duration, or take from it.
    "wav": (0.0, 0.0),
    "flac": (0.0, 0.0),
    "pcm": (1 / PCM_RATE, 1 / PCM_RATE),
    "opus": (0.020, 0.020),  # Ogg Opus trims by granule position; one 20 ms frame either way
    "mp3": (0.0, 3 * 576 / VOICE_RATE),  # no gapless header in a stream: LAME's delay plus the last frame's padding
    "aac": (0.0, 3 * 1024 / VOICE_RATE),  # ADTS: the encoder's priming plus the last frame's padding
}
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus", "aac": "audio/aac", "flac": "audio/flac",
                 "wav": "audio/wav", "pcm": "audio/L16; rate=24000; channels=1"}
FORMATS = list(SLACK_S)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    extra = f"""
[synthesis]
seed = 1              # the same audio, so the same duration, for the same text on every route
max_streams = 2
queue_s = 0.3

[openai]
voices = {{echo = "en_US-joe-medium:0", nova = "{MISSING_VOICE}"}}
"""
    with running_daemon(tmp_path_factory.mktemp("daemon"), extra) as process:
        yield process


def client_for(url: str, api_key: str = "not-needed-on-the-lan", max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=max_retries, timeout=120)


@pytest.fixture(scope="module")
def client(daemon: DaemonProcess) -> openai.OpenAI:
    return client_for(daemon.lan_url)


def post_json(url: str, body: object, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def speech_seconds(daemon: DaemonProcess) -> float:
    """How long TEXT lasts, from `/api/tts` as WAV."""
    status, _headers, wav = post_json(f"{daemon.lan_url}/api/tts", {"text": TEXT, "format": "wav"})
    assert status == 200
    return (len(wav) - HEADER_BYTES) / 2 / VOICE_RATE


def decoded_seconds(fmt: str, data: bytes) -> tuple[float, int]:
    """Duration and sample rate, read by Debian's ffmpeg (pcm has no header: it is 24 kHz s16le by definition)."""
    if fmt == "pcm":
        assert len(data) % 2 == 0
        return len(data) / 2 / PCM_RATE, PCM_RATE
    samples, rate = decode_with_ffmpeg(data)
    assert np.max(np.abs(samples)) > 0.05, "speech, not silence"
    return len(samples) / rate, rate


def assert_same_speech(fmt: str, data: bytes, speech_seconds: float) -> None:
    seconds, rate = decoded_seconds(fmt, data)
    assert rate == {"opus": 48000, "pcm": PCM_RATE}.get(fmt, VOICE_RATE)
    shorter, longer = SLACK_S[fmt]
    assert speech_seconds - shorter - 1e-6 <= seconds <= speech_seconds + longer + 1e-6, (seconds, speech_seconds)


# -- every format, both ways the client asks -------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_is_the_same_speech_as_api_tts(client: openai.OpenAI, speech_seconds: float, fmt: str) -> None:
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=fmt)
    assert_same_speech(fmt, audio.content, speech_seconds)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_streams_chunk_by_chunk(client: openai.OpenAI, speech_seconds: float, fmt: str) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="coral", input=TEXT, response_format=fmt
    ) as response:
        assert response.headers["Content-Type"] == CONTENT_TYPES[fmt]
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.headers["X-Sample-Rate"] == str(PCM_RATE if fmt == "pcm" else VOICE_RATE)
        chunks = list(response.iter_bytes())
    assert len(chunks) > 1  # sent as it was made: one sentence's windows, then the next one's
    assert_same_speech(fmt, b"".join(chunks), speech_seconds)


def test_the_default_format_is_mp3(client: openai.OpenAI) -> None:
    response = client.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input="Hi.")
    assert response.headers["Content-Type"] == "audio/mpeg"
    assert response.content[:2] == b"\xff\xf3"


@pytest.mark.parametrize("fmt", ["pcm", "mp3"])
def test_sse_sends_base64_deltas_then_done(client: openai.OpenAI, speech_seconds: float, fmt: str) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input=TEXT, response_format=fmt, stream_format="sse"
    ) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        lines = list(response.iter_lines())
    events = [json.loads(line.removeprefix("data: ")) for line in lines if line]
    assert all(line.startswith("data: ") for line in lines if line)
    *deltas, done = events
    assert len(deltas) > 1
    assert all(set(e) == {"type", "audio"} and e["type"] == "speech.audio.delta" for e in deltas)
    assert done == {"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert_same_speech(fmt, audio, speech_seconds)


# -- voices, speed, instructions ----------------------------------------------------------------------


def pcm(client: openai.OpenAI, **asked: object) -> bytes:
    response = client.audio.speech.with_raw_response.create(**{"model": "tts-1", "voice": "alloy", "input": TEXT,
                                                                 "response_format": "pcm", **asked})
    assert response.headers["X-Voice"] == "en_US-joe-medium"
    return response.content


def test_every_way_of_naming_a_voice_reaches_it(client: openai.OpenAI) -> None:
    alloy = pcm(client)
    assert pcm(client, voice="echo") == alloy  # mapped in [openai] voices to the same voice's only speaker
    assert pcm(client, voice="en_US-joe-medium") == alloy  # our own name
    assert pcm(client, voice={"id": "en_US-joe-medium:0"}) == alloy  # the client's custom-voice form, voice:speaker
    assert pcm(client, model="en_US-joe-medium", voice="shimmer") == alloy  # the voice as the model


def test_instructions_are_accepted_and_change_nothing(client: openai.OpenAI) -> None:
    assert pcm(client, instructions="Speak like a cheerful pirate.") == pcm(client)


@pytest.mark.parametrize("speed", [2.0, 0.5])
def test_speed_divides_the_voices_length_scale(daemon: DaemonProcess, client: openai.OpenAI, speech_seconds: float,
                                               speed: float) -> None:
    seconds = len(pcm(client, speed=speed)) / 2 / PCM_RATE
    (voice,) = get_json(f"{daemon.lan_url}/api/voices")["voices"]
    slower = voice["defaults"]["length_scale"] / speed
    status, _headers, wav = post_json(f"{daemon.lan_url}/api/tts",
                                      {"text": TEXT, "format": "wav", "length_scale": slower})
    assert status == 200
    assert abs(seconds - (len(wav) - HEADER_BYTES) / 2 / VOICE_RATE) <= 1 / PCM_RATE
    # Each phoneme's length is rounded up to whole frames, so the time changes a little less than the speed.
    assert (seconds < 0.7 * speech_seconds) if speed > 1 else (seconds > 1.6 * speech_seconds)


def test_models_and_voices_are_listed_the_way_clients_read_them(daemon: DaemonProcess, client: openai.OpenAI
                                                                ) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "en_US-joe-medium"} <= set(ids)
    assert client.models.retrieve("tts-1-hd").owned_by == "appliance"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("whisper-1")
    voices = get_json(f"{daemon.lan_url}/v1/audio/voices")["voices"]
    assert all(set(v) == {"id", "name"} for v in voices)
    assert {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
            "en_US-joe-medium"} <= {v["id"] for v in voices}
    assert {"id": "echo", "name": "echo (en_US-joe-medium:0)"} in voices


# -- refusals -----------------------------------------------------------------------------------------


REFUSALS = {
    "unknown model": ({"model": "whisper-1"}, "model", "model_not_found"),
    "unknown voice": ({"voice": "nobody"}, "voice", "unknown_voice"),
    "a speaker the voice lacks": ({"voice": "en_US-joe-medium:7"}, "voice", "unknown_speaker"),
    "speed too high": ({"speed": 4.5}, "speed", "invalid_value"),
    "speed too low": ({"speed": 0.2}, "speed", "invalid_value"),
    "speed not a number": ({"speed": "fast"}, "speed", "invalid_type"),
    "empty input": ({"input": ""}, "input", "empty_text"),
    "input too long": ({"input": "a" * 10_001}, "input", "text_too_long"),
    "unknown format": ({"response_format": "ogg"}, "response_format", "invalid_value"),
    "unknown stream format": ({"stream_format": "websocket"}, "stream_format", "invalid_value"),
    "unknown parameter": ({"extra_body": {"seed": 1}}, "seed", "unknown_parameter"),
    "voice mapped to a missing voice": ({"voice": "nova"}, "voice", "unknown_voice"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_bad_request_is_a_400_in_openai_shape(client: openai.OpenAI, case: str) -> None:
    changes, param, code = REFUSALS[case]
    asked = {"model": "tts-1", "voice": "alloy", "input": "Hello.", **changes}
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(**asked)
    error = refused.value
    assert error.status_code == 400
    assert isinstance(error.body, dict) and set(error.body) == {"message", "type", "param", "code"}
    assert (error.type, error.param, error.code) == ("invalid_request_error", param, code)
    assert error.body["message"]
    if case == "voice mapped to a missing voice":
        assert MISSING_VOICE in error.body["message"] and "[openai] voices" in error.body["message"]


def test_a_missing_parameter_is_named(daemon: DaemonProcess) -> None:
    status, _headers, body = post_json(f"{daemon.lan_url}/v1/audio/speech", {"model": "tts-1", "input": "Hi."})
    assert status == 400
    assert json.loads(body)["error"] == {"message": "Missing required parameter: 'voice'.",
                                         "type": "invalid_request_error", "param": "voice",
                                         "code": "missing_required_parameter"}


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
FIELD_VALUES = {
    "model": st.sampled_from(["tts-1", "gpt-4o-mini-tts", "en_US-joe-medium", "tts-2"]) | ANY_JSON,
    "voice": st.sampled_from(["alloy", "echo", "nova", "en_US-joe-medium:0", "en_US-joe-medium:1"]) | ANY_JSON,
    "input": st.text(max_size=40) | ANY_JSON,
    "response_format": st.sampled_from(FORMATS) | ANY_JSON,
    "speed": st.floats(0.2, 4.5) | ANY_JSON,
    "stream_format": st.sampled_from(["audio", "sse"]) | ANY_JSON,
    "instructions": ANY_JSON,
    "stream": ANY_JSON,
}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.fixed_dictionaries({}, optional=FIELD_VALUES) | ANY_JSON)
def test_any_json_in_any_field_is_audio_or_an_openai_shaped_4xx(daemon: DaemonProcess, changes: object) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "pcm"}
    body = {**body, **changes} if isinstance(changes, dict) else changes
    status, headers, answer = post_json(f"{daemon.lan_url}/v1/audio/speech", body)
    if status == 200:
        assert headers["Content-Type"].startswith(("audio/", "text/event-stream"))
    else:
        assert 400 <= status < 500 and headers["Content-Type"].startswith("application/json"), (status, answer)
        error = json.loads(answer)["error"]
        assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)


def test_with_every_stream_busy_the_client_gets_429_with_retry_after(daemon: DaemonProcess,
                                                                      client: openai.OpenAI) -> None:
    long_speech = {"model": "tts-1", "voice": "alloy", "input": LONG_TEXT, "response_format": "pcm"}
    with contextlib.ExitStack() as held:
        readers = []  # kept: a byte iterator dropped half-read closes its response, which frees the stream
        for _ in range(2):  # the daemon's max_streams
            stream = held.enter_context(client.audio.speech.with_streaming_response.create(**long_speech))
            readers.append(stream.iter_bytes())
            assert next(readers[-1])
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as refused:
            client.audio.speech.create(model="tts-1", voice="alloy", input="Am I next?")
        answered_s = time.monotonic() - started
    error = refused.value
    assert error.status_code == 429 and error.response.headers["Retry-After"] == "1"
    assert (error.type, error.code) == ("requests", "rate_limit_exceeded") and "busy" in error.message
    assert answered_s < 0.3 + 0.5
    # The client's own retries honour Retry-After: once the long streams are gone, the request gets through.
    patient = client_for(daemon.lan_url, max_retries=5)
    assert patient.audio.speech.create(model="tts-1", voice="alloy", input="Now?", response_format="wav").content


# -- the tunnel's listener: the token is the API key ------------------------------------------------


def test_through_the_tunnel_the_token_is_the_api_key(daemon: DaemonProcess, speech_seconds: float) -> None:
    token = ensure_token(daemon.state_folder)
    remote = client_for(daemon.tunnel_url, api_key=token)
    audio = remote.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="mp3")
    assert_same_speech("mp3", audio.content, speech_seconds)
    assert "tts-1" in [m.id for m in remote.models.list()]

    with pytest.raises(openai.AuthenticationError) as refused:
        client_for(daemon.tunnel_url, api_key="not-the-token").audio.speech.create(
            model="tts-1", voice="alloy", input=TEXT)
    assert refused.value.status_code == 401
    assert isinstance(refused.value.body, dict) and {"message", "type", "param", "code"} <= set(refused.value.body)
    status, headers, _body = post_json(f"{daemon.tunnel_url}/v1/audio/speech",
                                       {"model": "tts-1", "voice": "alloy", "input": TEXT})
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"


# -- the voice table in the configuration -----------------------------------------------------------


def test_the_voice_table_is_read_strictly_from_the_file_and_the_environment() -> None:
    config = config_from_dict({"openai": {"voices": {"alloy": "en_US-joe-medium", "echo": "libritts:p3922"}}})
    assert config.openai.voices == {"alloy": "en_US-joe-medium", "echo": "libritts:p3922"}
    from_env = load_config(environ={"APPLIANCE_OPENAI_VOICES": '{fable = "en_US-joe-medium:0"}'})
    assert from_env.openai.voices == {"fable": "en_US-joe-medium:0"}
    with pytest.raises(ConfigError, match=r"openai\.voices\.alloy: expected a string"):
        config_from_dict({"openai": {"voices": {"alloy": 3}}})
    with pytest.raises(ConfigError, match=r"openai\.voices\.alloy: expected \"voice\" or \"voice:speaker\""):
        config_from_dict({"openai": {"voices": {"alloy": ":p3922"}}})
    with pytest.raises(ConfigError, match=r"openai\.voices: expected a TOML inline table"):
        load_config(environ={"APPLIANCE_OPENAI_VOICES": "alloy=en_US-joe-medium"})


# -- how a request's model and voice pick one of our voices (no synthesis) -------------------------


def stub_engine(**length_scales: float) -> SimpleNamespace:
    """What the request reading looks at: the voices by name and each one's default length_scale."""
    return SimpleNamespace(voices={name: SimpleNamespace(config=SimpleNamespace(length_scale=scale))
                                   for name, scale in length_scales.items()})


ENGINE = stub_engine(joe=1.0, trio=1.5)
TABLE = voice_table(config_from_dict({"voices": {"default": "joe"},
                                      "openai": {"voices": {"echo": "trio:bob", "fable": "trio"}}}))


def picked(model: str = "tts-1", voice: object = "alloy", **more: object) -> tuple:
    asked = parse_speech_request({"model": model, "voice": voice, "input": "Hi.", **more}, ENGINE, TABLE)
    return asked.synthesis.voice, asked.synthesis.speaker


@pytest.mark.parametrize(("model", "voice", "expected"), [
    ("tts-1", "alloy", ("joe", None)),  # not in the table: the default voice
    ("tts-1", "echo", ("trio", "bob")),  # the table's voice:speaker
    ("tts-1", "fable", ("trio", None)),
    ("tts-1", "trio:carol", ("trio", "carol")),  # our own names, with or without a speaker
    ("tts-1-hd", "joe", ("joe", None)),
    ("tts-1", {"id": "trio:2"}, ("trio", "2")),
    ("trio", "alice", ("trio", "alice")),  # the model names the voice, the voice its speaker
    ("trio", "echo", ("trio", "bob")),  # the table maps into the model's voice: its speaker
    ("trio", "alloy", ("trio", None)),  # it maps elsewhere: the model's voice, default speaker
    ("trio", "joe", ("joe", None)),  # one of our voices by name wins over the model
])
def test_model_and_voice_pick_a_voice_and_speaker(model: str, voice: object, expected: tuple) -> None:
    assert picked(model, voice) == expected


def test_speed_divides_the_voices_own_length_scale_within_the_engines_range() -> None:
    def length_scale(voice: str, speed: float) -> float | None:
        return parse_speech_request({"model": "tts-1", "voice": voice, "input": "Hi.", "speed": speed}, ENGINE,
                                    TABLE).synthesis.length_scale

    assert length_scale("joe", 1.0) is None  # the voice's own pace
    assert length_scale("joe", 2.0) == 0.5
    assert length_scale("fable", 2.0) == 0.75  # trio's default is 1.5
    assert length_scale("fable", 0.25) == 5.0  # 6.0, kept at the engine's limit
    assert length_scale("joe", 4) == 0.25


@pytest.mark.parametrize("speed", [float("nan"), float("inf"), 10**400, 0, True, "2"])
def test_a_speed_that_is_no_number_in_range_is_refused_by_name(speed: object) -> None:
    with pytest.raises(OpenAIError) as refused:
        picked(speed=speed)
    assert (refused.value.status, refused.value.param) == (400, "speed")


def test_a_speaker_is_only_guessed_within_a_voice_the_model_names() -> None:
    with pytest.raises(OpenAIError) as refused:
        picked("tts-1", "bob")
    assert (refused.value.status, refused.value.param, refused.value.code) == (400, "voice", "unknown_voice")
