"""Where text becomes phoneme ids: sentences, espeak-ng phonemes, Piper's id encoding."""
