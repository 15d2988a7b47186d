"""When audio arrives in a streamed response: how much playable audio each received chunk completes, and whether
playback started at the first audio would ever run dry.

The one place the benchmarks read Ogg page framing (RFC 3533) and Ogg Opus headers (RFC 7845). Pure: fed
bytes, no sockets and no clocks, so tests can feed recorded streams in any chunking."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

OGG_CAPTURE: Final = b"OggS"
OGG_HEADER_BYTES: Final = 27
"""Fixed part of a page header, up to and including the segment count."""
OPUS_GRANULE_RATE: Final = 48_000
"""Ogg Opus granule positions count 48 kHz samples, whatever the input rate was."""
OPUS_HEADER_PACKETS: Final = 2
"""OpusHead, then OpusTags; audio starts on the first page that begins after both."""
WAV_HEADER_BYTES: Final = 44
WAV_BYTES_PER_SAMPLE: Final = 2
_FLAG_CONTINUED: Final = 0x01
_NO_PACKET_ENDS: Final = -1


@dataclass(frozen=True)
class OggPage:
    header_type: int
    """Flags: 0x01 continues a packet from the previous page, 0x02 first page, 0x04 last page."""
    granule_position: int
    """Codec position after the last packet that ends on this page; -1 when none does."""
    start_offset: int
    """Byte offset of the page's "OggS" in the stream."""
    end_offset: int
    """Byte offset just past the page."""
    first_packet_index: int
    """Index (0-based, in the stream) of the packet the page's data begins with or continues."""
    payload_head: bytes
    """The first bytes of the page's data, enough to recognise OpusHead/OpusTags and read the pre-skip."""


class OggPageReader:
    """Splits an Ogg byte stream into pages as the bytes arrive, in chunks of any size.

    One reader per stream; not thread-safe (feed it from the thread that reads the response)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._consumed = 0
        self._packets_ended = 0

    def feed(self, data: bytes) -> list[OggPage]:
        """Returns the pages `data` completes, in stream order; a partial page waits for the next call.
        Raises ValueError when the bytes are not Ogg framing."""
        self._buffer += data
        pages: list[OggPage] = []
        while (page := self._take_page()) is not None:
            pages.append(page)
        return pages

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete page held back (non-zero at the end of a stream means it was cut)."""
        return len(self._buffer)

    def _take_page(self) -> OggPage | None:
        buffer = self._buffer
        if len(buffer) < OGG_HEADER_BYTES:
            if buffer and not OGG_CAPTURE.startswith(bytes(buffer[:4])):
                raise ValueError(f"no Ogg capture pattern at byte {self._consumed}")
            return None
        if buffer[:4] != OGG_CAPTURE or buffer[4] != 0:
            raise ValueError(f"no Ogg page (version 0) at byte {self._consumed}")
        header_type = buffer[5]
        (granule,) = struct.unpack_from("<q", buffer, 6)
        segments = buffer[26]
        header_end = OGG_HEADER_BYTES + segments
        if len(buffer) < header_end:
            return None
        lacing = buffer[OGG_HEADER_BYTES:header_end]
        page_bytes = header_end + sum(lacing)
        if len(buffer) < page_bytes:
            return None
        page = OggPage(header_type, granule, self._consumed, self._consumed + page_bytes, self._packets_ended,
                       bytes(buffer[header_end:min(header_end + 32, page_bytes)]))
        # A lacing value below 255 ends a packet; a page may end inside one (continued on the next page).
        self._packets_ended += sum(1 for value in lacing if value < 255)
        self._consumed += page_bytes
        del buffer[:page_bytes]
        return page


def is_audio_page(page: OggPage) -> bool:
    """True for a page that begins after OpusHead and OpusTags (a page continuing OpusTags is a header page)."""
    return page.first_packet_index >= OPUS_HEADER_PACKETS


def opus_pre_skip(head_page: OggPage) -> int:
    """The pre-skip (48 kHz samples the decoder drops at the start) from the OpusHead page."""
    if head_page.first_packet_index != 0 or not head_page.payload_head.startswith(b"OpusHead"):
        raise ValueError("the first Ogg page does not hold OpusHead")
    (pre_skip,) = struct.unpack_from("<H", head_page.payload_head, 10)
    return pre_skip


