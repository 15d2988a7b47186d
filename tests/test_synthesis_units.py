"""Whatever text a client sends, it is spoken in bounded units: no espeak-ng call and no encoder call is large,
no word is lost or reordered, and sentence ends stay unit ends."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.text.sentences import SentenceBuffer, text_pieces, text_units
from appliance.text.units import MAX_UNIT_CHARS, MAX_UNIT_PHONEMES, phoneme_units
from appliance.text.validation import InvalidText, clean_text

# Words, spaces, sentence and clause punctuation, CJK, a combining accent: what the cuts care about.
ALPHABET = st.sampled_from([*"abcdefxyz      ,;:.!?—-\n\"'。，、你好é", "\u0301"])
TEXTS = st.text(ALPHABET, max_size=3000)
SMALL_CAP = st.integers(min_value=8, max_value=120)


def squeezed(text: str) -> str:
    return "".join(text.split())


@given(TEXTS, SMALL_CAP)
def test_every_unit_fits_the_cap_and_nothing_is_lost_or_reordered(text: str, cap: int) -> None:
    units = list(text_units(text, cap))
    assert all(0 < len(u) <= cap for u in units)
    assert squeezed("".join(units)) == squeezed(text)


@given(st.lists(st.text("abcxyz", min_size=1, max_size=12), max_size=400), SMALL_CAP)
def test_words_shorter_than_the_cap_are_never_cut(words: list[str], cap: int) -> None:
    text = " ".join(words)
    assert " ".join(text_units(text, max(cap, 12))).split() == words


@given(TEXTS, SMALL_CAP)
def test_units_never_span_a_sentence_end(text: str, cap: int) -> None:
    units = list(text_units(text, cap))
    assert units == [u for piece in text_pieces(text) for u in text_units(piece, cap)]
    assert all(list(text_pieces(u)) == [u] for u in units)


def test_a_long_sentence_is_cut_at_its_last_comma_within_the_cap() -> None:
    sentence = "When the rain stops, " * 20 + "we go out."
    units = list(text_units(sentence))
    assert all(u.endswith(",") for u in units[:-1]) and units[-1].endswith("we go out.")
    assert max(map(len, units)) <= MAX_UNIT_CHARS


def test_an_unpunctuated_text_is_cut_between_words_with_nothing_appended() -> None:
    units = list(text_units("la " * 1000))
    assert all(u.startswith("la") and u.endswith("la") for u in units)
    assert " ".join(units).split() == ["la"] * 1000


def test_a_word_longer_than_the_cap_is_split() -> None:
    units = list(text_units("super" * 700))
    assert "".join(units) == "super" * 700 and max(map(len, units)) == MAX_UNIT_CHARS


@given(st.lists(st.sampled_from(list("abəˈː ,.")), max_size=2000), st.integers(min_value=4, max_value=200))
def test_phonemes_are_cut_to_the_cap_keeping_their_order(phonemes: list[str], cap: int) -> None:
    units = phoneme_units(phonemes, cap)
    assert all(0 < len(u) <= cap for u in units)
    assert [p for u in units for p in u if p != " "] == [p for p in phonemes if p != " "]


def test_a_long_number_is_cut_at_phoneme_word_spaces() -> None:
    word = list("wˈʌnhˈʌndɹɪd ")  # espeak-ng's "one hundred", as a part of a long number
    units = phoneme_units(word * 100)
    assert max(map(len, units)) <= MAX_UNIT_PHONEMES
    words = ["".join(u).split() for u in units]
    assert all(w == ["wˈʌnhˈʌndɹɪd"] * len(w) for w in words) and sum(map(len, words)) == 100


@given(st.lists(st.text(ALPHABET, max_size=40), max_size=200))
def test_streamed_text_is_handed_out_in_bounded_units_and_loses_nothing(chunks: list[str]) -> None:
    buffer = SentenceBuffer(max_chars=50)
    received, handed = "", []
    for chunk in chunks:
        received += chunk
        handed.append(buffer.add(chunk))
        assert len(received[len("".join(handed)):].strip()) <= 50  # never holds more than a unit
    handed.append(buffer.flush())
    assert "".join(handed) == "".join(chunks)


def test_an_unpunctuated_stream_starts_speaking_once_a_unit_has_arrived() -> None:
    buffer = SentenceBuffer()
    handed = [(i, buffer.add("la ")) for i in range(1000)]
    first = next(i for i, ready in handed if ready)
    assert (first + 1) * 3 <= MAX_UNIT_CHARS + 6
    assert all(ready.strip().endswith("la") for _, ready in handed if ready)


@settings(max_examples=200)
@given(st.text())
def test_control_characters_become_spaces_and_lone_surrogates_are_refused(text: str) -> None:
    try:
        cleaned = clean_text(text)
    except InvalidText as e:
        assert 0xD800 <= ord(text[e.position]) <= 0xDFFF
        return
    assert len(cleaned) == len(text)
    assert all(c in "\t\n\r" or not (ord(c) < 32 or 0x7F <= ord(c) <= 0x9F) for c in cleaned)
    cleaned.encode()  # espeak-ng gets UTF-8


def test_a_lone_surrogate_is_named_by_its_position() -> None:
    try:
        clean_text("Hi \ud800 there.")
    except InvalidText as e:
        assert e.position == 3 and "U+D800" in str(e)
    else:
        raise AssertionError("a lone surrogate was accepted")
