"""Spectral expansion metrics of one bipartite graph given by its biadjacency matrix.

A recurrent weight matrix of shape (left, right) is read as the biadjacency matrix B of a bipartite graph (left
nodes = rows, right nodes = columns). Its adjacency matrix A = [[0, B], [B^T, 0]] has eigenvalues +-sigma_i(B)
and zeros, so the two numbers expansion is judged by are mu_0 = sigma_1(B) and mu_1 = sigma_2(B). They are
computed as the top two eigenvalues of the smaller Gram matrix (B B^T or B^T B), densely with LAPACK or with
ARPACK on a sparse matrix.

Formulas and sources (see also docs/METHOD.md of the project):
- Ramanujan bound of a (d_L, d_R)-biregular graph: sqrt(d_L - 1) + sqrt(d_R - 1) (Feng and Li 1996; Marcus,
  Spielman and Srivastava 2015). For irregular graphs the mean degrees over non-isolated nodes are used.
- Delta_R = sqrt(d_L - 1) + sqrt(d_R - 1) - mu_1 and Delta_S = 2 sqrt(mu_0 - 1) - mu_1: Hoang, Liu, Marculescu,
  Wang, "Revisiting Pruning at Initialization through the Lens of Ramanujan Graph", ICLR 2023 (their `delta_r`
  and `delta_s`), as used by Kalra, Biswas, Mitra, Basu, arXiv 2403.11100 (2024), Figures 1-8.
- Cheeger inequality for the normalized Laplacian L = I - D^-1/2 A D^-1/2 with second eigenvalue l_2:
  l_2 / 2 <= conductance <= sqrt(2 l_2) (Chung, "Spectral Graph Theory", 1997, Theorem 2.2 / Lemma 2.1). Edge
  expansion h = min |E(S, V \\ S)| / |S| over 0 < |S| <= |V| / 2 then satisfies
  d_min l_2 / 2 <= h <= d_max sqrt(2 l_2), because d_min |S| <= min(vol S, vol V\\S) <= d_max |S| for the
  smaller side.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
import threadpoolctl

METHODS = ("auto", "dense", "sparse")
# Above this many nodes on the smaller side, and at or below this density, ARPACK on the sparse Gram matrix beats a
# dense LAPACK eigensolve (one BLAS thread, 2 cores: 1024 x 1024 at 1 % 19 ms vs 97 ms, at 3 % even, at 10 %
# 235 ms vs 91 ms).
_SPARSE_MIN_NODES = 384
_SPARSE_MAX_DENSITY = 0.02


def single_threaded_blas():
    """Context manager that limits BLAS to one thread (threadpoolctl) around many small eigenproblems.

    Multi-threaded BLAS on 128 x 128 Gram matrices competes with TensorFlow's thread pools during training: a pruning
    step of an LSTM(128) took 117 ms with two BLAS threads and 16 ms with one (2 cores). Entering the context costs
    about 2 ms, so wrap whole analyses, not single calls.
    """
    return threadpoolctl.threadpool_limits(limits=1, user_api="blas")


@dataclasses.dataclass(frozen=True)
class SpectralMetrics:
    """Expansion metrics of one bipartite graph (all dimensionless).

    Attributes:
        shape: (left, right) node counts of the biadjacency matrix.
        weighted: False for the 0/1 graph; True for |W| scaled so that its mean non-zero entry is 1
            (project convention, docs/METHOD.md section 2: equal weights give exactly the unweighted numbers).
        num_edges: Non-zero entries of the biadjacency matrix.
        density: num_edges / (left * right); remaining edges q (%) = 100 * density.
        mu0: Largest adjacency eigenvalue, sigma_1(B).
        mu1: Largest non-trivial adjacency eigenvalue, sigma_2(B) (0 when min(shape) == 1).
        spectral_gap: mu0 - mu1.
        mean_left_degree: Mean row sum over non-isolated left nodes (weighted degree when `weighted`).
        mean_right_degree: Mean column sum over non-isolated right nodes.
        min_left_degree, max_left_degree, min_right_degree, max_right_degree: Over all nodes, isolated included.
        isolated_left: Left nodes of degree 0 (dead inputs or dead units).
        isolated_right: Right nodes of degree 0.
        ramanujan_bound: sqrt(mean_left_degree - 1) + sqrt(mean_right_degree - 1).
        delta_r: ramanujan_bound - mu1 (Hoang et al. 2023).
        delta_s: 2 sqrt(mu0 - 1) - mu1 (Hoang et al. 2023).
        laplacian_lambda2: Second smallest eigenvalue of the normalized Laplacian of the graph without its
            isolated nodes (0 when that graph is disconnected).
        conductance_lower, conductance_upper: l_2 / 2 and sqrt(2 l_2) (Cheeger inequality).
        cheeger_lower, cheeger_upper: Bounds on the edge expansion (Cheeger constant) h of the graph without its
            isolated nodes: d_min l_2 / 2 and d_max sqrt(2 l_2).
        undefined_reason: Empty when every field is defined; otherwise why the `nan` fields are undefined
            (for example "empty graph: no edges").
    """

    shape: tuple[int, int]
    weighted: bool
    num_edges: int
    density: float
    mu0: float
    mu1: float
    spectral_gap: float
    mean_left_degree: float
    mean_right_degree: float
    min_left_degree: float
    max_left_degree: float
    min_right_degree: float
    max_right_degree: float
    isolated_left: int
    isolated_right: int
    ramanujan_bound: float
    delta_r: float
    delta_s: float
    laplacian_lambda2: float
    conductance_lower: float
    conductance_upper: float
    cheeger_lower: float
    cheeger_upper: float
    undefined_reason: str = ""

    @property
    def remaining_edges_percent(self) -> float:
        """Remaining edges q in percent of left * right."""
        return 100.0 * self.density

    def to_dict(self) -> dict:
        """Returns the fields as a JSON-ready dict (`nan` stays `nan`; shape becomes a list)."""
        out = dataclasses.asdict(self)
        out["shape"] = list(self.shape)
        return out


def _check_matrix(biadjacency, name: str) -> np.ndarray:
    matrix = np.asarray(biadjacency, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(
            f"Argument `biadjacency` of graph {name!r} must be 2-D (left, right). Received shape {matrix.shape}."
        )
    if not np.all(np.isfinite(matrix)):
        bad = int(np.size(matrix) - np.count_nonzero(np.isfinite(matrix)))
        raise ValueError(f"Graph {name!r} has {bad} NaN or infinite weights; its spectrum is undefined.")
    return matrix


def top_singular_values(biadjacency, method: str = "auto") -> tuple[float, float]:
    """Largest two singular values of a biadjacency matrix: (mu_0, mu_1) of the bipartite graph.

    Computed as the top two eigenvalues of the smaller Gram matrix (B B^T or B^T B) and square-rooted
    (docs/METHOD.md section 1). `eigsh` on the adjacency matrix itself would return +-mu_0 and miss mu_1.

    Args:
        biadjacency: Array of shape (left, right), finite, any sign (callers pass 0/1 or |W|).
        method: "dense" (scipy.linalg.eigh on the Gram matrix), "sparse" (scipy.sparse.linalg.eigsh, ARPACK, on
            a CSR Gram matrix) or "auto" (sparse for large sparse matrices, dense otherwise). Both agree to 1e-6.

    Returns:
        (mu0, mu1) as floats, mu0 >= mu1 >= 0. mu1 is 0 when min(left, right) == 1; both are 0 for an all-zero
        matrix.

    Raises:
        ValueError: `method` is not one of "auto", "dense", "sparse", or the matrix is not 2-D.
    """
    if method not in METHODS:
        raise ValueError(f"Argument `method` must be one of {METHODS}. Received: method={method!r}")
    matrix = np.asarray(biadjacency, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"Argument `biadjacency` must be 2-D (left, right). Received shape {matrix.shape}.")
    if matrix.shape[0] > matrix.shape[1]:
        matrix = matrix.T
    n = matrix.shape[0]
    if n == 0 or not np.any(matrix):
        return 0.0, 0.0
    if method == "auto":
        density = np.count_nonzero(matrix) / matrix.size
        method = "sparse" if n >= _SPARSE_MIN_NODES and density <= _SPARSE_MAX_DENSITY else "dense"
    if n <= 3:  # ARPACK needs k < n; tiny Gram matrices are cheaper densely anyway
        method = "dense"
    if method == "dense":
        gram = matrix @ matrix.T
        if n == 1:
            eigenvalues = np.array([0.0, gram[0, 0]])
        else:
            try:
                eigenvalues = scipy.linalg.eigh(gram, eigvals_only=True, subset_by_index=[n - 2, n - 1])
            except np.linalg.LinAlgError:  # LAPACK's MRRR driver can fail on clustered spectra; full solve can't
                eigenvalues = scipy.linalg.eigh(gram, eigvals_only=True, driver="evd")[-2:]
    else:
        sparse = scipy.sparse.csr_matrix(matrix)
        gram = (sparse @ sparse.T).tocsr()
        start = np.random.default_rng(0).uniform(0.5, 1.5, size=n)  # fixed start vector: reproducible results
        eigenvalues = scipy.sparse.linalg.eigsh(gram, k=2, which="LA", v0=start, return_eigenvectors=False)
    eigenvalues = np.sort(np.clip(eigenvalues, 0.0, None))
    # Eigenvalues of the Gram matrix below its rounding floor are zero: without this, sqrt turns ~1e-12 of
    # rounding noise into a spurious mu_1 of ~1e-6 (for example on complete bipartite graphs).
    eigenvalues[eigenvalues < eigenvalues[-1] * n * np.finfo(np.float64).eps * 8] = 0.0
    return float(math.sqrt(eigenvalues[-1])), float(math.sqrt(eigenvalues[-2]))


def _second_laplacian_eigenvalue(matrix: np.ndarray, method: str) -> float:
    """l_2 of the normalized Laplacian of a bipartite graph with no isolated nodes (weights allowed).

    With N = D_L^-1/2 B D_R^-1/2, the normalized adjacency has eigenvalues +-sigma_i(N) and |left - right| zeros, so
    the Laplacian spectrum is {1 - sigma_i} u {1 + sigma_i} u {1}; sigma_1(N) = 1.
    """
    left, right = matrix.shape
    normalized = matrix / np.sqrt(matrix.sum(axis=1))[:, None] / np.sqrt(matrix.sum(axis=0))[None, :]
    if min(left, right) >= 2:
        _, sigma2 = top_singular_values(normalized, method=method)
        return float(max(0.0, 1.0 - sigma2))
    if left != right:  # a star: spectrum {0, 1, ..., 1, 2}
        return 1.0
    return 2.0  # a single edge: spectrum {0, 2}


def _nan_metrics(shape, weighted, num_edges, isolated_left, isolated_right, reason) -> SpectralMetrics:
    nan = float("nan")
    return SpectralMetrics(
        shape=shape, weighted=weighted, num_edges=num_edges, density=num_edges / max(1, shape[0] * shape[1]),
        mu0=0.0, mu1=0.0, spectral_gap=0.0, mean_left_degree=nan, mean_right_degree=nan,
        min_left_degree=0.0, max_left_degree=0.0, min_right_degree=0.0, max_right_degree=0.0,
        isolated_left=isolated_left, isolated_right=isolated_right, ramanujan_bound=nan, delta_r=nan,
        delta_s=nan, laplacian_lambda2=nan, conductance_lower=nan, conductance_upper=nan, cheeger_lower=nan,
        cheeger_upper=nan, undefined_reason=reason,
    )


def spectral_metrics(biadjacency, weighted: bool = False, method: str = "auto",
                     name: str = "graph") -> SpectralMetrics:
    """Expansion metrics of one bipartite graph.

    Args:
        biadjacency: Array of shape (left, right). Unweighted (`weighted=False`): every non-zero entry is an edge
            of weight 1. Weighted: |entries|, scaled so that the mean non-zero entry is 1 (project convention,
            docs/METHOD.md section 2).
        weighted: Which representation to measure.
        method: Eigensolver path, see `top_singular_values`.
        name: Graph name used in error messages, e.g. "lstm/recurrent_kernel/f".

    Returns:
        A `SpectralMetrics`. Degenerate inputs are documented, not raised: an empty graph (no edges) gives
        mu0 = mu1 = 0 and `nan` for degrees, bounds, Delta_R, Delta_S and Cheeger bounds, with `undefined_reason`
        set. Isolated nodes are counted in `isolated_left` / `isolated_right` and excluded from the mean degrees and
        the Laplacian; a disconnected graph gives laplacian_lambda2 = 0.

    Raises:
        ValueError: NaN or infinite entries (the message names `name`), a matrix that is not 2-D, or an unknown
            `method`.
    """
    matrix = np.abs(_check_matrix(biadjacency, name))
    shape = (int(matrix.shape[0]), int(matrix.shape[1]))
    edges = matrix != 0
    num_edges = int(np.count_nonzero(edges))
    left_alive = edges.any(axis=1)
    right_alive = edges.any(axis=0)
    isolated_left = int(shape[0] - np.count_nonzero(left_alive))
    isolated_right = int(shape[1] - np.count_nonzero(right_alive))
    if num_edges == 0:
        return _nan_metrics(shape, weighted, 0, isolated_left, isolated_right, "empty graph: no edges")
    if weighted:
        matrix = matrix / matrix[edges].mean()
    else:
        matrix = edges.astype(np.float64)

    mu0, mu1 = top_singular_values(matrix, method=method)
    left_degrees = matrix.sum(axis=1)
    right_degrees = matrix.sum(axis=0)
    mean_left = float(left_degrees[left_alive].mean())
    mean_right = float(right_degrees[right_alive].mean())
    ramanujan = math.sqrt(mean_left - 1.0) + math.sqrt(mean_right - 1.0) if min(mean_left, mean_right) >= 1 \
        else float("nan")
    delta_s = 2.0 * math.sqrt(mu0 - 1.0) - mu1 if mu0 >= 1.0 else float("nan")
    reasons = []
    if math.isnan(ramanujan):
        reasons.append(f"mean degree below 1 (left {mean_left:.3g}, right {mean_right:.3g}): Delta_R undefined")
    if math.isnan(delta_s):
        reasons.append(f"mu0 = {mu0:.3g} < 1: Delta_S undefined")

    core = matrix[left_alive][:, right_alive]
    lambda2 = _second_laplacian_eigenvalue(core, method)
    core_degrees = np.concatenate([core.sum(axis=1), core.sum(axis=0)])
    return SpectralMetrics(
        shape=shape, weighted=weighted, num_edges=num_edges, density=num_edges / (shape[0] * shape[1]),
        mu0=mu0, mu1=mu1, spectral_gap=mu0 - mu1,
        mean_left_degree=mean_left, mean_right_degree=mean_right,
        min_left_degree=float(left_degrees.min()), max_left_degree=float(left_degrees.max()),
        min_right_degree=float(right_degrees.min()), max_right_degree=float(right_degrees.max()),
        isolated_left=isolated_left, isolated_right=isolated_right,
        ramanujan_bound=ramanujan, delta_r=ramanujan - mu1, delta_s=delta_s,
        laplacian_lambda2=lambda2,
        conductance_lower=lambda2 / 2.0, conductance_upper=math.sqrt(2.0 * lambda2),
        cheeger_lower=float(core_degrees.min()) * lambda2 / 2.0,
        cheeger_upper=float(core_degrees.max()) * math.sqrt(2.0 * lambda2),
        undefined_reason="; ".join(reasons),
    )


def _bipartite_subsets(matrix: np.ndarray):
    """Yields (in_left, in_right) boolean node sets of the graph for exhaustive search."""
    left, right = matrix.shape
    for bits in itertools.product((False, True), repeat=left + right):
        yield np.array(bits[:left], dtype=bool), np.array(bits[left:], dtype=bool)


def _cut_weight(matrix: np.ndarray, in_left: np.ndarray, in_right: np.ndarray) -> float:
    # Edges leaving S: left-in-S to right-not-in-S, plus left-not-in-S to right-in-S.
    return float(matrix[in_left][:, ~in_right].sum() + matrix[~in_left][:, in_right].sum())


def edge_expansion_exact(biadjacency, max_nodes: int = 16) -> float:
    """Exact Cheeger constant (edge expansion) h = min |E(S, V \\ S)| / |S| over 0 < |S| <= |V| / 2, by enumeration.

    Isolated nodes are removed first, as in `spectral_metrics`. Exponential time: for tests and tiny graphs only.

    Args:
        biadjacency: Array of shape (left, right); non-zero entries are edges, |entries| their weights.
        max_nodes: Refuse graphs with more non-isolated nodes than this (2^n subsets are enumerated).

    Returns:
        h as a float; `nan` for a graph with no edges.

    Raises:
        ValueError: more than `max_nodes` non-isolated nodes.
    """
    core = _enumerable_core(biadjacency, max_nodes)
    nodes = sum(core.shape)
    if nodes == 0:
        return float("nan")
    best = math.inf
    for in_left, in_right in _bipartite_subsets(core):
        size = int(in_left.sum() + in_right.sum())
        if 0 < size <= nodes / 2:
            best = min(best, _cut_weight(core, in_left, in_right) / size)
    return best


def conductance_exact(biadjacency, max_nodes: int = 16) -> float:
    """Exact conductance min |E(S, V \\ S)| / min(vol S, vol V \\ S) over non-trivial S, by enumeration.

    Isolated nodes are removed first. Exponential time: for tests and tiny graphs only.

    Args:
        biadjacency: Array of shape (left, right); non-zero entries are edges, |entries| their weights.
        max_nodes: Refuse graphs with more non-isolated nodes than this.

    Returns:
        The conductance as a float; `nan` for a graph with no edges.

    Raises:
        ValueError: more than `max_nodes` non-isolated nodes.
    """
    core = _enumerable_core(biadjacency, max_nodes)
    nodes = sum(core.shape)
    if nodes == 0:
        return float("nan")
    left_volume, right_volume = core.sum(axis=1), core.sum(axis=0)
    total = left_volume.sum() + right_volume.sum()
    best = math.inf
    for in_left, in_right in _bipartite_subsets(core):
        volume = left_volume[in_left].sum() + right_volume[in_right].sum()
        if 0 < volume < total:
            best = min(best, _cut_weight(core, in_left, in_right) / min(volume, total - volume))
    return best


def _core(matrix: np.ndarray) -> np.ndarray:
    """The biadjacency matrix without isolated rows and columns."""
    edges = matrix != 0
    return matrix[edges.any(axis=1)][:, edges.any(axis=0)]


def _enumerable_core(biadjacency, max_nodes: int) -> np.ndarray:
    """|B| without isolated nodes, refused when 2^nodes subsets would be too many to enumerate."""
    core = _core(np.abs(_check_matrix(biadjacency, "graph")))
    if sum(core.shape) > max_nodes:
        raise ValueError(f"Argument `biadjacency` has {sum(core.shape)} non-isolated nodes; enumeration allows "
                         f"max_nodes={max_nodes}.")
    return core


def first_zero_crossing(remaining_edges, deltas) -> float | None:
    """First remaining-edges value q, going down, where Delta reaches 0, by linear interpolation.

    This is the paper's predicted accuracy breakdown point (Kalra et al., arXiv 2403.11100, Figures 1-8: vertical
    lines where Delta_S / Delta_R first cross zero).

    Args:
        remaining_edges: Sequence of q values (%), strictly decreasing, shape (n,).
        deltas: Sequence of Delta values measured at those q, shape (n,). `nan` entries (undefined Delta) are
            skipped.

    Returns:
        The interpolated q (%) of the first crossing; the first q itself when Delta there is already <= 0; `None`
        when Delta stays > 0 over the whole sequence.

    Raises:
        ValueError: the sequences differ in length or q is not strictly decreasing.
    """
    q = np.asarray(remaining_edges, dtype=np.float64)
    delta = np.asarray(deltas, dtype=np.float64)
    if q.shape != delta.shape or q.ndim != 1:
        raise ValueError(f"Arguments `remaining_edges` and `deltas` must be 1-D of equal length. Received shapes "
                         f"{q.shape} and {delta.shape}.")
    if np.any(np.diff(q) >= 0):
        raise ValueError(f"Argument `remaining_edges` must be strictly decreasing. Received: {q.tolist()}")
    defined = ~np.isnan(delta)
    q, delta = q[defined], delta[defined]
    for i, value in enumerate(delta):
        if value <= 0:
            if i == 0:
                return float(q[0])
            previous_q, previous_delta = q[i - 1], delta[i - 1]
            return float(previous_q + (q[i] - previous_q) * previous_delta / (previous_delta - value))
    return None
