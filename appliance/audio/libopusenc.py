"""Access to libopusenc through pyogg's ctypes bindings, and the few C constants we use.

pyogg is imported here, lazily, and nowhere else: importing it has two side effects we contain.
- Its library loader appends `;cwd;pyogg-dir` to PATH once per library it loads (Windows separators),
  which on Linux fuses onto the last PATH entry and silently drops it (e.g. `/usr/bin` under systemd).
  We restore PATH after the import.
- It binds the libopusenc functions only if libopus, libopusfile *and* libopusenc all load, so a missing
  libopusfile0 also means "no encoder".
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Final

# From opus_defines.h / opusenc.h. pyogg's own OPE_* error constants do not match opusenc.h, so errors
# are reported through ope_strerror() only.
OPUS_SET_APPLICATION_REQUEST: Final = 4000
OPUS_SET_BITRATE_REQUEST: Final = 4002
OPUS_SET_COMPLEXITY_REQUEST: Final = 4010
OPUS_SET_SIGNAL_REQUEST: Final = 4024
OPUS_SET_EXPERT_FRAME_DURATION_REQUEST: Final = 4040
OPUS_FRAMESIZE_20_MS: Final = 5004
OPUS_APPLICATION_AUDIO: Final = 2049
OPUS_SIGNAL_VOICE: Final = 3001
OPE_SET_DECISION_DELAY_REQUEST: Final = 14000
OPE_SET_COMMENT_PADDING_REQUEST: Final = 14004
OPE_SET_SERIALNO_REQUEST: Final = 14006
OPE_OK: Final = 0

OPUS_RATE: Final = 48000
"""Opus always codes at 48 kHz; granule positions and pre-skip count 48 kHz samples."""

_DEBIAN_PACKAGES: Final = "libopus0 libopusfile0 libopusenc0 libogg0"


def load() -> Any:
    """pyogg's opus module with libopusenc bound; RuntimeError naming the packages if it is not."""
    saved_path = os.environ.get("PATH")
    # pyogg does `PATH += ...` and swallows the KeyError if PATH is unset, then binds nothing.
    os.environ.setdefault("PATH", os.defpath)
    try:
        import pyogg.opus as opus
    except ImportError as exc:
        raise RuntimeError("Opus output needs the pyogg package (pip install pyogg==0.6.14a1)") from exc
    finally:
        if saved_path is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = saved_path
    if not getattr(opus, "PYOGG_OPUS_ENC_AVAIL", False) or not hasattr(opus, "ope_encoder_create_pull"):
        needs = "Opus output needs libopusenc, libopus and libopusfile"
        raise RuntimeError(f"{needs} (Debian: apt-get install {_DEBIAN_PACKAGES})")
    return opus


def error_text(opus: Any, code: int) -> str:
    text = opus.ope_strerror(code)
    return f"{text.decode(errors='replace') if text else 'unknown error'} ({code})"


def check(opus: Any, code: int, what: str) -> None:
    if code != OPE_OK:
        raise RuntimeError(f"libopusenc: {what} failed: {error_text(opus, code)}")


def ctl_set(opus: Any, enc: Any, request: int, value: int, what: str) -> None:
    """Calls the variadic ope_encoder_ctl(enc, request, opus_int32 value).

    pyogg declares only the two fixed arguments; the value is passed as an explicit c_int32 because the C
    side reads it with va_arg(ap, opus_int32). (Fine on Linux x86-64 and aarch64, where variadic integer
    arguments travel like fixed ones.)
    """
    check(opus, opus.ope_encoder_ctl(enc, request, ctypes.c_int32(value)), what)
