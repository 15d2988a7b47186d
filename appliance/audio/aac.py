"""AAC output: FFmpeg's AAC-LC encoder (inside PyAV) in an ADTS stream, sent frame by frame."""

from __future__ import annotations

from typing import Final

from appliance.audio.pyav import MuxedStreamEncoder

CONTENT_TYPE: Final = "audio/aac"
BITRATE: Final = 64_000
"""64 kbit/s AAC-LC, mono: clean for one synthetic voice."""


class AacStreamEncoder(MuxedStreamEncoder):
    """ADTS: every AAC frame (1024 samples) carries its own small header, so the stream plays from any frame and
    needs nothing at its end (an MP4/M4A file would need its index, written last). Decoders play the encoder's
    priming (1024 samples) as silence before the speech and pad the end to a whole frame."""

    def __init__(self, sample_rate: int, bitrate: int = BITRATE) -> None:
        super().__init__(container="adts", codec="aac", sample_rate=sample_rate, content_type=CONTENT_TYPE,
                         bit_rate=bitrate)