class AudioMeter(Protocol):
    """Fed a response body chunk by chunk; tells whether audio samples have arrived and how much is playable."""

    def feed(self, data: bytes) -> None: ...

    @property
    def first_audio_offset(self) -> int | None:
        """Byte offset in the body where the first audio samples begin; None until they have arrived."""

    @property
    def audio_s(self) -> float:
        """Seconds of playable audio received so far."""


class WavMeter:
    """A 44-byte WAV header, then 16-bit mono samples. The sample rate is given (our `X-Sample-Rate` header) or,
    when None, read from the header's fmt chunk."""

    def __init__(self, sample_rate: int | None = None) -> None:
        self._sample_rate = sample_rate
        self._header = bytearray()
        self._received = 0

    def feed(self, data: bytes) -> None:
        if len(self._header) < WAV_HEADER_BYTES:
            self._header += data[:WAV_HEADER_BYTES - len(self._header)]
            if len(self._header) == WAV_HEADER_BYTES and self._sample_rate is None:
                if self._header[:4] != b"RIFF" or self._header[12:16] != b"fmt ":
                    raise ValueError("not a canonical 44-byte WAV header")
                (self._sample_rate,) = struct.unpack_from("<I", self._header, 24)
        self._received += len(data)

    @property
    def first_audio_offset(self) -> int | None:
        return WAV_HEADER_BYTES if self._received > WAV_HEADER_BYTES else None

    @property
    def audio_s(self) -> float:
        if self._sample_rate is None or self._received <= WAV_HEADER_BYTES:
            return 0.0
        return (self._received - WAV_HEADER_BYTES) // WAV_BYTES_PER_SAMPLE / self._sample_rate


class OggOpusMeter:
    """Ogg Opus: audio has arrived once the first page after the header pages is complete; the playable amount
    is the last completed page's granule position less the pre-skip, over 48 kHz."""

    def __init__(self) -> None:
        self._reader = OggPageReader()
        self._pre_skip: int | None = None
        self._first_audio_offset: int | None = None
        self._granule = 0

    def feed(self, data: bytes) -> None:
        for page in self._reader.feed(data):
            if self._pre_skip is None:
                self._pre_skip = opus_pre_skip(page)
            if self._first_audio_offset is None and is_audio_page(page):
                self._first_audio_offset = page.start_offset
            if page.granule_position != _NO_PACKET_ENDS:
                self._granule = max(self._granule, page.granule_position)

    @property
    def first_audio_offset(self) -> int | None:
        return self._first_audio_offset

    @property
    def audio_s(self) -> float:
        if self._first_audio_offset is None:
            return 0.0
        return max(0, self._granule - (self._pre_skip or 0)) / OPUS_GRANULE_RATE

    @property
    def pending_bytes(self) -> int:
        return self._reader.pending_bytes


@dataclass(frozen=True)
class Arrival:
    at_s: float
    """Seconds from sending the request to this chunk's arrival."""
    size: int
    """Bytes in the chunk."""
    audio_s: float | None
    """Playable audio received up to and including this chunk; None while no audio samples have arrived."""


@dataclass(frozen=True)
class Margin:
    worst_s: float
    """Min over time of (audio received − time since first audio); negative means playback would underrun."""
    at_s: float
    """When (from the request) the worst moment was: just before the chunk arriving then."""

    @property
    def realtime(self) -> bool:
        return self.worst_s >= 0


def worst_margin(arrivals: Sequence[Arrival]) -> Margin | None:
    """Playback starting at the first audio and running at real time: how close it came to running dry.

    Audio received only grows at arrivals while playback time grows steadily, so the worst moment is just before
    some arrival (or the first audio itself). Once the last chunk is in, playback can only finish, not starve.
    None when no audio arrived."""
    audio = [a for a in arrivals if a.audio_s is not None]
    if not audio:
        return None
    start = audio[0].at_s
    received = audio[0].audio_s or 0.0
    worst = Margin(received, start)
    for arrival in audio[1:]:
        before = received - (arrival.at_s - start)
        if before < worst.worst_s:
            worst = Margin(before, arrival.at_s)
        received = arrival.audio_s or 0.0
    return worst
