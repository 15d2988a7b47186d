"""One request's synthesis: a sentence's audio depends only on the seed and the sentence (not on where it
stands or how its windows were scheduled), and a lone request decodes on every inference worker at once."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.request import SynthesisRequest

KETTLE = "The kettle is on, so the tea will be ready in a minute."
CUPS = "Bring two cups and the biscuits from the blue tin on the shelf."
PARAGRAPH = " ".join([KETTLE, CUPS] * 3)


async def speak(engine: SpeechEngine, text: str, seed: int) -> np.ndarray:
    prepared = engine.prepare(SynthesisRequest(text=text, seed=seed))
    return np.concatenate([chunk.samples async for chunk in engine.stream(prepared)])


async def test_a_sentence_gives_the_same_samples_wherever_it_stands(engine: SpeechEngine) -> None:
    kettle, cups = await speak(engine, KETTLE, 7), await speak(engine, CUPS, 7)
    kettle_first = await speak(engine, f"{KETTLE} {CUPS}", 7)
    cups_first = await speak(engine, f"{CUPS} {KETTLE}", 7)

    assert np.array_equal(kettle_first, np.concatenate([kettle, cups]))
    assert np.array_equal(cups_first, np.concatenate([cups, kettle]))
    assert not np.array_equal(await speak(engine, KETTLE, 8), kettle), "another seed, other noise"


class ConcurrencyMeter:
    """Wraps a decoder backend and records how many of its windows ran at the same moment."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.name, self.fixed_window, self.context = backend.name, backend.fixed_window, backend.context
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def run(self, feeds):
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.01)  # each window long enough to overlap whatever runs beside it
            return self.backend.run(feeds)
        finally:
            with self._lock:
                self.running -= 1


async def test_a_lone_request_decodes_on_every_worker_and_keeps_its_order(
    engine: SpeechEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    voice = engine.voices[engine.default_voice]
    reference = await speak(engine, PARAGRAPH, 3)
    meter = ConcurrencyMeter(voice.decoder)
    monkeypatch.setattr(voice, "decoder", meter)

    parallel = await speak(engine, PARAGRAPH, 3)

    assert meter.most == engine.inference_threads >= 2
    assert np.array_equal(parallel, reference), "windows decoded in parallel are emitted in order"
