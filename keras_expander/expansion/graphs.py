"""Recurrent layers as bipartite graphs: layer -> named biadjacency matrices.

Unfolded over time, a recurrent layer is a stack of bipartite layers x_t -> h_t (the `kernel`, shape (I, H) per gate)
and h_{t-1} -> h_t (the `recurrent_kernel`, shape (H, H) per gate). Weights are shared across time, so each matrix
is one graph (Kalra, Biswas, Mitra, Basu, arXiv 2403.11100: expansion per bipartite layer of the unfolded network).

Keras stores gates side by side in columns: column block g*H:(g+1)*H is gate g, in the order i, f, c, o for LSTM
and z, r, h (update, reset, candidate) for GRU, with either value of `reset_after` (it changes where the reset gate
acts and the bias shape, not the kernels). Gate views of a gated matrix:
- ``per_gate``: one graph per gate, named ``<layer>/<matrix>/<gate>`` (a layer is as good as its worst gate);
- ``union``: edge u -> v if any gate has it, named ``<layer>/<matrix>/union``;
- ``stacked``: the whole (left, gates*H) matrix as one graph, named ``<layer>/<matrix>/stacked``.
Layers without gates (SimpleRNN, and Dense when asked for) have one graph per matrix, gate label ``all``, in every
view. A Bidirectional layer has the matrices of both directions, named ``<layer>/forward/<matrix>/<gate>`` and
``<layer>/backward/<matrix>/<gate>``. `keras.layers.RNN` over an LSTMCell, GRUCell or SimpleRNNCell is read like
the corresponding layer.

This module imports no TensorFlow; the layers' matrices are read by `keras_expander.layers`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_expander.layers import SINGLE_GATE, LayerMatrices, layer_matrices

GATE_VIEWS = ("per_gate", "union", "stacked")


@dataclasses.dataclass(frozen=True)
class BipartiteGraph:
    """One bipartite layer of the time-unfolded network.

    Attributes:
        name: ``<layer>/<matrix>/<gate>``.
        layer: Layer name (the wrapped layer's name for a pruning wrapper).
        matrix: "kernel" (input -> hidden) or "recurrent_kernel" (hidden(t-1) -> hidden(t)), prefixed with
            "forward/" or "backward/" in a Bidirectional layer.
        gate: "i", "f", "c", "o" (LSTM), "z", "r", "h" (GRU), "union", "stacked" or "all".
        mask: Bool array of shape (left, right): True where an edge exists.
        weights: Float array of shape (left, right): W * mask (zero off the mask).
    """

    name: str
    layer: str
    matrix: str
    gate: str
    mask: np.ndarray
    weights: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(left, right) node counts."""
        return tuple(self.mask.shape)

    @property
    def unweighted(self) -> np.ndarray:
        """0/1 float biadjacency matrix of shape (left, right)."""
        return self.mask.astype(np.float64)

    @property
    def weighted(self) -> np.ndarray:
        """|W * mask|, float array of shape (left, right) (unnormalised; `spectral_metrics` normalises it)."""
        return np.abs(self.weights)

    @property
    def sparsity(self) -> float:
        """Fraction of absent edges, in [0, 1]."""
        return 1.0 - float(np.count_nonzero(self.mask)) / self.mask.size


def graphs_from_matrices(matrices: LayerMatrices, gate_view: str = "per_gate") -> list[BipartiteGraph]:
    """Splits a layer's matrices into named bipartite graphs.

    Args:
        matrices: From `layer_matrices` (or built by hand with the same shapes).
        gate_view: "per_gate", "union" or "stacked" (see the module docstring).

    Returns:
        The graphs in the order kernel gates..., recurrent_kernel gates....

    Raises:
        ValueError: unknown `gate_view`, or a matrix whose column count is not a multiple of the gate count.
    """
    if gate_view not in GATE_VIEWS:
        raise ValueError(f"Argument `gate_view` must be one of {GATE_VIEWS}. Received: gate_view={gate_view!r}")
    graphs = []
    for key, kernel in matrices.kernels.items():
        mask = matrices.masks[key]
        num_gates = len(matrices.gates)
        if kernel.shape[1] % num_gates:
            raise ValueError(f"Matrix {matrices.layer}/{key} has {kernel.shape[1]} columns, not a multiple of its "
                             f"{num_gates} gates.")
        blocks = np.split(kernel, num_gates, axis=1)
        mask_blocks = np.split(mask, num_gates, axis=1)

        def make(gate, block_mask, block_weights, key=key):
            return BipartiteGraph(name=f"{matrices.layer}/{key}/{gate}", layer=matrices.layer, matrix=key, gate=gate,
                                  mask=block_mask, weights=block_weights)

        if num_gates == 1:
            graphs.append(make(SINGLE_GATE, mask, kernel))
        elif gate_view == "per_gate":
            graphs.extend(make(gate, m, w) for gate, m, w in zip(matrices.gates, mask_blocks, blocks))
        elif gate_view == "union":
            union_mask = np.logical_or.reduce(mask_blocks)
            # Weight of a union edge: the largest |w| among the gates that have it.
            union_weights = np.max(np.abs(np.stack(blocks)), axis=0)
            graphs.append(make("union", union_mask, union_weights))
        else:
            graphs.append(make("stacked", mask, kernel))
    return graphs


def layer_graphs(layer, gate_view: str = "per_gate") -> list[BipartiteGraph]:
    """Bipartite graphs of one layer: `graphs_from_matrices(layer_matrices(layer), gate_view)`.

    Args:
        layer: See `layer_matrices`.
        gate_view: "per_gate", "union" or "stacked".

    Returns:
        List of `BipartiteGraph`.

    Raises:
        TypeError: unsupported layer (the message names its class).
        ValueError: unknown `gate_view` or unbuilt layer.
    """
    return graphs_from_matrices(layer_matrices(layer), gate_view)
