"""The benchmark's reading of streamed audio: Ogg pages split across chunks anywhere, and the real-time margin."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from appliance.audio.opus import OggOpusEncoder
from appliance.audio.wav import wav_header
from benchmarks.audio_arrival import (
    Arrival,
    OggOpusMeter,
    OggPage,
    OggPageReader,
    WavMeter,
    is_audio_page,
    opus_pre_skip,
    worst_margin,
)

RATE = 22050
SECONDS = 1
WINDOWS = 7


@pytest.fixture(scope="module")
def ogg_opus() -> bytes:
    """One second of a 220 Hz tone at the voice's rate, encoded window by window as the daemon does."""
    samples = (0.3 * np.sin(2 * np.pi * 220 * np.arange(RATE * SECONDS) / RATE)).astype(np.float32)
    encoder = OggOpusEncoder(RATE, bitrate=24_000, complexity=10)
    return b"".join([encoder.encode(window) for window in np.array_split(samples, WINDOWS)] + [encoder.finish()])


def third_capture_pattern(data: bytes) -> int:
    """Where the first page after OpusHead's and OpusTags' pages starts, found without our parser."""
    offset = -1
    for _ in range(3):
        offset = data.index(b"OggS", offset + 1)
    return offset


def read_in_chunks(data: bytes, sizes: list[int]) -> list[OggPage]:
    reader, pages, offset = OggPageReader(), [], 0
    for size in sizes:
        pages += reader.feed(data[offset:offset + size])
        offset += size
    pages += reader.feed(data[offset:])
    assert reader.pending_bytes == 0
    return pages


def awkward_chunkings(length: int) -> dict[str, list[int]]:
    rng = random.Random(9)
    return {
        "one byte at a time": [1] * length,
        "seven bytes": [7] * (length // 7),
        "exactly a page header": [27] * (length // 27),
        "random 1-200 bytes": [rng.randint(1, 200) for _ in range(length // 50)],
        "empty chunks between": [0, 3, 0, 0, 61, 0] * (length // 64),
    }


def test_pages_are_the_same_whatever_the_chunking(ogg_opus: bytes) -> None:
    whole = OggPageReader().feed(ogg_opus)
    for name, sizes in awkward_chunkings(len(ogg_opus)).items():
        assert read_in_chunks(ogg_opus, sizes) == whole, name


def test_pages_cover_the_stream_and_end_with_the_exact_sample_count(ogg_opus: bytes) -> None:
    pages = OggPageReader().feed(ogg_opus)
    assert pages[0].start_offset == 0 and pages[-1].end_offset == len(ogg_opus)
    assert all(a.end_offset == b.start_offset for a, b in itertools.pairwise(pages))
    assert [p.granule_position for p in pages[:2]] == [0, 0]  # OpusHead, OpusTags
    granules = [p.granule_position for p in pages[2:]]
    assert granules == sorted(granules) and granules[0] > 0
    assert pages[-1].header_type & 0x04  # end of stream
    # libopusenc counts 48 kHz samples after the pre-skip: one second in is exactly 48000 out.
    assert pages[-1].granule_position - opus_pre_skip(pages[0]) == 48_000 * SECONDS


def test_audio_starts_on_the_third_page(ogg_opus: bytes) -> None:
    pages = read_in_chunks(ogg_opus, [5] * (len(ogg_opus) // 5))
    assert [is_audio_page(p) for p in pages[:3]] == [False, False, True]
    assert pages[2].start_offset == third_capture_pattern(ogg_opus)


def test_the_opus_meter_reports_first_audio_and_duration_as_pages_complete(ogg_opus: bytes) -> None:
    first_audio = third_capture_pattern(ogg_opus)
    meter = OggOpusMeter()
    meter.feed(ogg_opus[:first_audio])
    assert meter.first_audio_offset is None and meter.audio_s == 0
    meter.feed(ogg_opus[first_audio:first_audio + 30])  # part of the first audio page: not playable yet
    assert meter.first_audio_offset is None
    seen = [meter.audio_s]
    for offset in range(first_audio + 30, len(ogg_opus), 100):
        meter.feed(ogg_opus[offset:offset + 100])
        seen.append(meter.audio_s)
    assert meter.first_audio_offset == first_audio
    assert seen == sorted(seen)
    assert meter.audio_s == pytest.approx(SECONDS)
    assert meter.pending_bytes == 0


def test_the_reader_refuses_bytes_that_are_not_ogg() -> None:
    with pytest.raises(ValueError, match="capture pattern"):
        OggPageReader().feed(b"RIFF")


def test_the_wav_meter_counts_samples_after_the_header() -> None:
    meter = WavMeter()  # rate from the header, as for piper's answer
    meter.feed(wav_header(RATE)[:20])
    meter.feed(wav_header(RATE)[20:])
    assert meter.first_audio_offset is None
    meter.feed(bytes(2 * RATE))
    assert meter.first_audio_offset == 44 and meter.audio_s == 1.0


def test_a_stream_that_keeps_ahead_of_playback_is_real_time() -> None:
    # First audio at 0.2 s with 0.5 s of it; then 0.5 s more every 0.4 s.
    arrivals = [Arrival(0.05, 44, None)] + [Arrival(0.2 + 0.4 * i, 1000, 0.5 * (i + 1)) for i in range(10)]
    margin = worst_margin(arrivals)
    assert margin is not None and margin.realtime
    # Just before the second chunk: 0.5 s received, 0.4 s played.
    assert margin.worst_s == pytest.approx(0.1)
    assert margin.at_s == pytest.approx(0.6)


def test_a_stream_that_falls_behind_underruns() -> None:
    # Fast start, then a 1.5 s gap with only 1.0 s of audio in hand.
    arrivals = [Arrival(0.1, 100, 0.5), Arrival(0.3, 100, 1.0), Arrival(1.6, 100, 3.0), Arrival(1.8, 100, 3.2)]
    margin = worst_margin(arrivals)
    assert margin is not None and not margin.realtime
    assert margin.worst_s == pytest.approx(1.0 - 1.5)
    assert margin.at_s == pytest.approx(1.6)


def test_a_stream_without_audio_has_no_margin() -> None:
    assert worst_margin([Arrival(0.1, 44, None)]) is None
