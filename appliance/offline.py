"""`appliance say`: the daemon's engine, writing one file instead of serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from .audio.formats import AudioFormat, EncoderSettings, make_encoder
from .audio.wav import wav_bytes
from .config import ApplianceConfig
from .synthesis.loading import load_engine
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
            prepared = engine.prepare(SynthesisRequest(text=text, voice=voice, speaker=speaker, seed=seed))
        except RequestError as e:
            raise ValueError(e.message) from None
        rate = prepared.voice.config.sample_rate
        chunks = [chunk.samples async for chunk in engine.stream(prepared)]
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if audio_format is AudioFormat.WAV:
            output.write_bytes(wav_bytes(samples, rate))  # a file: real sizes in the header
        else:
            encoder = make_encoder(audio_format, rate, EncoderSettings(opus_bitrate=config.audio.opus_bitrate))
            output.write_bytes(encoder.encode(samples) + encoder.finish())
        return len(samples) / rate
    finally:
        engine.close()
