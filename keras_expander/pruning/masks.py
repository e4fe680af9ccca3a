"""Mask policies: weights + target sparsity -> 0/1 mask (which weights to keep).

Policies (docs/METHOD.md section 3):
- ``magnitude``: keep the largest |w| over the whole matrix, as tfmot's `prune_low_magnitude` does.
- ``per_gate_magnitude``: within each gate's graph, keep the largest |w| (per-gate thresholds, no degree floor):
  the ablation between ``magnitude`` and ``degree_floor_magnitude``.
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

MASK_POLICIES = ("magnitude", "per_gate_magnitude", "degree_floor_magnitude", "right_regular_magnitude",
                 "random_biregular", "random")


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


def right_regular_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """Magnitude mask in which every right node (column: an output unit in Keras' layout) keeps the same number
    of inputs, its largest |w|: a right-regular bipartite graph, whose right degrees differ by at most one when
    the kept count is not a multiple of the columns (the extra edges go to the columns whose next-largest |w|
    is largest). Sparse kernels then run equal-length rows.

    Args:
        weights: Float array of shape (left, right).
        sparsity: Fraction of entries to zero, in [0, 1).

    Returns:
        Bool array of shape (left, right), True = kept; exactly round((1 - sparsity) * left * right) entries.

    Raises:
        ValueError: `sparsity` outside [0, 1), or `weights` not 2-D.
    """
    sparsity = _check_sparsity(sparsity)
    magnitude = np.abs(np.asarray(weights, dtype=np.float64))
    if magnitude.ndim != 2:
        raise ValueError(f"Argument `weights` must be 2-D. Received shape {magnitude.shape}.")
    left, right = magnitude.shape
    degree, extra = divmod(kept_edges(magnitude.size, sparsity), right)
    order = np.argsort(-magnitude, axis=0, kind="stable")  # per column, rows by decreasing |w|
    columns = np.arange(right)
    mask = np.zeros(magnitude.shape, dtype=bool)
    mask[order[:degree], columns] = True
    if extra:
        chosen = np.argsort(-magnitude[order[degree], columns], kind="stable")[:extra]
        mask[order[degree, chosen], chosen] = True
    return mask


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


def blend_with_random(mask: np.ndarray, weights: np.ndarray, kept_share: float, seed: int = 0) -> np.ndarray:
    """Keeps the largest-|w| share of a mask's edges and moves the rest to uniformly random absent entries.

    The correction step of ``stop_rule="correct"``. Masks chosen by magnitude inherit the low-rank structure of
    trained weights (large rows pair with large columns), which raises mu_1 and can push Delta below zero at a
    sparsity where a random graph of the same density is still a good expander. Replacing the smallest
    (1 - kept_share) of the edges by random ones breaks that structure and keeps most of the weight mass (on
    rank-1-structured 128 x 128 weights at 70 % sparsity, kept_share = 0.75 restored Delta_R > 0 and kept 93 % of
    the magnitude mask's |w| sum). The edge count never changes, so the sparsity is exactly that of `mask`.

    Args:
        mask: Bool array of shape (left, right): the candidate mask, True = kept.
        weights: Float array of the same shape: the layer weights that ranked `mask`.
        kept_share: Fraction of the mask's edges to keep by magnitude, in [0, 1]; 1 returns `mask` unchanged, 0
            gives a random mask of the same density.
        seed: Seed of the numpy Generator that draws the new edges.

    Returns:
        Bool array of shape (left, right) with exactly as many True entries as `mask`. The moved edges first give
        one edge to every node the blend left isolated, so no node is isolated when `mask` had none and the moved
        edges suffice.

    Raises:
        ValueError: `kept_share` outside [0, 1], or `mask` and `weights` of different shapes.
    """
    if not 0.0 <= float(kept_share) <= 1.0:
        raise ValueError(f"Argument `kept_share` must be in [0, 1]. Received: kept_share={kept_share}")
    mask = np.asarray(mask, dtype=bool)
    magnitudes = np.abs(np.asarray(weights, dtype=np.float64))
    if mask.shape != magnitudes.shape:
        raise ValueError(f"Arguments `mask` and `weights` must have the same shape. Received {mask.shape} and "
                         f"{magnitudes.shape}.")
    left, right = mask.shape
    edges = np.flatnonzero(mask)
    keep = int(round(float(kept_share) * edges.size))
    ranked = edges[np.argsort(-magnitudes.ravel()[edges], kind="stable")]
    blended = np.zeros((left, right), dtype=bool)
    blended.ravel()[ranked[:keep]] = True
    rng = np.random.default_rng(seed)
    # Moved edges first reconnect the nodes the blend cut off (isolated rows paired with isolated columns, the rest
    # with random partners), so a unit is never dead when the budget allows; the remainder is uniform.
    rows = rng.permutation(np.flatnonzero(~blended.any(axis=1)))
    cols = rng.permutation(np.flatnonzero(~blended.any(axis=0)))
    pairs = min(rows.size, cols.size)
    reconnect = list(zip(rows[:pairs], cols[:pairs]))
    reconnect += [(row, rng.integers(right)) for row in rows[pairs:]]
    reconnect += [(rng.integers(left), col) for col in cols[pairs:]]
    budget = edges.size - keep
    for row, col in reconnect[:budget]:
        blended[row, col] = True
    budget -= min(budget, len(reconnect))
    absent = np.flatnonzero(~blended.ravel())  # moved edges may land back on their old entries
    blended.ravel()[rng.choice(absent, budget, replace=False)] = True
    return blended


def compute_mask(weights: np.ndarray, sparsity: float, policy: str, num_gates: int = 1, min_degree: int = 1,
                 seed: int = 0) -> np.ndarray:
    """Mask of one layer matrix under a policy; per-graph policies act on each gate's column block.

    Args:
        weights: Float array of shape (left, num_gates * H) (Keras layout: gates side by side in columns).
        sparsity: Target fraction of zeros, in [0, 1); or one per gate block (a sequence of `num_gates`, from a
            sparsity allocation: keras_expander.pruning.allocation), for the per-graph policies.
        policy: One of `MASK_POLICIES`.
        num_gates: Column blocks of the matrix (4 for LSTM, 1 for SimpleRNN and Dense).
        min_degree: Degree floor of ``degree_floor_magnitude``.
        seed: Seed of ``random_biregular`` and ``random`` (each gate gets seed + gate index).

    Returns:
        Bool array of the shape of `weights`, True = kept.

    Raises:
        ValueError: unknown `policy`, `sparsity` outside [0, 1), columns not divisible by `num_gates`, a bad
            `min_degree`, or per-gate sparsities of another length or with policy "magnitude".
    """
    if policy not in MASK_POLICIES:
        raise ValueError(f"Argument `policy` must be one of {MASK_POLICIES}. Received: policy={policy!r}")
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] % num_gates:
        raise ValueError(f"Argument `weights` must be 2-D with columns divisible by num_gates={num_gates}. "
                         f"Received shape {weights.shape}.")
    per_gate = np.ndim(sparsity) == 1
    if per_gate and (len(sparsity) != num_gates or policy == "magnitude"):
        raise ValueError(f"Argument `sparsity` must be one number, or one per gate block ({num_gates}) with a "
                         f"per-graph policy. Received: sparsity={list(sparsity)}, policy={policy!r}")
    if policy == "magnitude":
        return magnitude_mask(weights, sparsity)
    blocks = np.split(weights, num_gates, axis=1)
    targets = list(sparsity) if per_gate else [sparsity] * num_gates
    if policy == "per_gate_magnitude":
        return np.concatenate([magnitude_mask(block, s) for block, s in zip(blocks, targets)], axis=1)
    if policy == "degree_floor_magnitude":
        return np.concatenate([degree_floor_mask(block, s, min_degree) for block, s in zip(blocks, targets)], axis=1)
    if policy == "right_regular_magnitude":
        return np.concatenate([right_regular_mask(block, s) for block, s in zip(blocks, targets)], axis=1)
    draw = random_biregular_mask if policy == "random_biregular" else random_mask
    return np.concatenate([draw(block.shape, s, seed + gate) for gate, (block, s) in enumerate(zip(blocks, targets))],
                          axis=1)
