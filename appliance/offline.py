"""`appliance say`: the daemon's engine and output pipeline, writing one file instead of serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .audio.formats import AudioFormat, EncoderSettings
from .audio.wav import HEADER_BYTES, wav_header
from .config import ApplianceConfig
from .synthesis.loading import load_engine
from .synthesis.output import play
from .synthesis.request import RequestError, SynthesisRequest

SUFFIX_FORMATS = {".ogg": AudioFormat.OPUS, ".opus": AudioFormat.OPUS, ".wav": AudioFormat.WAV,
                  ".pcm": AudioFormat.PCM, ".raw": AudioFormat.PCM}


async def synthesize_to_file(config: ApplianceConfig, text: str, output: Path, voice: str | None = None,
                             speaker: str | None = None, seed: int | None = None) -> float:
    """Writes the audio; returns its duration in seconds. ValueError for a bad request or file name."""
    audio_format = SUFFIX_FORMATS.get(output.suffix.lower())
    if audio_format is None:
        raise ValueError(f"unknown output type {output.suffix!r}; use one of {sorted(SUFFIX_FORMATS)}")
    engine = await asyncio.to_thread(load_engine, config)
    try:
        try:
            request = SynthesisRequest(text=text, voice=voice, speaker=speaker, seed=seed)
            prepared = engine.prepare(request, audio_format, transport="cli")
        except RequestError as e:
            raise ValueError(e.message) from None
        with output.open("wb") as file:
            async def write(data: bytes) -> None:
                file.write(data)

            stats = await play(engine, prepared, write, EncoderSettings(opus_bitrate=config.audio.opus_bitrate))
            if audio_format is AudioFormat.WAV:  # a file, not a stream: real sizes in the header
                file.seek(0)
                file.write(wav_header(prepared.facts.sample_rate, stats.bytes_sent - HEADER_BYTES))
        return stats.audio_seconds
    finally:
        engine.close()
