"""Sparsity allocation: how a layer's budget of non-zeros is split between its bipartite graphs.

A recurrent layer has one graph per gate and matrix (docs/METHOD.md section 1: an LSTM eight, a GRU six, a
SimpleRNN two). Every policy keeps the same total number of non-zeros per layer, that of ``uniform`` at the layer's
target sparsity s: B = sum over graphs k of round((1 - s) m_k n_k), for a graph of m_k left (input or hidden) and
n_k right (unit) nodes. The mask policy then chooses which entries of each graph to keep.

Policies:
- ``uniform``: every graph keeps round((1 - s) m_k n_k) entries (the default, and what the masks did before).
- ``erk``: Erdos-Renyi densities, density_k = eps (m_k + n_k) / (m_k n_k) (Mocanu et al., "Scalable training of
  artificial neural networks with adaptive sparse connectivity inspired by network science", Nature
  Communications 9, 2383, 2018; Evci et al., "Rigging the Lottery", ICML 2020, whose Erdos-Renyi-Kernel adds the
  kernel dimensions of convolutions, absent from a matrix). eps is solved so that the graphs keep B entries; a
  graph whose density would exceed 1 is kept dense and eps solved again over the rest, as RigL's implementation
  does.
- ``expansion`` (ours): every graph gets the edge count at which a biregular graph of its shape would have the same
  Ramanujan spectral gap ratio gamma = 1 - (sqrt(d_L - 1) + sqrt(d_R - 1)) / sqrt(d_L d_R), with d_L = E / m and
  d_R = E / n its average degrees (docs/METHOD.md section 2: sqrt(d_L d_R) is the top eigenvalue mu_0 of a
  (d_L, d_R)-biregular graph and sqrt(d_L - 1) + sqrt(d_R - 1) the Ramanujan bound on mu_1, Feng and Li 1996), the
  largest gamma the budget B affords: equal margins of expansion in every graph. gamma rises with E once both
  average degrees are at least 2 (E >= 2 max(m, n)); below, the bound says nothing (degree 1 is a matching, degree
  2 has gamma <= 0), so every graph first gets that floor, and where B cannot pay every floor it is split in
  proportion to the floors (the same share of a minimal expander for every graph). A wide input graph (few
  inputs, many units) reaches a given gap with fewer edges than a square recurrent graph, so the policy moves
  edges between matrices by their shapes alone; it never looks at the weights.

Counts are integers: the real-valued allocation is rounded by largest remainders so that the total is exactly B.
"""

from __future__ import annotations

import math

import numpy as np

ALLOCATIONS = ("uniform", "erk", "expansion")


def _check_name(allocation: str) -> None:
    if allocation not in ALLOCATIONS:
        raise ValueError(f"Argument `allocation` must be one of {ALLOCATIONS}. Received: allocation={allocation!r}")


def check_allocation(allocation: str, mask_policy: str) -> None:
    """Raises ValueError for an unknown `allocation`, or one that needs per-graph budgets under a mask policy that
    ranks the whole matrix ("magnitude", tfmot's top-k over the stacked gates)."""
    _check_name(allocation)
    if allocation != "uniform" and mask_policy == "magnitude":
        raise ValueError(f"Argument `allocation`={allocation!r} splits the budget per graph, which "
                         f"mask_policy='magnitude' (one top-k over the whole matrix) ignores: use a per-graph mask "
                         f"policy such as 'degree_floor_magnitude', or allocation='uniform'.")


def ramanujan_gap_ratio(edges: float, left: int, right: int) -> float:
    """1 - (sqrt(d_L - 1) + sqrt(d_R - 1)) / sqrt(d_L d_R) of a (d_L, d_R)-biregular graph with `edges` edges.

    Args:
        edges: Edge count E (real), 0 < E <= left * right.
        left, right: Node counts m and n; d_L = E / m, d_R = E / n.

    Returns:
        The ratio (dimensionless, below 1; larger is a better expander); -inf where a side's degree is below 1.
    """
    d_left, d_right = edges / left, edges / right
    if min(d_left, d_right) < 1.0:
        return -math.inf
    return 1.0 - (math.sqrt(d_left - 1.0) + math.sqrt(d_right - 1.0)) / math.sqrt(d_left * d_right)


def expansion_floor(left: int, right: int) -> int:
    """min(2 max(m, n), m n): the edges at which both average degrees reach 2, where the Ramanujan gap ratio starts
    to rise with E."""
    return min(2 * max(left, right), left * right)


def _edges_for_gap(gap: float, left: int, right: int) -> float:
    """The smallest E in [expansion_floor, m n] whose ratio is >= `gap` (the ratio rises with E there), by
    bisection; m n when even that falls short."""
    low, high = float(expansion_floor(left, right)), float(left * right)
    if ramanujan_gap_ratio(high, left, right) < gap:
        return high
    if ramanujan_gap_ratio(low, left, right) >= gap:
        return low
    for _ in range(60):
        middle = (low + high) / 2
        if ramanujan_gap_ratio(middle, left, right) >= gap:
            high = middle
        else:
            low = middle
    return high


