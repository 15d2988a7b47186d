"""`appliance say`: the daemon's engine and output pipeline, writing one file instead of serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .audio.formats import AudioFormat, EncoderSettings
from .audio.wav import HEADER_BYTES, wav_header
from .config import ApplianceConfig
from .subtitles import check_subtitle_path, write_subtitles
from .synthesis.loading import load_engine
from .synthesis.output import play
from .synthesis.request import RequestError, SynthesisRequest
from .synthesis.word_timings import WordTiming

SUFFIX_FORMATS = {".ogg": AudioFormat.OPUS, ".opus": AudioFormat.OPUS, ".wav": AudioFormat.WAV,
                  ".pcm": AudioFormat.PCM, ".raw": AudioFormat.PCM}


async def synthesize_to_file(config: ApplianceConfig, text: str, output: Path, voice: str | None = None,
                             speaker: str | None = None, seed: int | None = None,
                             subtitles: Path | None = None) -> float:
    """Writes the audio (and, with `subtitles`, its words as WebVTT or SRT); returns its duration in seconds.
    ValueError for a bad request or file name."""
    audio_format = SUFFIX_FORMATS.get(output.suffix.lower())
    if audio_format is None:
        raise ValueError(f"unknown output type {output.suffix!r}; use one of {sorted(SUFFIX_FORMATS)}")
    if subtitles is not None:
        check_subtitle_path(subtitles)
    words: list[WordTiming] = []

    async def keep_words(timed: tuple[WordTiming, ...]) -> None:
        words.extend(timed)
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

            stats = await play(engine, prepared, write, EncoderSettings(opus_bitrate=config.audio.opus_bitrate),
                               words_sink=keep_words if subtitles is not None else None)
            if audio_format is AudioFormat.WAV:  # a file, not a stream: real sizes in the header
                file.seek(0)
                file.write(wav_header(prepared.facts.sample_rate, stats.bytes_sent - HEADER_BYTES))
        if subtitles is not None:
            write_subtitles(subtitles, words)
        return stats.audio_seconds
    finally:
        engine.close()
