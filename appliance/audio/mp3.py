"""MP3 output: LAME (libmp3lame, inside PyAV's FFmpeg) in a bare MPEG audio stream, sent frame by frame."""

from __future__ import annotations

from typing import Final

from appliance.audio.pyav import MuxedStreamEncoder

CONTENT_TYPE: Final = "audio/mpeg"
BITRATE: Final = 64_000
"""Constant 64 kbit/s: clean for one synthetic voice at a Piper voice's 16-24 kHz (MPEG-2 Layer III)."""


class Mp3StreamEncoder(MuxedStreamEncoder):
    """Consecutive MP3 frames, playable from any frame on. No ID3 tag and no Xing/LAME header (that header
    describes the whole file, which a stream does not know yet), so decoders play LAME's encoder delay
    (~1,100 samples, ~50 ms at 22.05 kHz) as silence before the speech and pad the end to a whole frame."""

    def __init__(self, sample_rate: int, bitrate: int = BITRATE) -> None:
        super().__init__(container="mp3", codec="libmp3lame", sample_rate=sample_rate, content_type=CONTENT_TYPE,
                         bit_rate=bitrate, muxer_options={"id3v2_version": "0", "write_xing": "0"})
