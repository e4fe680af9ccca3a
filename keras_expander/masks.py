"""Mask policies: weights + target sparsity -> 0/1 mask (which weights to keep).

Policies (docs/METHOD.md section 3):
- ``magnitude``: keep the largest |w| over the whole matrix, as tfmot's `prune_low_magnitude` does.
- ``degree_floor_magnitude``: within each gate's graph, keep the largest |w| but never let a node's degree fall
  below `min_degree` (no hidden unit and no input cut off); keeps graphs near-biregular. The default for
  expansion-aware pruning.
- ``random_biregular``: within each gate's graph, a seeded random mask whose left and right degrees differ by at
  most one (near-Ramanujan with high probability, Marcus, Spielman, Srivastava 2015); structure only, the weights
  are ignored.
- ``random``: within each gate's graph, a seeded uniformly random (unstructured) mask: the random-pruning baseline
  of docs/METHOD.md section 3.

Every policy keeps exactly round((1 - sparsity) * size) entries of each graph (of the matrix for ``magnitude``),
so all policies reach the same sparsity.
"""

from __future__ import annotations

import numpy as np

MASK_POLICIES = ("magnitude", "degree_floor_magnitude", "random_biregular", "random")


def kept_edges(size: int, sparsity: float) -> int:
    """Number of entries kept at a sparsity: round((1 - sparsity) * size), as tfmot rounds."""
    return int(round((1.0 - sparsity) * size))


def _check_sparsity(sparsity: float) -> float:
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"Argument `sparsity` must be in [0, 1). Received: sparsity={sparsity}")
    return float(sparsity)


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """Keeps the round((1 - sparsity) * size) entries of largest |w| (ties broken by position).

    Args:
        weights: Float array of any shape.
        sparsity: Fraction of entries to zero, in [0, 1).

    Returns:
        Bool array of the same shape, True = kept.

    Raises:
        ValueError: `sparsity` outside [0, 1).
    """
    sparsity = _check_sparsity(sparsity)
    flat = np.abs(np.asarray(weights, dtype=np.float64)).ravel()
    keep = kept_edges(flat.size, sparsity)
    mask = np.zeros(flat.size, dtype=bool)
    if keep:
        mask[np.argsort(-flat, kind="stable")[:keep]] = True
    return mask.reshape(np.shape(weights))


def degree_floor_mask(weights: np.ndarray, sparsity: float, min_degree: int = 1) -> np.ndarray:
    """Magnitude mask of one bipartite graph, repaired so that every node's degree is at least `min_degree`.

    Starts from the magnitude mask (round((1 - sparsity) * size) largest |w|). Nodes below the floor then get their
    largest missing edges, scanning by decreasing |w| twice: first edges whose two ends are both short (a greedy
    matching covers two nodes per edge), then edges with one short end. As many of the smallest kept edges are
    dropped as were added, choosing edges whose two ends stay above the floor. When the budget is too small for the
    floor (about max(left, right) * min_degree edges are needed), the smallest edges are dropped regardless and
    some nodes stay below it (they show up as isolated nodes in `spectral_metrics`): the sparsity target is always
    met exactly. When magnitude alone meets the floor, the result is the magnitude mask.

    Args:
        weights: Float array of shape (left, right).
        sparsity: Fraction of entries to zero, in [0, 1).
        min_degree: Minimum degree of every left and right node, >= 1.

    Returns:
        Bool array of shape (left, right), True = kept, with exactly round((1 - sparsity) * left * right) entries.

    Raises:
        ValueError: `sparsity` outside [0, 1), `weights` not 2-D, or `min_degree` < 1 or larger than the other side
            of the graph (a left node cannot have more than `right` edges).
    """
    sparsity = _check_sparsity(sparsity)
    magnitudes = np.abs(np.asarray(weights, dtype=np.float64))
    if magnitudes.ndim != 2:
        raise ValueError(f"Argument `weights` must be 2-D (left, right). Received shape {magnitudes.shape}.")
    left, right = magnitudes.shape
    if not 1 <= int(min_degree) <= min(left, right):
        raise ValueError(f"Argument `min_degree` must be in [1, {min(left, right)}] for a {left} x {right} graph "
                         f"(a node cannot have more edges than the other side has nodes). Received: "
                         f"min_degree={min_degree}")
    keep = kept_edges(magnitudes.size, sparsity)
    order = np.argsort(-magnitudes.ravel(), kind="stable")
    mask = np.zeros(magnitudes.size, dtype=bool)
    mask[order[:keep]] = True
    row_degree = mask.reshape(left, right).sum(axis=1).tolist()
    col_degree = mask.reshape(left, right).sum(axis=0).tolist()
    short_rows = sum(degree < min_degree for degree in row_degree)
    short_cols = sum(degree < min_degree for degree in col_degree)
    if short_rows + short_cols == 0 or keep == 0:
        return mask.reshape(left, right)

    added = np.zeros(magnitudes.size, dtype=bool)
    candidates = order[keep:].tolist()
    for both_short in (True, False):
        for index in candidates:
            if (short_rows == 0 or short_cols == 0) if both_short else short_rows + short_cols == 0:
                break
            row, col = divmod(index, right)
            row_short, col_short = row_degree[row] < min_degree, col_degree[col] < min_degree
            if not added[index] and ((row_short and col_short) if both_short else (row_short or col_short)):
                added[index] = True
                row_degree[row] += 1
                col_degree[col] += 1
                short_rows -= int(row_degree[row] == min_degree)
                short_cols -= int(col_degree[col] == min_degree)
    mask |= added

    excess = int(added.sum())
    for keep_floor in (True, False):  # drop smallest edges, sparing the floor while the budget allows
        for index in order[::-1].tolist():
            if excess == 0:
                break
            row, col = divmod(index, right)
            if mask[index] and (not keep_floor or (row_degree[row] > min_degree and col_degree[col] > min_degree)):
                mask[index] = False
                row_degree[row] -= 1
                col_degree[col] -= 1
                excess -= 1
    return mask.reshape(left, right)


