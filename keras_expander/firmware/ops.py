"""Our custom TFLite Micro ops: one table that every `.tflite` writer and the firmware project read.

A rewrite (`sparse_rewrite`, `fused_rnn`) writes an op's `name` as the flatbuffer's custom code; the firmware project
(`project`) registers it with `MicroMutableOpResolver::AddCustom(name, register())` and compiles its `sources`
from `kernels/`. The C++ headers spell the same names (`k...OpName`) and declare the same register functions;
tests/test_custom_ops.py checks this table against them. A change of an op's weight format or inputs is a new
version (a new name, `_V2`), never an edit of a shipped one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

KERNELS_DIR = Path(__file__).parent / "kernels"
NAMESPACE = "keras_expander"


@dataclasses.dataclass(frozen=True)
class CustomOp:
    """One custom op of ours.

    Attributes:
        name: The custom code the flatbuffer carries, versioned (e.g. "KE_SPARSE_LSTM_V1").
        version: The version in the name (1 for `_V1`).
        register: The C++ function (in namespace `keras_expander`) that returns its `TFLMRegistration`.
        header: The header in `kernels/` that declares `register` and spells `name`.
        sources: Our sources in `kernels/` that implement it.
        summary: What the op computes, in a few words.
    """

    name: str
    version: int
    register: str
    header: str
    sources: tuple[str, ...]
    summary: str

    @property
    def register_function(self) -> str:
        """The qualified C++ name of `register`, e.g. "keras_expander::Register_GRU"."""
        return f"{NAMESPACE}::{self.register}"


SPARSE_LSTM = CustomOp("KE_SPARSE_LSTM_V1", 1, "Register_SPARSE_UNIDIRECTIONAL_SEQUENCE_LSTM", "sparse_ops.h",
                       ("sparse_lstm.cc", "sparse_weights.cc"),
                       "int8 UNIDIRECTIONAL_SEQUENCE_LSTM with sparse weight blobs")
SPARSE_FULLY_CONNECTED = CustomOp("KE_SPARSE_FC_V1", 1, "Register_SPARSE_FULLY_CONNECTED", "sparse_ops.h",
                                  ("sparse_fully_connected.cc", "sparse_weights.cc"),
                                  "int8 FULLY_CONNECTED with a sparse weight blob")
SIMPLE_RNN = CustomOp("KE_SIMPLE_RNN_V1", 1, "Register_SIMPLE_RNN", "fused_rnn.h",
                      ("fused_rnn.cc", "sparse_weights.cc"), "fused int8 SimpleRNN layer, dense weights")
SPARSE_SIMPLE_RNN = CustomOp("KE_SPARSE_SIMPLE_RNN_V1", 1, "Register_SPARSE_SIMPLE_RNN", "fused_rnn.h",
                             ("fused_rnn.cc", "sparse_weights.cc"), "fused int8 SimpleRNN layer, sparse weights")
GRU = CustomOp("KE_GRU_V1", 1, "Register_GRU", "fused_rnn.h", ("fused_rnn.cc", "sparse_weights.cc"),
               "fused int8 GRU layer, dense weights")
SPARSE_GRU = CustomOp("KE_SPARSE_GRU_V1", 1, "Register_SPARSE_GRU", "fused_rnn.h",
                      ("fused_rnn.cc", "sparse_weights.cc"), "fused int8 GRU layer, sparse weights")

# By custom code.
CUSTOM_OPS = {op.name: op for op in (SPARSE_LSTM, SPARSE_FULLY_CONNECTED, SIMPLE_RNN, SPARSE_SIMPLE_RNN, GRU,
                                      SPARSE_GRU)}
