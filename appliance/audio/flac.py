"""FLAC output: FFmpeg's FLAC encoder (inside PyAV) in a native FLAC stream, sent frame by frame."""

from __future__ import annotations

from typing import Final

from appliance.audio.pyav import MuxedStreamEncoder

CONTENT_TYPE: Final = "audio/flac"


class FlacStreamEncoder(MuxedStreamEncoder):
    """Lossless, 16-bit. The STREAMINFO header leaves with the first frames, so its total sample count is 0
    ("unknown", as the FLAC format allows for streams) and its MD5 is unset; decoders play it to the end of the
    stream. Exactly as many samples come out as went in."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(container="flac", codec="flac", sample_rate=sample_rate, content_type=CONTENT_TYPE)
