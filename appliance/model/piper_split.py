"""Cut a released Piper (VITS) ONNX voice into stages, with cut points found from the graph:

    text encoder + durations (+ sampling)  ->  flow  ->  HiFi-GAN decoder
    [run whole per sentence, CPU]              [windowed: CPU, or NPU at a fixed window]

The random draws are lifted out as inputs so that the noise comes from a seeded generator, and every random
draw starts a new prelude stage: its shape is known only once the stage before it has run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import onnx
from onnx import shape_inference

from .graph_cut import (
    GraphIndex,
    LiftedNoise,
    TensorInfo,
    extract,
    lift_random_nodes,
    minimal_inputs,
    tensor_infos,
)

FLOW_SCOPE: Final = "/flow/"
DECODER_SCOPE: Final = "/dec/"


@dataclass(frozen=True)
class StageGraph:
    name: str
    model: onnx.ModelProto
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    framed_inputs: tuple[str, ...] = ()
    """Inputs with a time axis last ([1, C, T]); the others (e.g. a speaker embedding) are per utterance."""


@dataclass(frozen=True)
class SplitVoice:
    prelude: tuple[StageGraph, ...]
    """Text encoder, duration predictor and sampling: run whole, once per sentence."""
    flow: StageGraph
    decoder: StageGraph
    noises: tuple[LiftedNoise, ...]
    model_inputs: tuple[str, ...]
    """The original model's inputs: input, input_lengths, scales and (multi-speaker voices) sid."""
    durations: str
    """The duration predictor's rounded output, frames per phoneme id ([1, 1, ids]): an output of the prelude
    stage that computes it, so word timings need no stage after it."""

    @property
    def stages(self) -> tuple[StageGraph, ...]:
        return (*self.prelude, self.flow, self.decoder)


class NotAPiperVoiceError(ValueError):
    """The ONNX graph does not have the structure of a Piper (VITS) voice."""


def split_piper_voice(model: onnx.ModelProto) -> SplitVoice:
    with _recursion_head_room(20_000):
        return _split(model)


@contextmanager
def _recursion_head_room(limit: int) -> Iterator[None]:
    """Deep models: the recursive graph walks in onnx's shape inference and ours need head room. The limit is
    the process's, so it is put back afterwards: the daemon behaves the same with a warm or a cold cache."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def _split(model: onnx.ModelProto) -> SplitVoice:
    lifted_model, noises = lift_random_nodes(model)
    # onnx's Extractor reads the shapes stored in the model (onnx >= 1.17 no longer infers them), and newer
    # torch exporters store none: infer them once, so every cut point has a value_info.
    lifted_model = shape_inference.infer_shapes(lifted_model)
    index = GraphIndex(lifted_model)
    try:
        flow_inputs = index.module_inputs(FLOW_SCOPE)
        decoder_inputs = index.module_inputs(DECODER_SCOPE)
    except ValueError as e:
        raise NotAPiperVoiceError(f"not a Piper voice: {e}") from e
    if len(model.graph.output) != 1:
        raise NotAPiperVoiceError("not a Piper voice: expected one output (audio)")
    audio = model.graph.output[0].name
    noise_names = {n.input_name for n in noises}
    model_inputs = tuple(i for i in index.graph_inputs if i not in noise_names)
    infos = tensor_infos(lifted_model)
    durations = _durations_tensor(index, flow_inputs)

    def framed(names: list[str]) -> tuple[str, ...]:
        # Time is the last axis of a framed tensor; a per-utterance tensor has a static last axis.
        return tuple(n for n in names if not isinstance(infos[n].shape[-1:] and infos[n].shape[-1], int))

    prelude = _prelude_stages(lifted_model, index, list(model_inputs), list(noises), flow_inputs, infos, durations)
    flow_graph = extract(lifted_model, flow_inputs, decoder_inputs, infos)
    decoder_graph = extract(lifted_model, decoder_inputs, [audio], infos)
    flow = StageGraph("flow", flow_graph, tuple(flow_inputs), tuple(decoder_inputs), framed(flow_inputs))
    decoder = StageGraph("decoder", decoder_graph, tuple(decoder_inputs), (audio,), framed(decoder_inputs))
    if len(flow.framed_inputs) < 1 or len(decoder.framed_inputs) != 1:
        raise NotAPiperVoiceError("not a Piper voice: flow/decoder inputs have no time axis")
    return SplitVoice(tuple(prelude), flow, decoder, tuple(noises), model_inputs, durations)


def _durations_tensor(index: GraphIndex, flow_inputs: list[str]) -> str:
    """VITS rounds the predicted durations up (`w_ceil = ceil(exp(logw) * mask * length_scale)`) before laying
    the phonemes out in frames: the one Ceil node the flow's inputs depend on."""
    ceils = [index.nodes[i] for i in sorted(index.upstream(flow_inputs)) if index.nodes[i].op_type == "Ceil"]
    if len(ceils) != 1:
        raise NotAPiperVoiceError(f"not a Piper voice: expected one Ceil (durations) before the flow, "
                                  f"found {len(ceils)}")
    return ceils[0].output[0]


def _prelude_stages(
    model: onnx.ModelProto,
    index: GraphIndex,
    model_inputs: list[str],
    noises: list[LiftedNoise],
    targets: list[str],
    infos: dict[str, TensorInfo],
    extra: str,
) -> list[StageGraph]:
    """Stages from the model inputs to `targets`, cut before each random draw (ordered by dependency); the
    tensor `extra` is also an output of the first stage that can compute it."""
    pending = sorted(noises, key=lambda n: len(index.upstream([n.template])))
    available = set(model_inputs)
    stages: list[StageGraph] = []
    while pending:
        noise = pending.pop(0)
        later_noise_inputs = {n.input_name for n in pending} | {noise.input_name}
        # Everything that depends on this draw (or later ones) belongs to later stages; what those stages
        # read from before the draw is this stage's output.
        later = index.upstream(targets) & index.downstream(later_noise_inputs)
        needed = {
            i
            for node_index in later
            for i in index.nodes[node_index].input
            if not index.is_constant(i)
            and i not in later_noise_inputs
            and not (i in index.producer and index.producer[i] in later)
        }
        ready_targets = {t for t in [*targets, extra] if index.producer.get(t) not in later}
        outputs = sorted((needed | ready_targets | {noise.template}) - available)
        inputs = minimal_inputs(index, outputs, available)
        stages.append(StageGraph(f"prelude{len(stages)}", extract(model, inputs, outputs, infos), tuple(inputs),
                                 tuple(outputs)))
        available |= set(outputs) | {noise.input_name}
    remaining = [t for t in [*targets, extra] if t not in available]
    inputs = minimal_inputs(index, remaining, available)
    stages.append(StageGraph(f"prelude{len(stages)}", extract(model, inputs, remaining, infos), tuple(inputs),
                             tuple(remaining)))
    return stages