def _round_to_total(values: np.ndarray, total: int, caps: np.ndarray) -> np.ndarray:
    """Integers within [0, caps] summing to `total`, each the floor of its value or one more (largest remainders
    first)."""
    values = np.clip(values, 0, caps)
    counts = np.floor(values).astype(np.int64)
    order = np.argsort(-(values - counts), kind="stable")
    for index in order:
        if counts.sum() >= total:
            break
        if counts[index] < caps[index]:
            counts[index] += 1
    while counts.sum() < total:  # rounding left a deficit that only graphs below their caps can take
        counts[np.flatnonzero(counts < caps)[0]] += 1
    while counts.sum() > total:
        counts[np.argmax(counts)] -= 1
    return counts


def allocate(shapes: list[tuple[int, int]], sparsity: float, allocation: str = "uniform") -> list[int]:
    """Non-zeros of each graph of one layer.

    Args:
        shapes: (m, n) of every graph of the layer: left (input or hidden) and right (unit) nodes.
        sparsity: The layer's target sparsity s, in [0, 1).
        allocation: One of `ALLOCATIONS`.

    Returns:
        Kept entries per graph, in the order of `shapes`; their sum is sum_k round((1 - s) m_k n_k) for every
        policy, each within [0, m_k n_k].

    Raises:
        ValueError: unknown `allocation`, `sparsity` outside [0, 1), or a shape with a side below 1.
    """
    _check_name(allocation)
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"Argument `sparsity` must be in [0, 1). Received: sparsity={sparsity}")
    if not shapes or min(min(shape) for shape in shapes) < 1:
        raise ValueError(f"Argument `shapes` must list graphs of at least 1 x 1 nodes. Received: shapes={shapes}")
    sizes = np.array([m * n for m, n in shapes], dtype=np.int64)
    uniform = [int(round((1.0 - sparsity) * size)) for size in sizes]
    budget = sum(uniform)
    if allocation == "uniform" or budget in (0, int(sizes.sum())):
        return uniform
    if allocation == "erk":
        rates = np.array([(m + n) / (m * n) for m, n in shapes])
        dense = np.zeros(len(shapes), dtype=bool)
        while True:  # RigL: graphs that would exceed density 1 are dense; solve eps over the others
            scale = (budget - sizes[dense].sum()) / float((rates * sizes)[~dense].sum())
            over = ~dense & (scale * rates > 1.0)
            if not over.any():
                break
            dense |= over
        values = np.where(dense, sizes, scale * rates * sizes)
    else:
        def edges(gap):
            return np.array([_edges_for_gap(gap, m, n) for m, n in shapes])

        floors = np.array([expansion_floor(m, n) for m, n in shapes], dtype=np.float64)
        low, high = -1.0, 1.0  # the ratio at the floor is >= 0 (degree 2 on the smaller-degree side)
        if floors.sum() >= budget:
            values = budget * floors / floors.sum()
        else:
            for _ in range(60):
                middle = (low + high) / 2
                if edges(middle).sum() <= budget:
                    low = middle
                else:
                    high = middle
            values = edges(low)
            values = values * budget / values.sum()  # the bisection's last fraction of an edge, spread evenly
    return [int(count) for count in _round_to_total(values.astype(np.float64), budget, sizes)]


def matrix_sparsities(shapes: dict, num_gates: int, sparsity: float, allocation: str = "uniform") -> dict:
    """The sparsity of each gate block of each matrix of one layer under an allocation.

    Args:
        shapes: Matrix name -> (left, num_gates * H) (Keras layout: gates side by side in columns).
        num_gates: Gate blocks per matrix (4 LSTM, 3 GRU, 1 SimpleRNN).
        sparsity: The layer's target sparsity, in [0, 1).
        allocation: One of `ALLOCATIONS`.

    Returns:
        Matrix name -> `sparsity` itself for "uniform" (every graph at the target), else a list of `num_gates`
        sparsities, 1 - kept / (left H) with the kept counts of `allocate` (so `masks.kept_edges` gives them back
        exactly).

    Raises:
        ValueError: an unknown `allocation`; for the other policies also as `allocate`, or columns not divisible by
            `num_gates`.
    """
    _check_name(allocation)
    if allocation == "uniform":  # the masks check the sparsity
        return {key: sparsity for key in shapes}
    graphs = []
    for key, (left, columns) in shapes.items():
        if columns % num_gates:
            raise ValueError(f"Argument `shapes` must have columns divisible by num_gates={num_gates}. Received: "
                             f"{key} of shape {(left, columns)}")
        graphs += [(key, left, columns // num_gates)] * num_gates
    kept = allocate([(left, right) for _, left, right in graphs], sparsity, allocation)
    result = {key: [] for key in shapes}
    for (key, left, right), count in zip(graphs, kept):
        result[key].append(1.0 - count / (left * right))
    return result
