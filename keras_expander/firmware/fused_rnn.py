"""`.tflite` -> `.tflite`: each unrolled int8 SimpleRNN or GRU layer becomes ONE fused op over the whole sequence.

TFLite has no fused SimpleRNN or GRU op, so the export unrolls them: per time step FULLY_CONNECTED ops, SPLITs and
elementwise ADD, SUB, MUL, TANH, LOGISTIC (and QUANTIZE where the steps feed a PACK), each step's tensors with
scales and zero points of their own, calibrated by the converter. That graph holds most of a pruned layer's bytes
and instructions on a microcontroller. This module finds each such layer in a full-int8 flatbuffer (one UNPACK of
the input sequence, a FULLY_CONNECTED per step sharing one input weight matrix, a chain of recurrent
FULLY_CONNECTEDs sharing one recurrent matrix) and replaces it by one custom op of keras_expander's kernels
(`keras_expander/firmware/kernels/fused_rnn.cc`, where the op's inputs, its program format and its byte cost are
documented):

| layer | dense weights | sparse weights (blobs read in place, work per non-zero) |
|---|---|---|
| SimpleRNN, `RNN(SimpleRNNCell)` | `KE_SIMPLE_RNN_V1` | `KE_SPARSE_SIMPLE_RNN_V1` |
| GRU (`reset_after=True`) | `KE_GRU_V1` | `KE_SPARSE_GRU_V1` |

The op replays the unrolled graph's int8 arithmetic step by step with that graph's own scales and zero points: every
integer parameter is what TFLM's Prepare of the replaced op computes from them (`tflm_*_params` below mirror
TFLM's add_common.cc, sub_common.cc, mul_common.cc, fully_connected_common.cc and quantization_util.cc), and the
elementwise unary ops (TANH, LOGISTIC, QUANTIZE, SUB or MUL of a scalar constant) become 256-entry lookup tables
evaluated by the TFLite Micro interpreter itself on every int8 input. So its outputs equal the unrolled graph's on
TFLM's reference kernels byte for byte. A layer whose graph has another form (fewer than 3 time steps, per-channel
weight scales, a fused activation other than NONE/RELU/RELU6/RELU_N1_TO_1, an op the program cannot express, a state
read outside the recurrence) is left unrolled for the stock kernels, and the reason is reported.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import defaultdict

import numpy as np

from keras_expander.firmware import ops
from keras_expander.firmware.model_edit import align
from keras_expander.firmware.sparse_rewrite import sparse_blob

SIMPLE_RNN_OP = ops.SIMPLE_RNN.name
SPARSE_SIMPLE_RNN_OP = ops.SPARSE_SIMPLE_RNN.name
GRU_OP = ops.GRU.name
SPARSE_GRU_OP = ops.SPARSE_GRU.name
WEIGHT_FORMATS = ("dense", "sparse", "smaller")

_CELLS = {1: ("simple_rnn", SIMPLE_RNN_OP, SPARSE_SIMPLE_RNN_OP), 3: ("gru", GRU_OP, SPARSE_GRU_OP)}
_CELL_CODES = {"simple_rnn": 1, "gru": 2}
_INT8_LEFT_SHIFT = 20  # TFLM's ADD/SUB rescale int8 inputs with 20 extra bits
_TABLE_SIZE = 256
# Program opcodes and operands (fused_rnn.cc).
_FC_INPUT, _FC_RECURRENT, _ADD, _SUB, _MUL, _LUT = 1, 2, 3, 4, 5, 6
_INPUT_BLOCK, _RECURRENT_BLOCK, _PREVIOUS_STATE, _NEW_STATE, _TEMPORARY, _CONSTANT = 0x00, 0x10, 0x20, 0x21, 0x40, 0x80
_MAX_TEMPORARIES = 16
_MAX_CONSTANTS = 0x7F
# Elementwise ops that become lookup tables when their only non-constant input is int8 (constants scalar).
_TABLE_OPS = {"TANH", "LOGISTIC", "QUANTIZE", "RELU", "RELU6", "RELU_N1_TO_1", "LEAKY_RELU", "HARD_SWISH", "ADD",
              "SUB", "MUL"}
_BINARY_OPS = {"ADD": _ADD, "SUB": _SUB, "MUL": _MUL}


@dataclasses.dataclass(frozen=True)
class FusedLayer:
    """One unrolled recurrent layer replaced by a fused op.

    Attributes:
        op: The custom op code, e.g. "KE_SPARSE_GRU_V1".
        cell: "simple_rnn" or "gru".
        steps, input_size, units: T, I and H of the layer.
        sequence_output: The op outputs the whole sequence [T, 1, H] (return_sequences=True), else [1, H].
        replaced_ops: Operators of the unrolled graph it replaces (the PACK of a sequence included).
        weight_bytes: Bytes of its two weight inputs (dense int8 or sparse blobs).
        program_bytes, table_bytes, bias_bytes, constant_bytes: Bytes of its other constant inputs.
        nonzero, total: Non-zero and all entries of W_x and W_h.
    """

    op: str
    cell: str
    steps: int
    input_size: int
    units: int
    sequence_output: bool
    replaced_ops: int
    weight_bytes: int
    program_bytes: int
    table_bytes: int
    bias_bytes: int
    constant_bytes: int
    nonzero: int
    total: int


class _Unfusable(Exception):
    """A layer's unrolled graph has a form the fused op cannot express; the message says which."""


# ---------------------------------------------------------------------------------------------------------------
# TFLM's Prepare arithmetic, in IEEE double and single precision as the C++ computes it.

