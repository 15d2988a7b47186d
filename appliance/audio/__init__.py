"""Audio output encoders fed window by window: Ogg Opus, streaming WAV, raw PCM, and MP3, AAC and FLAC (FFmpeg)."""

from appliance.audio.formats import AudioEncoder, AudioFormat, EncoderSettings, make_encoder
from appliance.audio.wav import wav_bytes

__all__ = ["AudioEncoder", "AudioFormat", "EncoderSettings", "make_encoder", "wav_bytes"]
