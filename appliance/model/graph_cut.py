"""Generic ONNX graph surgery: find the tensors where a module starts, lift random nodes out as inputs,
and extract the subgraph between two sets of tensors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx
from onnx import helper, shape_inference, utils


@dataclass(frozen=True)
class TensorInfo:
    name: str
    elem_type: int
    shape: tuple[int | str | None, ...]
    """Static sizes where known, symbolic names or None elsewhere."""


@dataclass(frozen=True)
class LiftedNoise:
    """A RandomNormalLike node replaced by a graph input: the caller draws the noise (seeded, reproducible)."""

    input_name: str
    template: str
    """The tensor whose shape the noise takes (the random node's input)."""


class GraphIndex:
    """Producer/consumer maps of a model's graph, for walking it both ways."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers = {t.name for t in graph.initializer}
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        self._constant: dict[str, bool] = {}
        for index, node in enumerate(self.nodes):
            for out in node.output:
                self.producer[out] = index
            for name in node.input:
                self.consumers.setdefault(name, []).append(index)

    def downstream(self, sources: Iterable[str]) -> set[int]:
        """Nodes that depend on any of the source tensors."""
        seen: set[int] = set()
        stack = [c for s in sources for c in self.consumers.get(s, [])]
        while stack:
            index = stack.pop()
            if index in seen:
                continue
            seen.add(index)
            for out in self.nodes[index].output:
                stack.extend(self.consumers.get(out, []))
        return seen

    def upstream(self, targets: Iterable[str]) -> set[int]:
        """Nodes whose outputs any of the target tensors depend on."""
        seen: set[int] = set()
        stack = [self.producer[t] for t in targets if t in self.producer]
        while stack:
            index = stack.pop()
            if index in seen:
                continue
            seen.add(index)
            stack.extend(self.producer[i] for i in self.nodes[index].input if i in self.producer)
        return seen

    def is_constant(self, tensor: str) -> bool:
        """An initializer, or computed only from constants (such tensors are never a stage's input)."""
        if tensor not in self._constant:
            if tensor in self.initializers or tensor == "":
                self._constant[tensor] = True
            elif tensor not in self.producer:
                self._constant[tensor] = False
            else:
                node = self.nodes[self.producer[tensor]]
                self._constant[tensor] = all(self.is_constant(i) for i in node.input)
        return self._constant[tensor]

    def module_inputs(self, scope: str) -> list[str]:
        """Tensors that flow into the module whose node names start with `scope` (e.g. '/dec/').

        A module's own unscoped helper nodes (TorchScript functions export without a scope) consume tensors
        made inside the module, so an input is a tensor made *outside*: not downstream of any module node.
        """
        module = {i for i, n in enumerate(self.nodes) if n.name.startswith(scope)}
        if not module:
            raise ValueError(f"the graph has no nodes under {scope!r}")
        inside = module | self.downstream(out for i in module for out in self.nodes[i].output)
        found: list[str] = []
        for index in sorted(module):
            for name in self.nodes[index].input:
                made_inside = name in self.producer and self.producer[name] in inside
                if made_inside or self.is_constant(name) or name in found:
                    continue
                found.append(name)
        return found


def tensor_infos(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Types and (partly symbolic) shapes of every tensor, from ONNX shape inference."""
    inferred = shape_inference.infer_shapes(model)
    infos: dict[str, TensorInfo] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim
        )
        infos[value.name] = TensorInfo(value.name, tensor_type.elem_type, shape)
    return infos


def lift_random_nodes(model: onnx.ModelProto, prefix: str = "noise") -> tuple[onnx.ModelProto, list[LiftedNoise]]:
    """Replace every RandomNormalLike node by a graph input of the same name as its output.

    Onnxruntime draws from a process-wide generator; lifting the draws out lets a request be reproduced
    sample for sample from a seed, whichever backend decodes it.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    infos = tensor_infos(model)
    lifted: list[LiftedNoise] = []
    kept = []
    for node in model.graph.node:
        if node.op_type not in {"RandomNormalLike", "RandomUniformLike"}:
            kept.append(node)
            continue
        if node.op_type == "RandomUniformLike":
            raise ValueError(f"{node.name}: uniform noise is not supported")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("mean", 0.0) != 0.0 or attrs.get("scale", 1.0) != 1.0:
            raise ValueError(f"{node.name}: only standard normal noise is supported")
        output = node.output[0]
        template = infos.get(node.input[0])
        rank = len(template.shape) if template else 3
        dims = [f"{prefix}{len(lifted)}_d{i}" for i in range(rank)]
        model.graph.input.append(helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, dims))
        lifted.append(LiftedNoise(input_name=output, template=node.input[0]))
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model, lifted


def extract(
    model: onnx.ModelProto, inputs: list[str], outputs: list[str], infos: dict[str, TensorInfo] | None = None
) -> onnx.ModelProto:
    """The subgraph computing `outputs` from `inputs` (and initializers). Fails if `inputs` do not suffice.
    `infos` (from `tensor_infos`) gives the new inputs and outputs their shapes, with unknown sizes named."""
    extractor = utils.Extractor(model)
    sub = extractor.extract_model(inputs, outputs)
    if infos:
        for value in [*sub.graph.input, *sub.graph.output]:
            info = infos.get(value.name)
            if info is None or value.type.tensor_type.HasField("shape"):
                continue
            dims = [d if isinstance(d, int) else f"{_short(value.name)}_{i}" for i, d in enumerate(info.shape)]
            value.CopyFrom(helper.make_tensor_value_info(value.name, info.elem_type, dims))
    index = GraphIndex(sub)
    missing = [n for n in index.nodes for i in n.input if i and i not in index.producer
               and i not in index.initializers and i not in inputs]
    if missing:
        raise ValueError(f"inputs {inputs} do not determine {outputs}: {missing[0].name} needs more")
    return sub


def _short(name: str) -> str:
    return name.strip("/").replace("/", "_").replace(".", "_")


def minimal_inputs(index: GraphIndex, outputs: Iterable[str], available: Iterable[str]) -> list[str]:
    """The tensors from `available` that computing `outputs` actually reads (walking up, stopping at them)."""
    available = set(available)
    found: list[str] = []
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        tensor = stack.pop()
        if tensor in seen or index.is_constant(tensor):
            continue
        seen.add(tensor)
        if tensor in available:
            found.append(tensor)
        elif tensor in index.producer:
            stack.extend(index.nodes[index.producer[tensor]].input)
        else:
            raise ValueError(f"{tensor} is needed but neither available nor computable")
    return sorted(found)