def _round_half_away(value: float) -> int:
    """std::round / TfLiteRound: halves away from zero (exact for |value| < 2^52)."""
    return int(math.floor(value + 0.5)) if value >= 0 else -int(math.floor(-value + 0.5))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLM's `QuantizeMultiplier` (quantization_util.cc, double rounding build).

    Args:
        real: The real multiplier, >= 0.

    Returns:
        (multiplier, shift): int32 significand in [2^30, 2^31) (0 for 0 or below 2^-32) and the power of two,
        real ~= multiplier * 2^(shift - 31).
    """
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)
    fixed = _round_half_away(fraction * (1 << 31))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def _smaller_than_one(real: float, what: str) -> tuple[int, int]:
    # TFLM's QuantizeMultiplierSmallerThanOneExp aborts the program outside (0, 1).
    if not 0.0 < real < 1.0:
        raise _Unfusable(f"{what} has the rescaling factor {real:.3g}, outside (0, 1): TFLM's stock kernel would "
                         f"abort on it")
    return quantize_multiplier(real)


def _quantize_f32(scale: np.float32, zero_point: int, value: float) -> int:
    # TFLM's Quantize (kernel_util.cc): zero_point + round(value / scale) in float.
    return zero_point + _round_half_away(float(np.float32(value) / scale))


def activation_range(activation: int, scale: np.float32, zero_point: int) -> tuple[int, int]:
    """TFLM's `CalculateActivationRangeQuantized` for an int8 output.

    Args:
        activation: The op's fused activation (schema ActivationFunctionType: 0 NONE, 1 RELU, 2 RELU_N1_TO_1,
            3 RELU6).
        scale, zero_point: The output's quantization.

    Returns:
        (act_min, act_max) in [-128, 127].

    Raises:
        _Unfusable: another fused activation.
    """
    if activation == 0:
        return -128, 127
    if activation == 1:
        return max(-128, _quantize_f32(scale, zero_point, 0.0)), 127
    if activation == 3:
        return max(-128, _quantize_f32(scale, zero_point, 0.0)), min(127, _quantize_f32(scale, zero_point, 6.0))
    if activation == 2:
        return max(-128, _quantize_f32(scale, zero_point, -1.0)), min(127, _quantize_f32(scale, zero_point, 1.0))
    raise _Unfusable(f"fused activation {activation} (only NONE, RELU, RELU6 and RELU_N1_TO_1 are expressed)")


def tflm_fully_connected_params(input_q, weight_scale, output_q, activation: int) -> list[int]:
    """Program parameters of a per-tensor int8 FULLY_CONNECTED, as TFLM's `CalculateOpDataFullyConnected`.

    Args:
        input_q, output_q: (scale, zero point) of its input and output.
        weight_scale: The weights' per-tensor scale.
        activation: Its fused activation.

    Returns:
        [input_offset, multiplier, shift, output_offset, act_min, act_max].
    """
    # GetQuantizedConvolutionMultipler (kernel_util.cc of the TFLM trees we build against, commit 90b983c; see
    # docs/deployment.md) multiplies the two scales in float, then divides in double; the double product of newer
    # TFLM (the pip build) changes the multiplier's low bits and, rarely, an output by one step.
    product = np.float32(input_q[0]) * np.float32(weight_scale)
    multiplier, shift = quantize_multiplier(float(product) / float(output_q[0]))
    return [-input_q[1], multiplier, shift, output_q[1], *activation_range(activation, *output_q)]


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    """TFLM's `MultiplyByQuantizedMultiplier` (double rounding): the rounding doubling high multiply of
    x * 2^max(shift, 0) by `multiplier`, then a rounding right shift by max(-shift, 0).

    Raises:
        _Unfusable: x * 2^max(shift, 0) does not fit in int32 (TFLM's arithmetic would overflow).
    """
    shifted = x * (1 << max(shift, 0))
    if not -(1 << 31) <= shifted < 1 << 31:
        raise _Unfusable("a bias rescaling would overflow int32")
    product = shifted * multiplier
    nudged = product + ((1 << 30) if product >= 0 else 1 - (1 << 30))
    high = nudged // (1 << 31) if nudged >= 0 else -(-nudged // (1 << 31))  # C's truncating division
    exponent = max(-shift, 0)
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> exponent) + (1 if (high & mask) > threshold else 0)


def tflm_add_params(first_q, second_q, output_q, activation: int) -> list[int]:
    """Program parameters of an int8 ADD, as TFLM's `CalculateOpDataAdd` (double arithmetic).

    Returns:
        [input1_offset, input2_offset, m1, s1, m2, s2, m_out, s_out, output_offset, act_min, act_max].
    """
    twice_max = 2.0 * float(max(first_q[0], second_q[0]))
    first = _smaller_than_one(float(first_q[0]) / twice_max, "ADD input 1")
    second = _smaller_than_one(float(second_q[0]) / twice_max, "ADD input 2")
    out = _smaller_than_one(twice_max / ((1 << _INT8_LEFT_SHIFT) * float(output_q[0])), "ADD output")
    return [-first_q[1], -second_q[1], *first, *second, *out, output_q[1], *activation_range(activation, *output_q)]


def tflm_sub_params(first_q, second_q, output_q, activation: int) -> list[int]:
    """Program parameters of an int8 SUB, as TFLM's `CalculateOpDataSub` (which rescales in float, then double).

    Returns:
        The same 11 values as `tflm_add_params`.
    """
    twice_max = np.float32(2) * max(first_q[0], second_q[0])
    first = _smaller_than_one(float(first_q[0] / twice_max), "SUB input 1")
    second = _smaller_than_one(float(second_q[0] / twice_max), "SUB input 2")
    out = _smaller_than_one(float(twice_max / (np.float32(1 << _INT8_LEFT_SHIFT) * output_q[0])), "SUB output")
    return [-first_q[1], -second_q[1], *first, *second, *out, output_q[1], *activation_range(activation, *output_q)]


def tflm_mul_params(first_q, second_q, output_q, activation: int) -> list[int]:
    """Program parameters of an int8 MUL, as TFLM's `CalculateOpDataMul`.

    Returns:
        [input1_offset, input2_offset, multiplier, shift, output_offset, act_min, act_max].
    """
    multiplier, shift = quantize_multiplier(float(first_q[0]) * float(second_q[0]) / float(output_q[0]))
    if shift > 13:
        raise _Unfusable(f"MUL rescaling factor 2^{shift} is outside the fused op's exact range")
    return [-first_q[1], -second_q[1], multiplier, shift, output_q[1], *activation_range(activation, *output_q)]


# ---------------------------------------------------------------------------------------------------------------
# Reading the unrolled graph.

def _schema():
    from tflite_micro.tensorflow.lite.micro.compression import model_editor
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return model_editor, schema


def _is_constant(tensor) -> bool:
    return tensor is not None and tensor.buffer is not None and bool(tensor.buffer.data)


def _quantization(tensor) -> tuple[np.float32, int]:
    """(scale, zero point) of a per-tensor quantized int8 tensor."""
    q = tensor.quantization
    scales = np.atleast_1d(q.scales if q is not None else [])
    if len(scales) != 1:
        raise _Unfusable(f"tensor {tensor.name!r} is not quantized per tensor")
    return np.float32(scales[0]), int(np.atleast_1d(q.zero_points)[0])


def _elements(tensor) -> int:
    return int(np.prod(tensor.shape)) if len(tensor.shape) else 1


class _Graph:
    """Producers and consumers of a subgraph's tensors."""

    def __init__(self, subgraph, schema):
        self.subgraph = subgraph
        self.schema = schema
        self.order = {id(op): index for index, op in enumerate(subgraph.operators)}
        self.producer = {}
        self.consumers = defaultdict(list)
        for op in subgraph.operators:
            for tensor in op.outputs:
                self.producer[id(tensor)] = op
            for tensor in op.inputs:
                if tensor is not None:
                    self.consumers[id(tensor)].append(op)

    def name(self, op) -> str:
        return op.opcode_name

    def closure(self, target, stops: set) -> list:
        """The ops that compute `target` from the tensors in `stops` and constants, in graph order."""
        found, stack = {}, [target]
        while stack:
            tensor = stack.pop()
            if id(tensor) in stops or _is_constant(tensor):
                continue
            op = self.producer.get(id(tensor))
            if op is None:
                raise _Unfusable(f"tensor {tensor.name!r} of a time step does not come from the layer's input")
            if id(op) not in found:
                found[id(op)] = op
                stack.extend(t for t in op.inputs if t is not None)
        return sorted(found.values(), key=lambda op: self.order[id(op)])


@dataclasses.dataclass
class _Layer:
    """An unrolled recurrent layer found in the graph (steps in processing order)."""

    unpack: object
    input_fcs: list  # per step k: the FULLY_CONNECTED of x
    recurrent_fcs: list  # per step k >= 1
    input_slots: list  # per step k: which UNPACK output it reads
    states: list  # per step k: the hidden state tensor h_k
    step_ops: list  # per step k: its ops in graph order
    pack: object = None
    output_slots: list = None


def _find_candidates(graph: _Graph) -> list[tuple[object, list]]:
    """(UNPACK, its T input FULLY_CONNECTEDs by slot) for every weight matrix read once per UNPACK output."""
    found = []
    for op in graph.subgraph.operators:
        if graph.name(op) != "UNPACK":
            continue
        groups = defaultdict(dict)
        for slot, x in enumerate(op.outputs):
            for consumer in graph.consumers[id(x)]:
                if graph.name(consumer) == "FULLY_CONNECTED" and consumer.inputs[0] is x:
                    groups[id(consumer.inputs[1])][slot] = consumer
        for group in groups.values():
            if len(group) == len(op.outputs):
                found.append((op, [group[slot] for slot in range(len(op.outputs))]))
    return found


def _trace_layer(graph: _Graph, unpack, fcs_by_slot: list) -> _Layer:
    """Orders the steps of a candidate layer and collects each step's ops (see the module docstring)."""
    steps = len(fcs_by_slot)
    if steps < 3:
        raise _Unfusable(f"{steps} time steps (the fused op needs at least 3)")
    slot_of = {id(op): slot for slot, op in enumerate(fcs_by_slot)}
    depends = {}
    for op in graph.subgraph.operators:
        if id(op) in slot_of:
            found = frozenset([slot_of[id(op)]])
        else:
            found = frozenset().union(*(depends.get(id(t), frozenset()) for t in op.inputs if t is not None))
        for tensor in op.outputs:
            depends[id(tensor)] = found
    weights = fcs_by_slot[0].inputs[1]
    chains = defaultdict(list)
    for op in graph.subgraph.operators:
        if (graph.name(op) == "FULLY_CONNECTED" and op.inputs[1] is not weights
                and depends.get(id(op.inputs[0]))):
            chains[id(op.inputs[1])].append(op)
    recurrent = None
    for chain in chains.values():
        sizes = sorted(len(depends[id(op.inputs[0])]) for op in chain)
        if sizes == list(range(1, steps)):
            recurrent = sorted(chain, key=lambda op: len(depends[id(op.inputs[0])]))
    if recurrent is None:
        raise _Unfusable("no recurrent FULLY_CONNECTED chain over the time steps")
    read = [depends[id(op.inputs[0])] for op in recurrent]
    if any(not earlier < later for earlier, later in zip(read, read[1:])):
        raise _Unfusable("the recurrent FULLY_CONNECTEDs do not form one chain")
    input_slots = [next(iter(read[0]))] + [next(iter(b - a)) for a, b in zip(read, read[1:])]
    input_slots.append(next(iter(frozenset(range(steps)) - read[-1])))
    states = [op.inputs[0] for op in recurrent]
    xs = {id(x) for x in unpack.outputs}
    step_ops = []
    for k in range(steps - 1):
        stops = xs | ({id(states[k - 1])} if k else set())
        ops = graph.closure(states[k], stops)
        expected = {id(fcs_by_slot[input_slots[k]])} | ({id(recurrent[k - 1])} if k else set())
        fcs = {id(op) for op in ops if graph.name(op) == "FULLY_CONNECTED"
               and (op.inputs[1] is weights or op.inputs[1] is recurrent[0].inputs[1])}
        if fcs != expected:
            raise _Unfusable(f"step {k} does not read exactly its input and the previous state")
        step_ops.append(ops)
    # The last state is read by no recurrent FULLY_CONNECTED: its step is found by repeating the one before.
    last_ops, last_state = _match_step(graph, step_ops[-1], {
        id(unpack.outputs[input_slots[-2]]): unpack.outputs[input_slots[-1]], id(states[-2]): states[-1]},
        states[-1])
    step_ops.append(last_ops)
    states.append(last_state)
    return _Layer(unpack=unpack, input_fcs=[fcs_by_slot[s] for s in input_slots],
                  recurrent_fcs=recurrent, input_slots=input_slots, states=states, step_ops=step_ops)


def _match_step(graph: _Graph, template: list, mapping: dict, template_state) -> tuple[list, object]:
    """The last step's ops, found by walking the previous step (`template`) op by op along the mapped tensors.

    The last step's hidden state is not read by a recurrent FULLY_CONNECTED, so its extent is that of the step
    before it: each template op maps to the one op of the same type that reads the mapped inputs (constants by
    position and shape: per-step biases differ).

    Returns:
        (the last step's ops, its hidden state tensor).
    """
    mapping = dict(mapping)
    matched = []
    for op in template:
        variable = [t for t in op.inputs if t is not None and not _is_constant(t)]
        if not variable or id(variable[0]) not in mapping:
            raise _Unfusable("the last step does not repeat the step before it")
        candidates = []
        for other in graph.consumers[id(mapping[id(variable[0])])]:
            if other.opcode != op.opcode or len(other.inputs) != len(op.inputs):
                continue
            same = True
            for position, (mine, theirs) in enumerate(zip(op.inputs, other.inputs)):
                if mine is None or theirs is None:
                    same = mine is theirs
                elif _is_constant(mine):  # per-step biases differ; the weights must be the same tensor
                    same = _is_constant(theirs) and tuple(mine.shape) == tuple(theirs.shape) and (
                        position != 1 or graph.name(op) != "FULLY_CONNECTED" or theirs is mine)
                else:
                    same = mapping.get(id(mine)) is theirs
                if not same:
                    break
            if same and other not in candidates:
                candidates.append(other)
        if len(candidates) != 1:
            raise _Unfusable("the last step does not repeat the step before it")
        matched.append(candidates[0])
        for mine, theirs in zip(op.outputs, candidates[0].outputs):
            mapping[id(mine)] = theirs
    return matched, mapping[id(template_state)]


def _attach_outputs(graph: _Graph, layer: _Layer) -> None:
    """Finds whether the states feed one PACK (the whole sequence is the output) and checks that no state is read
    outside the recurrence."""
    steps = len(layer.states)
    packs = {id(op): op for h in layer.states for op in graph.consumers[id(h)] if graph.name(op) == "PACK"}
    if len(packs) > 1:
        raise _Unfusable("the states feed more than one PACK")
    pack = next(iter(packs.values()), None)
    if pack is not None:
        if len(pack.inputs) != steps or {id(t) for t in pack.inputs} != {id(h) for h in layer.states}:
            raise _Unfusable("the PACK of the states holds other tensors")
        output_q = _quantization(pack.outputs[0])
        if any(_quantization(h) != output_q for h in layer.states):
            raise _Unfusable("the PACK's states have different quantizations")
        layer.pack = pack
        layer.output_slots = [next(i for i, t in enumerate(pack.inputs) if t is h) for h in layer.states]
    else:
        layer.output_slots = [0] * steps
    step_of = {id(op): k for k, ops in enumerate(layer.step_ops) for op in ops}
    for k, h in enumerate(layer.states):
        for consumer in graph.consumers[id(h)]:
            inside = step_of.get(id(consumer)) == k + 1 or consumer is pack
            if not inside and (k < steps - 1 or pack is not None):
                raise _Unfusable(f"the state of step {k} is read by {graph.name(consumer)} outside the recurrence")


# ---------------------------------------------------------------------------------------------------------------
# Translating a step into the program.

def _value(tensor) -> tuple:
    """The key of a tensor computed within a step (before it gets a register)."""
    return ("value", id(tensor))


def _is_value(operand) -> bool:
    return isinstance(operand, tuple)


@dataclasses.dataclass
class _Instruction:
    """One program instruction; operands are fixed operand codes, values (`_value`) or "X"/"R" until allocated."""

    opcode: int
    dst: object
    a: object = 0
    b: object = 0
    params: list = dataclasses.field(default_factory=list)
    bias: np.ndarray | None = None  # FC: its int32 bias, (G*H,)
    bias_scale: float | None = None  # FC: the bias tensor's scale
    table: np.ndarray | None = None  # LUT: the int8 table (filled by _evaluate_tables)
    table_op: object = None  # LUT: the TFLite op the table evaluates
    table_input: int = 0  # LUT: index of that op's non-constant input


_BINARY_PARAMS = {"ADD": tflm_add_params, "SUB": tflm_sub_params, "MUL": tflm_mul_params}


def _activation(op) -> int:
    return int(getattr(op._fb.builtinOptions, "fusedActivationFunction", 0) or 0)


class _LayerProgram:
    """Translates a traced layer into the fused op's program and its constant tensors (biases, constant vectors;
    the tables are filled in afterwards for all layers at once)."""

    def __init__(self, graph: _Graph, layer: _Layer):
        self.graph, self.layer = graph, layer
        self.input_weights, self.recurrent_weights = layer.input_fcs[0].inputs[1], layer.recurrent_fcs[0].inputs[1]
        self.units = _elements(layer.states[0])
        rows, self.input_size = (int(n) for n in self.input_weights.shape)
        if rows % self.units or rows // self.units not in _CELLS:
            raise _Unfusable(f"weights of {rows} rows for {self.units} units (neither a SimpleRNN nor a GRU)")
        self.gates = rows // self.units
        if tuple(int(n) for n in self.recurrent_weights.shape) != (rows, self.units):
            raise _Unfusable("recurrent weights of an unexpected shape")
        for weights in (self.input_weights, self.recurrent_weights):
            if weights.dtype != graph.schema.TensorType.INT8 or _quantization(weights)[1] != 0:
                raise _Unfusable("weights are not symmetric int8")
        self.cell = _CELLS[self.gates][0]
        self.constants = []  # distinct constant vectors, as bytes
        self.steps = [self._translate(k) for k in range(len(layer.states))]

    @staticmethod
    def _row(rows: list, data: bytes) -> int:
        if data not in rows:
            rows.append(data)
        return rows.index(data)

    def _operand(self, values: dict, tensor):
        if _is_constant(tensor):
            if _elements(tensor) != self.units or tensor.dtype != self.graph.schema.TensorType.INT8:
                raise _Unfusable(f"a constant operand of {_elements(tensor)} elements")
            row = self._row(self.constants, bytes(tensor.buffer.data))
            if row >= _MAX_CONSTANTS:
                raise _Unfusable("more than 127 constant vectors")
            return _CONSTANT + row
        if id(tensor) not in values:
            raise _Unfusable(f"tensor {tensor.name!r} is read before its step computes it")
        operand = values[id(tensor)]
        if operand in ("X", "R", "x"):
            raise _Unfusable("an elementwise op reads a whole FULLY_CONNECTED output or the input")
        return operand

    def _fc(self, opcode: int, op, input_q, source=0) -> _Instruction:
        options = op._fb.builtinOptions
        if getattr(options, "keepNumDims", False) or getattr(options, "asymmetricQuantizeInputs", False) or \
                getattr(options, "weightsFormat", 0):
            raise _Unfusable("a FULLY_CONNECTED with non-default options")
        bias = op.inputs[2] if len(op.inputs) > 2 else None
        if bias is not None and (bias.dtype != self.graph.schema.TensorType.INT32
                                 or _elements(bias) != self.gates * self.units):
            raise _Unfusable("a FULLY_CONNECTED bias that is not int32 per output")
        params = tflm_fully_connected_params(input_q, _quantization(op.inputs[1])[0], _quantization(op.outputs[0]),
                                             _activation(op))
        return _Instruction(opcode, "X" if opcode == _FC_INPUT else "R", a=source, params=params,
                            bias=None if bias is None else bias.array.astype(np.int64),
                            bias_scale=None if bias is None else float(_quantization(bias)[0]))

    def _translate(self, k: int) -> dict:
        graph, layer = self.graph, self.layer
        x = layer.unpack.outputs[layer.input_slots[k]]
        values = {id(x): "x"}
        if k:
            values[id(layer.states[k - 1])] = _PREVIOUS_STATE
        code = []
        for op in layer.step_ops[k]:
            name = graph.name(op)
            if any(t.dtype != graph.schema.TensorType.INT8 for t in op.outputs):
                raise _Unfusable(f"{name} with a non-int8 output")
            constants = [t for t in op.inputs if _is_constant(t)]
            if name == "FULLY_CONNECTED" and op.inputs[1] is self.input_weights:
                if op.inputs[0] is not x:
                    raise _Unfusable("an input FULLY_CONNECTED reads another step's input")
                code.append(self._fc(_FC_INPUT, op, _quantization(x)))
                values[id(op.outputs[0])] = "X" if self.gates > 1 else _INPUT_BLOCK
            elif name == "FULLY_CONNECTED" and op.inputs[1] is self.recurrent_weights:
                code.append(self._fc(_FC_RECURRENT, op, _quantization(op.inputs[0]),
                                     self._operand(values, op.inputs[0])))
                values[id(op.outputs[0])] = "R" if self.gates > 1 else _RECURRENT_BLOCK
            elif name in ("SPLIT", "SPLIT_V"):
                self._split(op, values)
            elif name in _BINARY_OPS and len(op.inputs) == 2 and all(_elements(t) == self.units for t in constants):
                a, b = (self._operand(values, t) for t in op.inputs)
                params = _BINARY_PARAMS[name](*(_quantization(t) for t in (*op.inputs, op.outputs[0])),
                                              _activation(op))
                code.append(_Instruction(_BINARY_OPS[name], _value(op.outputs[0]), a, b, params))
                values[id(op.outputs[0])] = _value(op.outputs[0])
            elif name in _TABLE_OPS:
                variable = [i for i, t in enumerate(op.inputs) if t is not None and not _is_constant(t)]
                if len(variable) != 1 or any(_elements(t) != 1 for t in constants) or \
                        _elements(op.outputs[0]) != self.units:
                    raise _Unfusable(f"{name} that is not elementwise on one operand")
                source = op.inputs[variable[0]]
                if source.dtype != graph.schema.TensorType.INT8:
                    raise _Unfusable(f"{name} of a non-int8 tensor")
                code.append(_Instruction(_LUT, _value(op.outputs[0]), self._operand(values, source),
                                         table_op=op, table_input=variable[0]))
                values[id(op.outputs[0])] = _value(op.outputs[0])
            else:
                raise _Unfusable(f"op {name} in step {k}")
        state = layer.states[k]
        alias = values.get(id(state))
        if isinstance(alias, int) and alias < _PREVIOUS_STATE:
            # The state is a FULLY_CONNECTED output itself (a fused RELU at step 0): copy it by the identity table.
            code.append(_Instruction(_LUT, _value(state), alias, table=np.arange(-128, 128).astype(np.int8)))
            values[id(state)] = _value(state)
        if values.get(id(state)) != _value(state):
            raise _Unfusable("a hidden state that no op of its step computes")
        return {"input_slot": layer.input_slots[k], "output_slot": layer.output_slots[k], "code": code,
                "state": _value(state)}

    def _split(self, op, values: dict) -> None:
        name = self.graph.name(op)
        value, axis = (op.inputs[1], op.inputs[0]) if name == "SPLIT" else (op.inputs[0], op.inputs[2])
        whole = values.get(id(value))
        if whole not in ("X", "R") or len(op.outputs) != self.gates:
            raise _Unfusable(f"{name} of something other than a FULLY_CONNECTED output into gate blocks")
        if int(axis.array.reshape(-1)[0]) not in (-1, len(value.shape) - 1):
            raise _Unfusable(f"{name} along another axis than the units")
        if name == "SPLIT_V":
            sizes = [int(n) for n in op.inputs[1].array.reshape(-1)]
            if sizes.count(-1) == 1:  # one size may be -1: the rest
                sizes[sizes.index(-1)] = self.gates * self.units - (sum(sizes) + 1)
            if sizes != [self.units] * self.gates:
                raise _Unfusable(f"SPLIT_V into blocks of sizes {sizes}")
        for g, block in enumerate(op.outputs):
            if _quantization(block) != _quantization(value) or _elements(block) != self.units:
                raise _Unfusable(f"{name} that changes quantization or block size")
            values[id(block)] = (_INPUT_BLOCK if whole == "X" else _RECURRENT_BLOCK) + g


def _evaluate_tables(instructions: list) -> None:
    """Fills `table` of every LUT instruction: its TFLite op, with the op's own quantizations, constants and
    options, run by the TFLite Micro interpreter on the 256 int8 inputs (64 ops per model)."""
    from tflite_micro.python.tflite_micro import runtime

    model_editor, schema = _schema()

    def copy_tensor(tensor, shape=None, data=True):
        q = tensor.quantization
        quantization = None if q is None else model_editor.Quantization(
            [float(s) for s in np.atleast_1d(q.scales)], [int(z) for z in np.atleast_1d(q.zero_points)])
        return model_editor.Tensor(shape=shape or tuple(int(n) for n in tensor.shape), dtype=tensor.dtype,
                                   data=bytes(tensor.buffer.data) if data else None, quantization=quantization)

    every_input = np.arange(-128, 128, dtype=np.int8).reshape(1, _TABLE_SIZE)
    for start in range(0, len(instructions), 64):
        batch = instructions[start:start + 64]
        operators, inputs, outputs = [], [], []
        for instruction in batch:
            op = instruction.table_op
            operands = [None if t is None else copy_tensor(t, (1, _TABLE_SIZE), False)
                        if i == instruction.table_input else copy_tensor(t) for i, t in enumerate(op.inputs)]
            result = copy_tensor(op.outputs[0], (1, _TABLE_SIZE), False)
            operators.append(model_editor.Operator(opcode=op.opcode, inputs=operands, outputs=[result],
                                                   _fb=copy.deepcopy(op._fb)))
            inputs.append(operands[instruction.table_input])
            outputs.append(result)
        model = model_editor.Model(subgraphs=[model_editor.Subgraph(operators=operators, inputs=inputs,
                                                                    outputs=outputs)])
        interpreter = runtime.Interpreter.from_bytes(align(bytes(model.build())), arena_size=1 << 20)
        for index in range(len(batch)):
            interpreter.set_input(every_input, index)
        interpreter.invoke()
        for index, instruction in enumerate(batch):
            instruction.table = np.asarray(interpreter.get_output(index), np.int8).reshape(-1)


def _compose_tables(step: dict) -> None:
    """Folds each LUT that reads another LUT's output, read nowhere else, into one table: t2[t1[q + 128] + 128]."""
    reads = defaultdict(int)
    for instruction in step["code"]:
        for operand in (instruction.a, instruction.b):
            reads[operand] += 1
    producers, kept = {}, []
    for instruction in step["code"]:
        source = producers.get(instruction.a) if instruction.opcode == _LUT else None
        if source is not None and reads[source.dst] == 1 and source.dst != step["state"]:
            instruction.table = instruction.table[source.table.astype(np.int16) + 128]
            instruction.a = source.a
            kept.remove(source)
        if instruction.opcode == _LUT:
            producers[instruction.dst] = instruction
        kept.append(instruction)
    step["code"] = kept


def _allocate(step: dict) -> int:
    """Gives each value of a step a register: the state its operand, every other value a temporary (reused once
    its last reader has run: the elementwise loops may write the register they read). Returns the temporaries."""
    code = step["code"]
    last_read = {operand: index for index, instruction in enumerate(code)
                 for operand in (instruction.a, instruction.b) if _is_value(operand)}
    register, free, used = {step["state"]: _NEW_STATE}, list(range(_MAX_TEMPORARIES)), 0
    for index, instruction in enumerate(code):
        read = {operand for operand in (instruction.a, instruction.b) if _is_value(operand)}
        instruction.a, instruction.b = (register[o] if _is_value(o) else o for o in (instruction.a, instruction.b))
        free += sorted(register[o] - _TEMPORARY for o in read if last_read[o] == index and register[o] != _NEW_STATE)
        free.sort()
        if _is_value(instruction.dst):
            if instruction.dst not in register:
                if not free:
                    raise _Unfusable(f"a step needs more than {_MAX_TEMPORARIES} temporaries")
                register[instruction.dst] = _TEMPORARY + free.pop(0)
                used = max(used, register[instruction.dst] - _TEMPORARY + 1)
            instruction.dst = register[instruction.dst]
    return used


def _assign_biases(steps: list) -> tuple[list, list]:
    """Gives every FULLY_CONNECTED with a bias its bias fields [bias row, residual row, bias multiplier, bias
    shift]: an existing equal row; or, for a recurrent one, the first recurrent bias rescaled by the ratio of the
    bias scales plus an int8 residual row, when every residual fits in int8 (it is exact either way); else a row of
    its own.

    Returns:
        (bias rows, residual rows): lists of int arrays of G*H.
    """
    biases, residuals = [], []
    base = None  # (row, values, scale) of the first recurrent bias
    for instruction in (instruction for step in steps for instruction in step["code"]):
        if instruction.opcode not in (_FC_INPUT, _FC_RECURRENT):
            continue
        bias = instruction.bias
        fields = [-1, -1, 0, 0]
        if bias is not None:
            equal = next((i for i, row in enumerate(biases) if np.array_equal(row, bias)), None)
            if equal is not None:
                fields[0] = equal
            elif instruction.opcode == _FC_RECURRENT and base is not None:
                multiplier, shift = quantize_multiplier(base[2] / instruction.bias_scale)
                try:
                    predicted = np.array([multiply_by_quantized_multiplier(int(v), multiplier, shift)
                                          for v in base[1]])
                    residual = bias - predicted
                except _Unfusable:
                    residual = np.array([1 << 8])
                if np.all(np.abs(residual) <= 127) and multiplier:
                    fields = [base[0], len(residuals), multiplier, shift]
                    residuals.append(residual)
            if fields[0] < 0:
                fields[0] = len(biases)
                biases.append(bias)
                if instruction.opcode == _FC_RECURRENT and base is None:
                    base = (fields[0], bias, instruction.bias_scale)
        instruction.params = instruction.params + fields
    return biases, residuals


def _encode_table(table: np.ndarray) -> bytes:
    """A table in the kernel's format: monotone tables as their first value and 255 steps of 1, 2 or 4 bits,
    others (or steeper ones) as their 256 values."""
    steps = np.diff(table.astype(np.int16))
    for direction, flag in ((1, 0x00), (-1, 0x10)):
        magnitudes = steps * direction
        if magnitudes.min() < 0:
            continue
        for bits in (1, 2, 4):
            if magnitudes.max() < 1 << bits:
                stream = ((magnitudes[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
                return bytes([bits | flag, int(table[0]) & 0xFF]) + np.packbits(stream, bitorder="little").tobytes()
    return bytes([0]) + table.astype(np.int8).tobytes()


def _pack(low: int, high: int, width: int = 16) -> int:
    mask = (1 << width) - 1
    return (low & mask) | (high & mask) << width


def _pack_bytes(*values: int) -> int:
    return sum((value & 0xFF) << (8 * i) for i, value in enumerate(values))


def _packed_params(instruction: _Instruction, tables: bytearray, offsets: dict) -> list[int]:
    """An instruction's parameter words (format in fused_rnn.cc)."""
    p = instruction.params
    if instruction.opcode in (_FC_INPUT, _FC_RECURRENT):
        input_offset, multiplier, shift, output_offset, act_min, act_max, bias_row, residual_row, bias_multiplier, \
            bias_shift = p
        return [_pack(input_offset, output_offset), multiplier, _pack_bytes(shift, act_min, act_max, bias_shift),
                _pack(bias_row, residual_row), bias_multiplier]
    if instruction.opcode in (_ADD, _SUB):
        offset1, offset2, multiplier1, shift1, multiplier2, shift2, multiplier, shift, output_offset, act_min, \
            act_max = p
        return [_pack(offset1, offset2), multiplier1, multiplier2, multiplier,
                _pack_bytes(shift1, shift2, shift, output_offset), _pack_bytes(act_min, act_max)]
    if instruction.opcode == _MUL:
        offset1, offset2, multiplier, shift, output_offset, act_min, act_max = p
        return [_pack(offset1, offset2), multiplier, _pack_bytes(shift, act_min, act_max, output_offset)]
    encoded = _encode_table(instruction.table)
    if encoded not in offsets:
        offsets[encoded] = len(tables)
        tables.extend(encoded)
    return [offsets[encoded]]


def _encode(program: _LayerProgram, temporaries: int, tables: bytearray) -> np.ndarray:
    """The program tensor: header, then each step's slots and instructions (format in fused_rnn.cc); appends the
    distinct encoded tables to `tables`."""
    layer, offsets = program.layer, {}
    words = [1, _CELL_CODES[program.cell], len(layer.states), program.input_size, program.units, program.gates,
             temporaries, 1 if layer.pack is not None else 0]
    for step in program.steps:
        words += [step["input_slot"], step["output_slot"], len(step["code"])]
        for instruction in step["code"]:
            dst = 0 if instruction.dst in ("X", "R") else instruction.dst
            words.append(instruction.opcode | dst << 8 | instruction.a << 16 | instruction.b << 24)
            words += _packed_params(instruction, tables, offsets)
    return np.array(words, dtype=np.int64).astype(np.uint32).view(np.int32)


def _constant_tensor(model_editor, dtype, numpy_type, rows: list):
    """A constant tensor [len(rows), len(row)] of `numpy_type`, or None without rows."""
    if not rows:
        return None
    data = np.stack(rows).astype(numpy_type)
    return model_editor.Tensor(shape=data.shape, dtype=dtype, data=data.tobytes())


def fuse_recurrent_layers(model_content: bytes, weights: str = "smaller") -> tuple[bytes, list[FusedLayer],
                                                                                    list[str]]:
    """Replaces every unrolled int8 SimpleRNN and GRU layer of a flatbuffer by one fused op.

    Args:
        model_content: A full-int8 `.tflite` flatbuffer, as `keras_expander.tflite.export` writes it (SimpleRNN and GRU
            unrolled, per-tensor weight scales).
        weights: "dense" (KE_SIMPLE_RNN_V1 / KE_GRU_V1), "sparse" (KE_SPARSE_*: weights as sparse blobs) or
            "smaller" (per layer, the sparse op when its blobs are smaller than the dense weights).

    Returns:
        (the rewritten flatbuffer, or the input unchanged when nothing was fused; the layers fused; one line per
        recurrent layer left unrolled, saying why).

    Raises:
        ValueError: unknown `weights`.
    """
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"Argument `weights` must be one of {WEIGHT_FORMATS}. Received: weights={weights!r}")
    model_editor, schema = _schema()
    model = model_editor.read(bytes(model_content))
    fused, skipped = [], []
    for subgraph in model.subgraphs:
        graph = _Graph(subgraph, schema)
        programs = []
        for unpack, fcs in _find_candidates(graph):
            try:
                layer = _trace_layer(graph, unpack, fcs)
                _attach_outputs(graph, layer)
                programs.append(_LayerProgram(graph, layer))
            except _Unfusable as reason:
                skipped.append(f"the recurrent layer reading {unpack.outputs[0].name!r} stays unrolled: {reason}")
        _evaluate_tables([i for p in programs for step in p.steps for i in step["code"] if i.table_op is not None])
        removed = set()
        for program in programs:
            layer = program.layer
            for step in program.steps:
                _compose_tables(step)
            biases, residuals = _assign_biases(program.steps)
            tables = bytearray()
            temporaries = max(_allocate(step) for step in program.steps)
            words = _encode(program, temporaries, tables)
            dense = [program.input_weights, program.recurrent_weights]
            blobs = [sparse_blob(tensor.array) for tensor in dense]
            sparse = weights == "sparse" or (weights == "smaller"
                                             and sum(map(len, blobs)) < sum(len(t.buffer.data) for t in dense))
            weight_tensors = dense if not sparse else [
                model_editor.Tensor(shape=(len(blob),), dtype=schema.TensorType.INT8, data=blob,
                                    quantization=model_editor.Quantization(float(_quantization(tensor)[0]), 0))
                for blob, tensor in zip(blobs, dense)]
            constants = [np.frombuffer(row, np.int8) for row in program.constants]
            inputs = [layer.unpack.inputs[0], *weight_tensors,
                      _constant_tensor(model_editor, schema.TensorType.INT32, np.int32, biases),
                      model_editor.Tensor(shape=(len(words),), dtype=schema.TensorType.INT32, data=words.tobytes()),
                      model_editor.Tensor(shape=(len(tables),), dtype=schema.TensorType.INT8,
                                          data=bytes(tables)) if tables else None,
                      _constant_tensor(model_editor, schema.TensorType.INT8, np.int8, constants),
                      _constant_tensor(model_editor, schema.TensorType.INT8, np.int8, residuals)]
            _, dense_op, sparse_op = _CELLS[program.gates]
            output = layer.pack.outputs[0] if layer.pack is not None else layer.states[-1]
            op = model_editor.Operator(opcode=schema.BuiltinOperator.CUSTOM, custom_code=sparse_op if sparse
                                       else dense_op, inputs=inputs, outputs=[output])
            replaced = [o for ops in layer.step_ops for o in ops] + ([layer.pack] if layer.pack is not None else [])
            removed.update(id(o) for o in replaced)
            subgraph.operators.insert(subgraph.operators.index(layer.unpack) + 1, op)
            rows = program.gates * program.units
            fused.append(FusedLayer(
                op=op.custom_code, cell=program.cell, steps=len(layer.states), input_size=program.input_size,
                units=program.units, sequence_output=layer.pack is not None, replaced_ops=len(replaced),
                weight_bytes=sum(len(t.buffer.data) for t in weight_tensors), program_bytes=4 * len(words),
                table_bytes=len(tables), bias_bytes=4 * rows * len(biases) + rows * len(residuals),
                constant_bytes=program.units * len(constants),
                nonzero=int(sum(np.count_nonzero(t.array) for t in dense)),
                total=int(sum(t.array.size for t in dense))))
        subgraph.operators = [op for op in subgraph.operators if id(op) not in removed]
        _drop_dead_unpacks(subgraph)
        _drop_unreferenced_tensors(model, subgraph)
    if not fused:
        return bytes(model_content), fused, skipped
    model_editor.prune_buffers(model)
    return align(bytes(model.build())), fused, skipped


def _drop_dead_unpacks(subgraph) -> None:
    """Removes the UNPACKs whose every output was read only by fused layers."""
    read = {id(t) for op in subgraph.operators for t in op.inputs if t is not None} | {id(t) for t in subgraph.outputs}
    subgraph.operators = [op for op in subgraph.operators if op.opcode_name != "UNPACK"
                          or any(id(t) in read for t in op.outputs)]


def _drop_unreferenced_tensors(model, subgraph) -> None:
    """Keeps the tensors that ops (inputs, outputs, intermediates) or the subgraph's inputs and outputs reference,
    and renumbers the raw tensor indices the flatbuffer keeps outside model_editor's reach (op intermediates, as an
    int8 LSTM has, and signature definitions) to match."""
    intermediates = [(op, [subgraph.tensors[i] for i in op._fb.intermediates])
                     for op in subgraph.operators if op._fb.intermediates is not None and len(op._fb.intermediates)]
    used = {id(t) for op in subgraph.operators for t in (*op.inputs, *op.outputs) if t is not None}
    used |= {id(t) for t in (*subgraph.inputs, *subgraph.outputs)}
    used |= {id(t) for _, tensors in intermediates for t in tensors}
    index = model.subgraphs.index(subgraph)
    entries = [(entry, subgraph.tensors[entry.tensorIndex]) for signature in model._fb.signatureDefs or []
               if signature.subgraphIndex == index
               for entry in (*(signature.inputs or []), *(signature.outputs or []))]
    subgraph.tensors = [t for t in subgraph.tensors if id(t) in used]
    position = {id(t): i for i, t in enumerate(subgraph.tensors)}
    for entry, tensor in entries:
        entry.tensorIndex = position[id(tensor)]
    for op, tensors in intermediates:
        op._fb.intermediates = [position[id(t)] for t in tensors]
