"""Audio output encoders: Ogg Opus, streaming WAV and raw PCM, fed window by window."""

from appliance.audio.formats import AudioEncoder, AudioFormat, EncoderSettings, make_encoder
from appliance.audio.wav import wav_bytes

__all__ = ["AudioEncoder", "AudioFormat", "EncoderSettings", "make_encoder", "wav_bytes"]
