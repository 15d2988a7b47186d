"""Text becomes exactly the phoneme ids Piper itself would feed the model."""

from __future__ import annotations

import pytest
from piper import PiperVoice

from appliance.text.phoneme_ids import phonemes_to_ids
from appliance.text.phonemes import Phonemizer
from appliance.voices.catalog import bundled_default_voice

SENTENCES = [
    "Hello world.",
    "The quick brown fox jumps over the lazy dog!",
    "I paid $12.50 for 3 coffees at 5:30.",
    "Dr. Smith lives on St. James Street, doesn't she?",
    "Naïve café owners wrote “quotes” — and dashes… then stopped.",
    "Read the README, then e-mail info@example.com; it's 100% free.",
]

# piper-tts 1.8 bundles a newer espeak-ng than piper-phonemize 1.1.0 (which the appliance uses, as issued);
# their dictionaries differ on a few words. Each difference is spelled out, so any other one fails the test.
ESPEAK_VERSION_DIFFERENCES = {
    "Is it 5:30 pm already? I paid $12.50 for 3 coffees.": [("pˌiːʲˈɛm", "pˌiːˈɛm")],
    "One. Two! Three? Four; five: six.": [("fˈɔːɹ", "fˈoːɹ")],
}


@pytest.fixture(scope="module")
def piper_voice() -> PiperVoice:
    voice = bundled_default_voice()
    return PiperVoice.load(voice.onnx_path, config_path=voice.config_path)


@pytest.mark.parametrize("text", SENTENCES)
def test_our_phoneme_ids_equal_pipers(text: str, piper_voice: PiperVoice) -> None:
    voice = bundled_default_voice()
    ours = [phonemes_to_ids(p, voice.config.phoneme_id_map)
            for p in Phonemizer().sentences(text, voice.config.espeak_voice)]
    theirs = [piper_voice.phonemes_to_ids(p) for p in piper_voice.phonemize(text)]
    assert ours == theirs


@pytest.mark.parametrize("text", sorted(ESPEAK_VERSION_DIFFERENCES))
def test_where_espeak_versions_differ_only_the_known_words_differ(text: str, piper_voice: PiperVoice) -> None:
    ours = ["".join(p) for p in Phonemizer().sentences(text, "en-us")]
    theirs = ["".join(p) for p in piper_voice.phonemize(text)]
    assert ours != theirs
    for newer, older in ESPEAK_VERSION_DIFFERENCES[text]:
        theirs = [s.replace(newer, older) for s in theirs]
    assert ours == theirs


@pytest.mark.parametrize("text", SENTENCES + sorted(ESPEAK_VERSION_DIFFERENCES))
def test_same_phonemes_encode_to_the_same_ids(text: str, piper_voice: PiperVoice) -> None:
    id_map = bundled_default_voice().config.phoneme_id_map
    for phonemes in piper_voice.phonemize(text):
        assert phonemes_to_ids(phonemes, id_map) == piper_voice.phonemes_to_ids(phonemes)


def test_ids_frame_every_phoneme_with_pad_between() -> None:
    id_map = {"^": [1], "$": [2], "_": [0], "a": [5], "b": [6]}
    assert phonemes_to_ids(["a", "b"], id_map) == [1, 0, 5, 0, 6, 0, 2]


def test_unknown_phonemes_are_skipped_like_piper() -> None:
    id_map = {"^": [1], "$": [2], "_": [0], "a": [5]}
    assert phonemes_to_ids(["a", "☃", "a"], id_map) == [1, 0, 5, 0, 5, 0, 2]
