"""Where the fp16 flow loses accuracy: `python -m conversion.flow_study VOICE.onnx [--window 128 --context 32]`.

Prints the figures behind the conversion README's finding:
0. windowing alone: the flow in fp32 (CPU) in the NPU's fixed windows, with 16 and with 32 frames of context, on
   every verification sentence;
1. per layer: the toolkit's accuracy analysis of the flow in the simulator (fp16) against fp32 on one real
   window of a sentence, as SNR per tensor and the channel with the largest error;
2. per channel of the flow's output: how much of the audio error each channel's fp16 error causes (the flow
   output from the simulator, the decoder in fp32 on the CPU, so only the flow's error is measured);
3. the same error as white noise of the same size per channel, and the flow's output merely rounded to fp16:
   what the decoder does with errors that are not correlated;
4. the flow split into a CPU (fp32) and an NPU (fp16) segment at a coupling's output, on every verification
   sentence (decoder in fp32): how much of the flow can go to the NPU before the gate is missed.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from appliance.decoders.base import Feeds
from appliance.decoders.cpu_onnx import CpuStageBackend
from appliance.model.onnx_stage import OrtSettings
from appliance.model.piper_split import SplitVoice, StageGraph
from appliance.model.split_cache import load_split_voice
from appliance.synthesis.voice_runtime import LoadedVoice, SynthesisParams
from appliance.text.phoneme_ids import phonemes_to_ids
from appliance.text.phonemes import Phonemizer

from .audio_metrics import snr_db
from .compile_stage import SimulatedStage, compile_stage
from .convert import voice_files
from .verification import VERIFY_SENTENCES, verify

STUDY_SENTENCE = "Is it ready yet?"
"""The worst sentence of the verification with the flow on the NPU, and one window long: no windowing error."""


@dataclass(frozen=True)
class LayerError:
    op: str
    tensor: str
    snr_db: float
    max_abs: float
    worst_channel: int
    worst_channel_rms_error: float
    median_channel_rms_error: float


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conversion.flow_study", description=__doc__.split("\n")[0])
    parser.add_argument("voice", type=Path)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--context", type=int, default=32)
    parser.add_argument("--sentence", default=STUDY_SENTENCE)
    args = parser.parse_args(argv)
    files = voice_files(args.voice, None)
    split = load_split_voice(files.onnx_path, None)
    settings = OrtSettings(intra_op_threads=2)
    cpu_decoder = CpuStageBackend(split.decoder, settings, None, 8)
    voice = LoadedVoice(files, split, settings, cpu_decoder)
    ids = phonemes_to_ids(Phonemizer().sentences(args.sentence, files.config.espeak_voice)[0],
                          files.config.phoneme_id_map)
    latent = voice.encode(ids, SynthesisParams(None, files.config.length_scale, 0.0, 0.0), np.random.default_rng(0))
    print(f"0. windowing alone: the fp32 flow in fixed windows, worst / best of {len(VERIFY_SENTENCES)} sentences:")
    for window, context in ((96, 16), (128, 32)):
        flow = CpuStageBackend(split.flow, settings, window, context)
        snrs = [s.snr_db for s in verify(files, split, flow, cpu_decoder, VERIFY_SENTENCES, lambda _: None).sentences]
        worst = VERIFY_SENTENCES[int(np.argmin(snrs))]
        print(f"   {window} frames, {context} of context: {min(snrs):5.1f} / {max(snrs):5.1f}  (worst: {worst[:40]!r})")
    if latent.frames > args.window:
        parser.error(f"{args.sentence!r} is {latent.frames} frames: pick a sentence of one window")
    feeds = {**latent.source.frames(0, latent.frames), **latent.constants}
    window_feeds = {n: _pad(feeds[n], args.window) for n in split.flow.inputs}
    with tempfile.TemporaryDirectory(prefix="flow-study-") as folder:
        stage = compile_stage(split.flow, args.window, args.context, "rk3588", Path(folder) / "toolkit.log")
        try:
            layers = accuracy_by_layer(stage, window_feeds, Path(folder))
            npu_latent = stage.run(window_feeds)[..., : latent.frames]
        finally:
            stage.release()
    print(f"1. per layer, simulator fp16 against fp32, {args.sentence!r} ({latent.frames} frames):")
    for layer in layers:
        print(f"   {layer.op:8s} {layer.tensor[:58]:58s} {layer.snr_db:6.1f} dB  max |x| {layer.max_abs:7.2f}  "
              f"worst channel {layer.worst_channel:3d}: {layer.worst_channel_rms_error:.1e} "
              f"(median {layer.median_channel_rms_error:.1e})")
    flow = ort.InferenceSession(split.flow.model.SerializeToString(), providers=["CPUExecutionProvider"])
    exact = flow.run(None, window_feeds)[0][..., : latent.frames]
    print_channel_study(exact, npu_latent, lambda z: cpu_decoder.run({split.decoder.inputs[0]: z}).reshape(-1))
    print(f"4. the flow split at a coupling, worst of {len(VERIFY_SENTENCES)} sentences (dB), with the decoder in fp32"
          " / on the NPU too (48 frames):")
    with tempfile.TemporaryDirectory(prefix="flow-split-") as folder:
        npu_decoder = compile_stage(split.decoder, 48, 8, "rk3588", Path(folder) / "toolkit.log")
        try:
            for cut, npu_part, label in SPLITS:
                flow = SplitFlow(split, cut, npu_part, args.window, args.context, Path(folder))
                try:
                    worst = [verify(files, split, flow, decoder, VERIFY_SENTENCES, lambda _: None).worst_snr_db
                             for decoder in (cpu_decoder, npu_decoder)]
                finally:
                    flow.release()
                print(f"   {label:58s} {worst[0]:5.1f} / {worst[1]:5.1f}")
        finally:
            npu_decoder.release()
    return 0


SPLITS = (
    ("/flow/flows.2/Concat_output_0", "last", "NPU: the last coupling (flows.0), CPU: the three before"),
    ("/flow/flows.4/Concat_output_0", "last", "NPU: the last two couplings, CPU: the two before"),
    ("/flow/flows.6/Concat_output_0", "first", "NPU: the first coupling (flows.6), CPU: the three after"),
)
"""Cut at a coupling's output (Piper's reverse flow runs flows.7 down to flows.0; odd ones are channel flips)."""


class SplitFlow:
    """A flow backend made of an fp32 CPU segment and an fp16 NPU segment in the simulator, over the same fixed
    window: the study of a placement, not something the daemon runs."""

    name = "split"

    def __init__(self, split: SplitVoice, cut: str, npu_part: str, window: int, context: int, folder: Path) -> None:
        from onnx.utils import Extractor

        self.fixed_window, self.context = window, context
        self._inputs, self._cut, self._npu_first = split.flow.inputs, cut, npu_part == "first"
        mask = self._inputs[1]
        extractor = Extractor(split.flow.model)
        first = extractor.extract_model(list(self._inputs), [cut])
        second = extractor.extract_model([cut, mask], list(split.flow.outputs))
        npu_model, npu_inputs = (first, self._inputs) if self._npu_first else (second, (cut, mask))
        cpu_model = second if self._npu_first else first
        graph = StageGraph(f"flow-{npu_part}", npu_model, tuple(npu_inputs), (npu_model.graph.output[0].name,),
                           tuple(npu_inputs))
        self._npu = compile_stage(graph, window, context, "rk3588", folder / "toolkit.log")
        self._cpu = ort.InferenceSession(cpu_model.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(self, feeds: Feeds) -> np.ndarray:
        z, mask = (feeds[name] for name in self._inputs)
        mask_name = self._inputs[1]
        if self._npu_first:
            middle = self._npu.run({self._inputs[0]: z, mask_name: mask})
            return self._cpu.run(None, {self._cut: middle, mask_name: mask})[0]
        middle = self._cpu.run(None, {self._inputs[0]: z, mask_name: mask})[0]
        return self._npu.run({self._cut: middle, mask_name: mask})

    def release(self) -> None:
        self._npu.release()


def accuracy_by_layer(stage: SimulatedStage, feeds: dict[str, np.ndarray], folder: Path) -> list[LayerError]:
    """The toolkit's accuracy analysis (simulator against its fp32 'golden' run, every layer's output dumped as
    text), read back as SNR per tensor: its own table gives only cosines, which round to 1.00000 here."""
    paths = []
    for index, name in enumerate(stage.graph.inputs):
        path = folder / f"input{index}.npy"
        np.save(path, feeds[name].astype(np.float32))
        paths.append(str(path))
    snapshot = folder / "snapshot"
    if stage.rknn.accuracy_analysis(inputs=paths, output_dir=str(snapshot)) != 0:
        raise RuntimeError("accuracy_analysis failed")
    files = {}
    for line in (snapshot / "map_name_to_file.txt").read_text().splitlines()[2:]:
        parts = line.split()
        if len(parts) == 2:
            files[parts[0]] = parts[1]
    layers = []
    for line in (snapshot / "error_analysis.txt").read_text().splitlines():
        match = re.match(r"\[(\w+)\] (\S+)", line)
        if not match or match.group(2) not in files:
            continue
        golden_path, simulated_path = (snapshot / kind / files[match.group(2)] for kind in ("golden", "simulator"))
        if not golden_path.exists() or not simulated_path.exists():
            continue
        golden, simulated = np.loadtxt(golden_path), np.loadtxt(simulated_path)
        if golden.size != simulated.size or golden.size % stage.window:
            continue
        error = (golden - simulated).reshape(-1, stage.window)
        per_channel = np.sqrt(np.mean(error**2, axis=1))
        worst = int(np.argmax(per_channel))
        layers.append(LayerError(match.group(1), match.group(2), snr_db(golden, simulated), float(np.abs(golden).max()),
                                 worst, float(per_channel[worst]), float(np.median(per_channel))))
    return layers


def print_channel_study(exact: np.ndarray, npu: np.ndarray, decode) -> None:
    reference = decode(exact)
    error = npu - exact
    per_channel = np.sqrt(np.mean(error[0] ** 2, axis=1))
    order = np.argsort(-per_channel)
    print(f"2. the flow's output: {snr_db(exact, npu):.1f} dB; audio with it (fp32 decoder): "
          f"{snr_db(reference, decode(npu)):.1f} dB")
    for index in order[:6]:
        print(f"   channel {index:3d}: error rms {per_channel[index]:.1e}, values {exact[0, index].mean():+.2f} "
              f"± {exact[0, index].std():.2f}, max |x| {np.abs(exact[0, index]).max():.1f}")
    for count in (1, 3, 10, 30):
        only, without = exact.copy(), npu.copy()
        only[:, order[:count]] = npu[:, order[:count]]
        without[:, order[:count]] = exact[:, order[:count]]
        print(f"   the NPU's error on the worst {count:2d} channels only: {snr_db(reference, decode(only)):5.1f} dB; "
              f"on all but them: {snr_db(reference, decode(without)):5.1f} dB")
    noise = np.random.default_rng(1).standard_normal(exact.shape).astype(np.float32) * per_channel[None, :, None]
    rounded = exact.astype(np.float16).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(error[0], axis=1)) ** 2
    low = float(spectrum[:, : spectrum.shape[1] // 8].sum() / spectrum.sum())
    print(f"3. white noise of the same rms per channel: {snr_db(reference, decode(exact + noise)):.1f} dB; the flow's "
          f"output only rounded to fp16: {snr_db(reference, decode(rounded)):.1f} dB; share of the NPU error's energy "
          f"in the lowest eighth of frequencies along time: {low:.2f} (white: 0.12)")


def _pad(tensor: np.ndarray, length: int) -> np.ndarray:
    if tensor.shape[-1] in (1, length):
        return tensor
    return np.pad(tensor, [(0, 0)] * (tensor.ndim - 1) + [(0, length - tensor.shape[-1])])


if __name__ == "__main__":
    raise SystemExit(main())
