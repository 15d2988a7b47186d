"""Audio encoders, checked with real libopus, LAME and FFmpeg and independent decoders (opusdec from opus-tools,
Debian's ffmpeg)."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from appliance.audio import AudioFormat, EncoderSettings, make_encoder, wav_bytes
from appliance.audio.opus import OggOpusEncoder
from tests.audio_checks import decode_with_ffmpeg

OPUS_RATE = 48_000
OPUS_FRAME = 960  # 20 ms at 48 kHz
ENGINE_WINDOW = 4096  # about what the engine hands over per decoder window


def speech_like(sample_rate: int, seconds: float) -> np.ndarray:
    """Voiced-speech stand-in: a gliding 100-250 Hz pitch with falling harmonics, in syllable-rate bursts,
    silent at both ends (so FFT resampling sees no edge)."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    f0 = 175 + 75 * np.sin(2 * np.pi * 0.6 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 13))
    syllables = np.sin(np.pi * 4 * t) ** 2
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    x = voiced * syllables * fade
    return (0.6 * x / np.max(np.abs(x))).astype(np.float32)


def encode_in_windows(fmt: AudioFormat, samples: np.ndarray, sample_rate: int, **settings: int) -> bytes:
    encoder = make_encoder(fmt, sample_rate, EncoderSettings(**settings))
    chunks = [encoder.encode(samples[i : i + ENGINE_WINDOW]) for i in range(0, len(samples), ENGINE_WINDOW)]
    return b"".join(chunks) + encoder.finish()


@dataclass(frozen=True)
class OggPage:
    flags: int
    granule: int
    serial: int
    body: bytes

    @property
    def is_bos(self) -> bool:
        return bool(self.flags & 0x02)

    @property
    def is_eos(self) -> bool:
        return bool(self.flags & 0x04)


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def parse_ogg_pages(data: bytes) -> list[OggPage]:
    """Splits bytes into Ogg pages, insisting on whole pages with valid checksums and nothing left over."""
    pages, pos = [], 0
    while pos < len(data):
        assert data[pos : pos + 4] == b"OggS", f"no page starts at byte {pos}"
        _, flags, granule, serial, _, crc, n_segments = struct.unpack_from("<BBqIIIB", data, pos + 4)
        lacing = data[pos + 27 : pos + 27 + n_segments]
        end = pos + 27 + n_segments + sum(lacing)
        assert end <= len(data), "last page is cut short"
        unchecked = data[pos : pos + 22] + b"\0\0\0\0" + data[pos + 26 : end]
        assert _ogg_crc(unchecked) == crc, f"bad checksum in page at byte {pos}"
        pages.append(OggPage(flags, granule, serial, data[pos + 27 + n_segments : end]))
        pos = end
    return pages


def pre_skip(pages: list[OggPage]) -> int:
    head = pages[0].body
    assert head.startswith(b"OpusHead")
    return struct.unpack_from("<H", head, 10)[0]


@pytest.fixture(scope="session")
def opusdec() -> str:
    path = shutil.which("opusdec")
    if path is None:
        pytest.fail("opusdec not found: apt-get install opus-tools (script/setup --dev does)")
    return path