def _balanced_degrees(total: int, nodes: int, rng: np.random.Generator) -> np.ndarray:
    degrees = np.full(nodes, total // nodes, dtype=np.int64)
    degrees[rng.permutation(nodes)[: total % nodes]] += 1
    return degrees


def random_biregular_mask(shape: tuple[int, int], sparsity: float, seed: int = 0) -> np.ndarray:
    """A random bipartite graph with left degrees and right degrees each as equal as possible.

    Built as a configuration model (left and right stubs paired by a random permutation) whose repeated edges are
    removed by random stub swaps; for densities above one half the complement is built instead, so the result is
    always a simple graph with exactly round((1 - sparsity) * left * right) edges.

    Args:
        shape: (left, right).
        sparsity: Fraction of entries to zero, in [0, 1).
        seed: Seed of the numpy Generator; the same seed gives the same mask.

    Returns:
        Bool array of shape (left, right); row sums differ by at most 1, and so do column sums.

    Raises:
        ValueError: `sparsity` outside [0, 1).
    """
    sparsity = _check_sparsity(sparsity)
    left, right = (int(n) for n in shape)
    keep = kept_edges(left * right, sparsity)
    complement = keep > left * right // 2
    edges = left * right - keep if complement else keep
    rng = np.random.default_rng(seed)
    mask = np.zeros((left, right), dtype=bool)
    if edges:
        left_stubs = np.repeat(np.arange(left), _balanced_degrees(edges, left, rng))
        right_stubs = rng.permutation(np.repeat(np.arange(right), _balanced_degrees(edges, right, rng)))
        # Remove repeated edges by swapping right ends with random stubs; a swap is taken only when both new edges
        # are absent, so every degree is kept and the graph becomes simple.
        present: dict[int, int] = {}
        repeated = []
        for index, code in enumerate(left_stubs * right + right_stubs):
            if code in present:
                repeated.append(index)
            else:
                present[code] = index
        for index in repeated:
            for _ in range(100 * edges):
                partner = int(rng.integers(edges))
                new_own = left_stubs[index] * right + right_stubs[partner]
                new_partner = left_stubs[partner] * right + right_stubs[index]
                old_partner = left_stubs[partner] * right + right_stubs[partner]
                if present.get(old_partner) != partner or new_own in present or new_partner in present \
                        or new_own == new_partner:
                    continue
                del present[old_partner]
                right_stubs[index], right_stubs[partner] = right_stubs[partner], right_stubs[index]
                present[new_own], present[new_partner] = index, partner
                break
            else:
                raise RuntimeError(f"Could not build a simple random biregular graph of shape {shape} at sparsity "
                                   f"{sparsity}.")
        mask[left_stubs, right_stubs] = True
    return ~mask if complement else mask


def random_mask(shape: tuple[int, int], sparsity: float, seed: int = 0) -> np.ndarray:
    """A uniformly random mask with exactly round((1 - sparsity) * size) kept entries.

    Args:
        shape: (left, right).
        sparsity: Fraction of entries to zero, in [0, 1).
        seed: Seed of the numpy Generator.

    Returns:
        Bool array of shape `shape`, True = kept.

    Raises:
        ValueError: `sparsity` outside [0, 1).
    """
    size = int(shape[0]) * int(shape[1])
    mask = np.zeros(size, dtype=bool)
    mask[np.random.default_rng(seed).permutation(size)[: kept_edges(size, _check_sparsity(sparsity))]] = True
    return mask.reshape(shape)


def compute_mask(weights: np.ndarray, sparsity: float, policy: str, num_gates: int = 1, min_degree: int = 1,
                 seed: int = 0) -> np.ndarray:
    """Mask of one layer matrix under a policy; per-graph policies act on each gate's column block.

    Args:
        weights: Float array of shape (left, num_gates * H) (Keras layout: gates side by side in columns).
        sparsity: Target fraction of zeros, in [0, 1).
        policy: One of `MASK_POLICIES`.
        num_gates: Column blocks of the matrix (4 for LSTM, 1 for SimpleRNN and Dense).
        min_degree: Degree floor of ``degree_floor_magnitude``.
        seed: Seed of ``random_biregular`` and ``random`` (each gate gets seed + gate index).

    Returns:
        Bool array of the shape of `weights`, True = kept.

    Raises:
        ValueError: unknown `policy`, `sparsity` outside [0, 1), columns not divisible by `num_gates`, or a bad
            `min_degree`.
    """
    if policy not in MASK_POLICIES:
        raise ValueError(f"Argument `policy` must be one of {MASK_POLICIES}. Received: policy={policy!r}")
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] % num_gates:
        raise ValueError(f"Argument `weights` must be 2-D with columns divisible by num_gates={num_gates}. "
                         f"Received shape {weights.shape}.")
    if policy == "magnitude":
        return magnitude_mask(weights, sparsity)
    blocks = np.split(weights, num_gates, axis=1)
    if policy == "degree_floor_magnitude":
        return np.concatenate([degree_floor_mask(block, sparsity, min_degree) for block in blocks], axis=1)
    draw = random_biregular_mask if policy == "random_biregular" else random_mask
    return np.concatenate([draw(block.shape, sparsity, seed + gate) for gate, block in enumerate(blocks)], axis=1)
