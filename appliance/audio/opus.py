"""Ogg Opus output through libopusenc's pull API, flushed to whole Ogg pages on every call."""

from __future__ import annotations

import ctypes
import secrets
import weakref
from typing import Any, Final

import numpy as np

from appliance.audio import libopusenc as ope

CONTENT_TYPE: Final = "audio/ogg; codecs=opus"
_MONO: Final = 1
_MAPPING_FAMILY_MONO_STEREO: Final = 0


class OggOpusEncoder:
    """Mono Ogg Opus, fed at the voice's own rate (libopusenc resamples to 48 kHz itself).

    Latency: libopusenc by default holds 2 s of input back for encoder decisions (decision delay 96000 at
    48 kHz) and up to 1 s of packets before cutting a page (muxing delay). We set the decision delay to 0
    and ask for a page flush after every write, so each `encode()` returns Ogg pages for all audio fed so
    far except the last partial 20 ms frame, Opus's 6.5 ms look-ahead and the resampler's ~1 ms. The page cut per call
    costs ~28 bytes of Ogg framing per call, which is why the muxing delay is left alone.

    Not thread-safe: feed one encoder from one thread (or one executor job at a time).
    """

    def __init__(self, sample_rate: int, bitrate: int, complexity: int) -> None:
        self.sample_rate = sample_rate
        self.content_type = CONTENT_TYPE
        self._opus = ope.load()
        self._enc = _create_pull_encoder(self._opus, sample_rate)
        # Safety net for encoders dropped without close(); close() runs it too, and it runs at most once.
        self._finalizer = weakref.finalize(self, self._opus.ope_encoder_destroy, self._enc)
        self._finished = False
        # Out-parameters for ope_encoder_get_page, reused; the page memory belongs to libopusenc and is
        # valid only until the next call, so every page is copied out at once.
        self._page = ctypes.POINTER(ctypes.c_ubyte)()
        self._page_len = ctypes.c_int32()
        try:
            self._configure(bitrate, complexity)
            # Queues OpusHead and OpusTags now, so the first encode() returns them with the first audio.
            ope.check(self._opus, self._opus.ope_encoder_flush_header(self._enc), "flushing the header")
            # libopusenc 0.2.1 sets the stream's end position only in write calls; draining a stream that
            # never got one reads it uninitialised and can abort the process (assertion in
            # ope_encoder_drain). An empty write sets it, so finishing an utterance without audio is safe.
            self._write(np.zeros(1, dtype=np.float32)[:0])
        except BaseException:
            self.close()
            raise

    def encode(self, samples: np.ndarray) -> bytes:
        enc = self._live_encoder()
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono samples (1-D array), got shape {x.shape}")
        # Same clipping as PCM/WAV, so every format carries the same signal; NaN would upset the encoder.
        x = np.ascontiguousarray(np.clip(np.nan_to_num(x, nan=0.0), -1.0, 1.0))
        if len(x):
            self._write(x)
        return self._take_pages(enc)

    def finish(self) -> bytes:
        """Pads and encodes what is buffered and returns the last pages (the final one flagged EOS)."""
        if self._finished:
            return b""
        enc = self._live_encoder()
        try:
            ope.check(self._opus, self._opus.ope_encoder_drain(enc), "draining")
            return self._take_pages(enc)
        finally:
            self.close()

    def close(self) -> None:
        self._finished = True
        self._finalizer()

    def _write(self, samples: np.ndarray) -> None:
        pcm = samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        ope.check(self._opus, self._opus.ope_encoder_write_float(self._enc, pcm, len(samples)), "encoding")

    def _live_encoder(self) -> Any:
        if self._finished:
            raise RuntimeError("Opus encoder already finished or closed")
        return self._enc

    def _configure(self, bitrate: int, complexity: int) -> None:
        settings = [
            (ope.OPUS_SET_BITRATE_REQUEST, bitrate, "bitrate"),
            (ope.OPUS_SET_COMPLEXITY_REQUEST, complexity, "complexity"),
            # Clean synthetic speech: the general audio application (VoIP pre-processing is tuned for
            # noisy microphones) told the signal is voice, as opus-tools' `opusenc --speech` does.
            (ope.OPUS_SET_APPLICATION_REQUEST, ope.OPUS_APPLICATION_AUDIO, "application"),
            (ope.OPUS_SET_SIGNAL_REQUEST, ope.OPUS_SIGNAL_VOICE, "signal type"),
            # 20 ms is libopusenc's default, but 0.2.1 (Debian 12) leaves the field holding it uninitialised
            # unless it is set, and reads it while draining.
            (ope.OPUS_SET_EXPERT_FRAME_DURATION_REQUEST, ope.OPUS_FRAMESIZE_20_MS, "frame duration"),
            # Its lookahead mainly informs speech/music decisions, which the voice hint already settles.
            (ope.OPE_SET_DECISION_DELAY_REQUEST, 0, "decision delay"),
            # Padding is for editing tags in place in files; a stream would send 512 zero bytes up front.
            (ope.OPE_SET_COMMENT_PADDING_REQUEST, 0, "comment padding"),
            # libopusenc draws the Ogg serial from an unseeded rand(), so every process's first stream
            # gets 0x6b8b4567; distinct serials keep concatenated (chained) responses valid.
            (ope.OPE_SET_SERIALNO_REQUEST, secrets.randbits(31), "serial number"),
        ]
        for request, value, name in settings:
            ope.ctl_set(self._opus, self._enc, request, value, f"setting {name} to {value}")

    def _take_pages(self, enc: Any) -> bytes:
        pages: list[bytes] = []
        while True:
            # flush=1 closes the page under construction instead of waiting for the muxing delay.
            page, length = self._page, self._page_len
            got = self._opus.ope_encoder_get_page(enc, ctypes.byref(page), ctypes.byref(length), 1)
            if got < 0:
                raise RuntimeError(f"libopusenc: getting a page failed: {ope.error_text(self._opus, got)}")
            if got == 0:
                return b"".join(pages)
            pages.append(ctypes.string_at(page, length.value))


def _create_pull_encoder(opus: Any, sample_rate: int) -> Any:
    comments = opus.ope_comments_create()
    if not comments:
        raise RuntimeError("libopusenc: creating the comments failed: out of memory")
    error = ctypes.c_int(ope.OPE_OK)
    try:
        enc = opus.ope_encoder_create_pull(
            comments, sample_rate, _MONO, _MAPPING_FAMILY_MONO_STEREO, ctypes.byref(error)
        )
    finally:
        opus.ope_comments_destroy(comments)  # the encoder keeps its own copy
    if not enc:
        raise RuntimeError(
            f"libopusenc: creating an encoder at {sample_rate} Hz failed: {ope.error_text(opus, error.value)}"
        )
    return enc