def decode_opus(opusdec: str, ogg: bytes, tmp_path: Path) -> np.ndarray:
    """Decodes with opus-tools (libogg + libopus; neither pyogg nor libopusenc) to 48 kHz floats."""
    (tmp_path / "in.opus").write_bytes(ogg)
    cmd = [opusdec, "--quiet", "--rate", "48000", "--no-dither", "in.opus", "out.wav"]
    subprocess.run(cmd, cwd=tmp_path, check=True)
    with wave.open(str(tmp_path / "out.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, OPUS_RATE)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768.0


def resample_fft(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    n_out = round(len(x) * rate_out / rate_in)
    return np.fft.irfft(np.fft.rfft(x), n_out) * (n_out / len(x))


def best_alignment(reference: np.ndarray, decoded: np.ndarray, max_lag: int) -> tuple[int, float]:
    """The lag of `decoded` against `reference` (within ±max_lag) with the highest correlation."""
    best = (0, -1.0)
    for lag in range(-max_lag, max_lag + 1):
        a = reference[max(0, -lag) : len(reference) - max(0, lag)]
        b = decoded[max(0, lag) : max(0, lag) + len(a)]
        n = min(len(a), len(b))
        corr = float(np.corrcoef(a[:n], b[:n])[0, 1])
        if corr > best[1]:
            best = (lag, corr)
    return best


# --- Opus ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample_rate", [22050, 16000])
def test_opus_stream_plays_back_as_the_same_speech_for_the_same_time(
    sample_rate: int, opusdec: str, tmp_path: Path
) -> None:
    speech = speech_like(sample_rate, 2.0)
    ogg = encode_in_windows(AudioFormat.OPUS, speech, sample_rate)

    decoded = decode_opus(opusdec, ogg, tmp_path)
    expected = resample_fft(speech.astype(np.float64), sample_rate, OPUS_RATE)

    assert abs(len(decoded) - len(expected)) <= OPUS_FRAME
    lag, corr = best_alignment(expected, decoded, max_lag=OPUS_RATE // 100)
    assert corr > 0.9, f"waveform correlation {corr:.3f}"
    assert abs(lag) <= OPUS_RATE // 1000, f"decoded audio is shifted by {lag} samples"


def test_first_window_already_brings_headers_and_audio() -> None:
    sample_rate = 22050
    encoder = make_encoder(AudioFormat.OPUS, sample_rate, EncoderSettings())
    assert encoder.content_type == "audio/ogg; codecs=opus"

    first = encoder.encode(speech_like(sample_rate, 0.1))
    pages = parse_ogg_pages(first)

    assert pages[0].is_bos and pages[0].body.startswith(b"OpusHead")
    assert pages[1].body.startswith(b"OpusTags")
    assert any(page.granule > 0 for page in pages[2:])
    encoder.close()


def test_each_window_releases_its_audio_at_once() -> None:
    sample_rate = 16000
    speech = speech_like(sample_rate, 1.0)
    encoder = make_encoder(AudioFormat.OPUS, sample_rate, EncoderSettings())
    pages = parse_ogg_pages(encoder.encode(speech[:1600]))
    skip = pre_skip(pages)

    fed = 1600
    for start in range(1600, len(speech), 1600):
        window = speech[start : start + 1600]
        fed += len(window)
        new_pages = parse_ogg_pages(encoder.encode(window))  # whole pages every time
        assert new_pages, "a 100 ms window produced no page"
        emitted = new_pages[-1].granule - skip
        # Held back at most: the unfinished 20 ms frame, Opus's own look-ahead (the pre-skip, 6.5 ms)
        # and the resampler's latency (< 2 ms).
        assert fed * OPUS_RATE // sample_rate - emitted < OPUS_FRAME + skip + 96
    encoder.close()


def test_bitrate_setting_sets_the_size_of_the_stream() -> None:
    sample_rate = 22050
    seconds = 5.0
    speech = speech_like(sample_rate, seconds)

    size_24k = len(encode_in_windows(AudioFormat.OPUS, speech, sample_rate, opus_bitrate=24_000))
    size_64k = len(encode_in_windows(AudioFormat.OPUS, speech, sample_rate, opus_bitrate=64_000))

    nominal_24k = 24_000 * seconds / 8
    assert 0.6 * nominal_24k < size_24k < 1.3 * nominal_24k
    assert size_64k > 2 * size_24k


def test_finish_ends_the_stream_with_an_eos_page() -> None:
    sample_rate = 22050
    speech = speech_like(sample_rate, 0.5)
    encoder = make_encoder(AudioFormat.OPUS, sample_rate, EncoderSettings())
    body = encoder.encode(speech)

    tail = encoder.finish()
    pages = parse_ogg_pages(body + tail)

    assert parse_ogg_pages(tail)[-1].is_eos
    assert [page.is_eos for page in pages].count(True) == 1
    assert pages[-1].granule - pre_skip(pages) == pytest.approx(len(speech) * OPUS_RATE / sample_rate, abs=1)
    assert len({page.serial for page in pages}) == 1
    with pytest.raises(RuntimeError):
        encoder.encode(speech)
    assert encoder.finish() == b""
    encoder.close()


@pytest.mark.parametrize("sample_rate", [22050, 16000])
def test_an_utterance_without_audio_is_still_a_valid_stream(sample_rate: int, opusdec: str, tmp_path: Path) -> None:
    encoder = make_encoder(AudioFormat.OPUS, sample_rate, EncoderSettings())

    ogg = encoder.finish()  # libopusenc 0.2.1 could abort the process here

    assert parse_ogg_pages(ogg)[-1].is_eos
    assert len(decode_opus(opusdec, ogg, tmp_path)) == 0


def test_two_streams_get_different_serial_numbers() -> None:
    first, second = (
        parse_ogg_pages(make_encoder(AudioFormat.OPUS, 16000, EncoderSettings()).finish())[0].serial for _ in range(2)
    )
    assert first != second


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_a_closed_encoder_sends_nothing_more_however_often_it_is_closed(fmt: AudioFormat) -> None:
    speech = speech_like(22050, 0.5)  # more than a codec frame: FLAC holds back up to 2,304 samples at 22.05 kHz
    abandoned = make_encoder(fmt, 22050, EncoderSettings())
    assert abandoned.encode(speech)
    abandoned.close()
    abandoned.close()
    assert abandoned.finish() == b"", "a stream given up by close() gets no ending"
    with pytest.raises(RuntimeError, match="already finished"):
        abandoned.encode(speech)

    finished = make_encoder(fmt, 22050, EncoderSettings())
    finished.finish()
    finished.close()
    finished.close()
    assert finished.finish() == b""
    with pytest.raises(RuntimeError, match="already finished"):
        finished.encode(speech)


def test_libopusenc_errors_arrive_as_readable_runtime_errors() -> None:
    with pytest.raises(RuntimeError, match=r"complexity to 11 failed: invalid argument"):
        OggOpusEncoder(22050, bitrate=24_000, complexity=11)


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="opus_bitrate"):
        EncoderSettings(opus_bitrate=1_000)
    with pytest.raises(ValueError, match="opus_complexity"):
        EncoderSettings(opus_complexity=11)


def test_loading_libopusenc_leaves_path_intact() -> None:
    # pyogg's loader appends ';'-joined folders to PATH; run in a fresh process so no earlier import hides it.
    program = (
        "import os; before = os.environ['PATH']\n"
        "from appliance.audio import AudioFormat, EncoderSettings, make_encoder\n"
        "make_encoder(AudioFormat.OPUS, 22050, EncoderSettings()).close()\n"
        "assert os.environ['PATH'] == before, os.environ['PATH']\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", program], cwd=root, check=True, env=os.environ.copy())


# --- PCM and WAV --------------------------------------------------------------------------------------


def test_pcm_is_s16le_within_half_a_step_of_the_input() -> None:
    speech = speech_like(22050, 0.5)
    encoder = make_encoder(AudioFormat.PCM, 22050, EncoderSettings())
    assert encoder.content_type == "audio/L16; rate=22050; channels=1"

    pcm = encoder.encode(speech) + encoder.finish()

    decoded = np.frombuffer(pcm, "<i2") / 32767
    assert len(decoded) == len(speech)
    assert np.max(np.abs(decoded - speech)) <= 0.5 / 32767 + 1e-7


def test_pcm_clips_and_rounds() -> None:
    encoder = make_encoder(AudioFormat.PCM, 16000, EncoderSettings())
    samples = np.array([1.5, -2.0, 1.0, -1.0, 0.0, 0.6 / 32767, -0.6 / 32767, 0.4 / 32767, np.nan])

    values = np.frombuffer(encoder.encode(samples.astype(np.float32)), "<i2").tolist()

    assert values == [32767, -32767, 32767, -32767, 0, 1, -1, 0, 0]


def test_streaming_wav_sends_an_open_ended_header_then_pcm() -> None:
    speech = speech_like(22050, 0.3)
    encoder = make_encoder(AudioFormat.WAV, 22050, EncoderSettings())
    assert encoder.content_type == "audio/wav"

    first = encoder.encode(speech[:1000])
    rest = encoder.encode(speech[1000:]) + encoder.finish()

    riff, riff_size, wave_id = struct.unpack_from("<4sI4s", first)
    data_id, data_size = struct.unpack_from("<4sI", first, 36)
    assert (riff, wave_id, data_id) == (b"RIFF", b"WAVE", b"data")
    assert riff_size == data_size == 0xFFFFFFFF
    assert first[44:] + rest == make_encoder(AudioFormat.PCM, 22050, EncoderSettings()).encode(speech)
    with wave.open(io.BytesIO(first + rest)) as w:  # players read such a stream until it ends
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        assert len(w.readframes(len(speech) + 10)) == 2 * len(speech)


def test_streaming_wav_without_audio_is_still_a_wav() -> None:
    encoder = make_encoder(AudioFormat.WAV, 16000, EncoderSettings())
    assert encoder.finish()[:4] == b"RIFF"


def test_offline_wav_file_has_correct_sizes(tmp_path: Path) -> None:
    speech = speech_like(16000, 1.25)
    path = tmp_path / "out.wav"

    path.write_bytes(wav_bytes(speech, 16000))

    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() == len(speech)
    assert struct.unpack_from("<I", path.read_bytes(), 4)[0] == path.stat().st_size - 8


# --- MP3, AAC and FLAC (FFmpeg through PyAV) ------------------------------------------------------------

CODEC_FRAME = {AudioFormat.MP3: 576, AudioFormat.AAC: 1024, AudioFormat.FLAC: 0}
"""Samples per codec frame at 22.05 kHz (MPEG-2 Layer III, AAC-LC); decoders of a stream without gapless
information add the encoder's delay and pad the end to whole frames. FLAC is exact."""
COMPRESSED = list(CODEC_FRAME)


@pytest.mark.parametrize("fmt", COMPRESSED)
def test_a_compressed_stream_plays_back_as_the_same_speech_for_the_same_time(fmt: AudioFormat) -> None:
    speech = speech_like(22050, 2.0)

    decoded, rate = decode_with_ffmpeg(encode_in_windows(fmt, speech, 22050))

    assert rate == 22050
    extra = len(decoded) - len(speech)
    assert 0 <= extra <= 3 * CODEC_FRAME[fmt], extra  # the delay (about two frames) and the last frame's padding
    if fmt is AudioFormat.FLAC:
        assert np.max(np.abs(decoded - speech)) <= 1.5 / 32767  # lossless, 16 bits
    else:
        _lag, corr = best_alignment(speech, decoded, max_lag=3 * CODEC_FRAME[fmt])
        assert corr > 0.98


@pytest.mark.parametrize("fmt", COMPRESSED)
def test_a_compressed_stream_leaves_window_by_window_not_at_the_end(fmt: AudioFormat) -> None:
    speech = speech_like(22050, 2.0)
    encoder = make_encoder(fmt, 22050, EncoderSettings())
    assert encoder.content_type == {AudioFormat.MP3: "audio/mpeg", AudioFormat.AAC: "audio/aac",
                                    AudioFormat.FLAC: "audio/flac"}[fmt]

    sent = [len(encoder.encode(speech[i : i + ENGINE_WINDOW])) for i in range(0, len(speech), ENGINE_WINDOW)]
    last = len(encoder.finish())

    assert all(sent), sent  # every window brings bytes: nothing waits for a buffer to fill
    assert last < 0.2 * sum(sent), (sent, last)


def test_the_streams_start_the_way_players_recognise_them() -> None:
    speech = speech_like(22050, 0.5)
    starts = {fmt: make_encoder(fmt, 22050, EncoderSettings()).encode(speech)[:4] for fmt in COMPRESSED}
    assert starts[AudioFormat.FLAC] == b"fLaC"
    assert starts[AudioFormat.MP3][:2] == b"\xff\xf3"  # an MPEG-2 Layer III frame, no ID3 tag before it
    assert starts[AudioFormat.AAC][:2] == b"\xff\xf1"  # an ADTS frame header


@pytest.mark.parametrize("fmt", COMPRESSED)
def test_an_utterance_without_audio_ends_cleanly(fmt: AudioFormat) -> None:
    encoder = make_encoder(fmt, 22050, EncoderSettings())
    ending = encoder.finish()
    assert ending[:4] == b"fLaC" if fmt is AudioFormat.FLAC else ending == b""


def test_a_rate_the_codec_lacks_is_resampled_to_the_next_one_it_takes() -> None:
    speech = speech_like(19000, 1.0)

    decoded, rate = decode_with_ffmpeg(encode_in_windows(AudioFormat.MP3, speech, 19000))

    assert rate == 22050
    assert 0 <= len(decoded) / rate - len(speech) / 19000 <= 3 * 576 / 22050


@pytest.mark.parametrize("voice_rate", [22050, 16000])
def test_pcm_resampled_to_24_khz_keeps_the_duration_and_the_speech(voice_rate: int) -> None:
    speech = speech_like(voice_rate, 1.5)
    encoder = make_encoder(AudioFormat.PCM, voice_rate, EncoderSettings(output_rate=24_000))
    assert encoder.content_type == "audio/L16; rate=24000; channels=1"

    chunks = [encoder.encode(speech[i : i + ENGINE_WINDOW]) for i in range(0, len(speech), ENGINE_WINDOW)]
    pcm = b"".join(chunks) + encoder.finish()

    assert all(chunks)
    decoded = np.frombuffer(pcm, "<i2") / 32767
    assert abs(len(decoded) - len(speech) * 24_000 / voice_rate) <= 1
    lag, corr = best_alignment(resample_fft(speech, voice_rate, 24_000), decoded, max_lag=48)
    assert corr > 0.999 and abs(lag) <= 2


def test_output_rate_is_checked() -> None:
    with pytest.raises(ValueError, match="output_rate"):
        EncoderSettings(output_rate=100)
