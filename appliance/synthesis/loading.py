"""Start-up: find the voices, split them (cached), choose each one's decoder backend, warm them up."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..config import ApplianceConfig
from ..decoders.npu_detect import NpuProbe, probe_npu
from ..decoders.selection import choose_backends
from ..model.onnx_stage import OrtSettings
from ..model.split_cache import load_split_voice
from ..voices.catalog import discover_voices
from .engine import SpeechEngine
from .phrase_cache import PhraseCache, cache_max_bytes
from .request import SynthesisRequest
from .voice_runtime import LoadedVoice, WindowSettings

log = logging.getLogger(__name__)

WARMUP_TEXT = "Ready."


def load_engine(config: ApplianceConfig, npu: NpuProbe | None = None) -> SpeechEngine:
    """Blocking (seconds): run it off the event loop. `npu`: what the board offers (probed if not given)."""
    if npu is None:
        npu = probe_npu() if config.npu.enabled else NpuProbe(False, "NPU disabled in the configuration")
    log.info("NPU: %s", npu.reason)
    found = discover_voices(config.voices.folder)
    if config.voices.default not in found:
        raise ValueError(f"default voice {config.voices.default!r} not found; have {sorted(found)}")
    cache = split_cache_folder(config.service.state_folder)
    ort_settings = OrtSettings(intra_op_threads=config.synthesis.onnx_threads)
    windows = WindowSettings(config.synthesis.first_window_frames, config.synthesis.max_window_frames)
    voices: dict[str, LoadedVoice] = {}
    reasons = {}
    try:  # a failure part way releases the NPU runtimes taken so far
        for name, files in found.items():
            split = load_split_voice(files.onnx_path, cache, files.onnx_sha256)
            choice = choose_backends(files, split, ort_settings, config.npu, npu)
            try:
                voices[name] = LoadedVoice(files, split, ort_settings, choice.decoder, flow=choice.flow,
                                           windows=windows, cpu_fallback=choice.backend != "cpu")
            except BaseException:
                choice.close()
                raise
            reasons[name] = choice.reason
            log.info("voice %s loaded (%d Hz, %d speaker(s)); decoder on %s: %s", name, files.config.sample_rate,
                     files.config.num_speakers, choice.backend, choice.reason)
    except BaseException:
        for voice in voices.values():
            voice.close()
        raise
    npu_cores = max((len(getattr(v.decoder, "cores", ())) for v in voices.values()), default=0)
    engine = SpeechEngine(voices, config.voices.default, config.synthesis, config.server.max_text_chars,
                          backend_reasons=reasons, npu_cores=npu_cores, phrase_cache=phrase_cache(config))
    log.info("admitting %d concurrent stream(s); a request waits up to %.1f s for one",
             engine.admission.max_streams, engine.admission.queue_s)
    try:
        for voice in voices.values():
            warm_up(engine, voice)
    except BaseException:
        engine.close()
        raise
    return engine


def warm_up(engine: SpeechEngine, voice: LoadedVoice) -> None:
    """One short sentence through every stage, so the first client does not pay for lazy initialisation."""
    prepared = engine.prepare(SynthesisRequest(text=WARMUP_TEXT, voice=voice.name, seed=0))
    ids = engine.sentence_ids(voice, prepared.text)[0]
    voice.start_request(prepared.params, prepared.seed).sentence_audio(ids)


def phrase_cache(config: ApplianceConfig) -> PhraseCache | None:
    """The phrase cache in `<state_folder>/phrase-cache`; None when it is off or the folder cannot be made."""
    if not config.cache.enabled:
        return None
    folder = config.service.state_folder / "phrase-cache"
    try:
        return PhraseCache(folder, cache_max_bytes(config.cache.max_mb))
    except OSError as e:
        log.warning("phrase cache off: %s", e)
        return None


def split_cache_folder(state_folder: Path) -> Path | None:
    """Split models are cached in the state folder, or the user's cache folder where that is not writable."""
    for folder in (state_folder / "split-cache", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                   / "appliance" / "split-cache"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    return None
