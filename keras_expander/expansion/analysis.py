"""Spectral analysis of every recurrent layer of a model, and report tables.

`analyze(model)` walks a model (nested models included), reads every SimpleRNN, LSTM and GRU layer (Bidirectional
too) as bipartite graphs (`keras_expander.expansion.graphs`) and measures each graph unweighted and weighted
(`keras_expander.expansion.spectral`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Callable, Iterable

from keras_expander import layers as layers_lib
from keras_expander.expansion import graphs as graphs_lib
from keras_expander.expansion import spectral


@dataclasses.dataclass(frozen=True)
class GraphReport:
    """Metrics of one bipartite graph of a layer.

    Attributes:
        name: ``<layer>/<kernel|recurrent_kernel>/<gate>``.
        layer: Layer name.
        matrix: "kernel" or "recurrent_kernel".
        gate: Gate label ("i", "f", "c", "o", "union", "stacked", "all").
        gate_view: The view that produced it ("per_gate", "union", "stacked").
        unweighted: Metrics of the 0/1 graph.
        weighted: Metrics of |W * mask| (mean non-zero entry scaled to 1).
    """

    name: str
    layer: str
    matrix: str
    gate: str
    gate_view: str
    unweighted: spectral.SpectralMetrics
    weighted: spectral.SpectralMetrics

    @property
    def sparsity(self) -> float:
        """Fraction of absent edges in [0, 1]."""
        return 1.0 - self.unweighted.density

    def to_dict(self) -> dict:
        """JSON-ready dict with nested metric dicts."""
        return {"name": self.name, "layer": self.layer, "matrix": self.matrix, "gate": self.gate,
                "gate_view": self.gate_view, "sparsity": self.sparsity,
                "unweighted": self.unweighted.to_dict(), "weighted": self.weighted.to_dict()}


class AnalysisReport(list):
    """A list of `GraphReport`, plus `skipped`: dict layer name -> why it was not analysed."""

    def __init__(self, reports: Iterable[GraphReport] = (), skipped: dict | None = None):
        super().__init__(reports)
        self.skipped = dict(skipped or {})

    def to_dict(self) -> dict:
        """JSON-ready dict: graphs, per-layer summaries, skipped layers."""
        return {"graphs": [report.to_dict() for report in self],
                "layers": [dataclasses.asdict(summary) for summary in summarize_layers(self)],
                "skipped": self.skipped}


@dataclasses.dataclass(frozen=True)
class LayerSummary:
    """Worst expansion over the per-gate graphs of one layer (a layer is as good as its worst gate).

    Attributes:
        layer: Layer name.
        sparsity: Fraction of absent edges over all of the layer's matrices, in [0, 1].
        worst_delta_r, worst_delta_s: Minimum unweighted Delta_R / Delta_S over the graphs (`nan` if all undefined).
        worst_delta_r_graph, worst_delta_s_graph: The graph names where the minimum is.
        worst_weighted_delta_r, worst_weighted_delta_s: The same for the weighted graphs.
        isolated_nodes: Isolated nodes summed over the graphs (left and right).
    """

    layer: str
    sparsity: float
    worst_delta_r: float
    worst_delta_r_graph: str
    worst_delta_s: float
    worst_delta_s_graph: str
    worst_weighted_delta_r: float
    worst_weighted_delta_s: float
    isolated_nodes: int


def iter_layers(model) -> Iterable:
    """Yields every leaf layer of a model, descending into nested models (not into pruning wrappers)."""
    for layer in getattr(model, "layers", ()):
        if hasattr(layer, "layers") and not layers_lib.is_pruning_wrapper(layer):
            yield from iter_layers(layer)
        else:
            yield layer


def analyze_layer(layer, gate_views: Iterable[str] = ("per_gate",), method: str = "auto") -> list[GraphReport]:
    """Measures every graph of one layer in the requested gate views.

    Args:
        layer: A built SimpleRNN, LSTM or Dense layer (tf_keras or Keras 3), or a tfmot pruning wrapper of one.
        gate_views: Any of "per_gate", "union", "stacked". Layers without gates give one graph per matrix whatever
            the view, reported once.
        method: Eigensolver path, see `spectral.top_singular_values`.

    Returns:
        List of `GraphReport`.

    Raises:
        TypeError: unsupported layer class (named in the message).
        ValueError: unknown gate view; NaN/inf weights (the message names the graph).
    """
    matrices = layers_lib.layer_matrices(layer)
    with spectral.single_threaded_blas():
        return _measure(matrices, gate_views, method)


def _measure(matrices: layers_lib.LayerMatrices, gate_views: Iterable[str], method: str) -> list[GraphReport]:
    reports, seen = [], set()
    for view in gate_views:
        for g in graphs_lib.graphs_from_matrices(matrices, view):
            if g.name in seen:
                continue
            seen.add(g.name)
            reports.append(GraphReport(
                name=g.name, layer=g.layer, matrix=g.matrix, gate=g.gate, gate_view=view,
                unweighted=spectral.spectral_metrics(g.unweighted, weighted=False, method=method, name=g.name),
                weighted=spectral.spectral_metrics(g.weighted, weighted=True, method=method, name=g.name)))
    return reports


def analyze(model, gate_views: Iterable[str] = graphs_lib.GATE_VIEWS, method: str = "auto") -> AnalysisReport:
    """Spectral analysis of every SimpleRNN, LSTM and GRU layer of a model (both directions of Bidirectional ones).

    Args:
        model: A built tf_keras or Keras 3 model (Sequential, functional or nested), pruned with tfmot /
            keras_expander or not. Pruning wrappers are read through their masks.
        gate_views: Gate views of LSTM matrices to report (default: all three; see `keras_expander.expansion.graphs`).
        method: Eigensolver path, see `spectral.top_singular_values`.

    Returns:
        An `AnalysisReport` (a list of `GraphReport`); layers that hold weights but are not analysed are listed in
        its `skipped` dict with the reason (GRU, Bidirectional, Conv, Dense, ...).

    Raises:
        ValueError: the model has no supported recurrent layer (the message lists what it has), an unknown gate
            view, or NaN/inf weights (the message names the graph).
    """
    reports, skipped = [], {}
    for layer in iter_layers(model):
        if layers_lib.is_recurrent(layer):
            reports.extend(analyze_layer(layer, gate_views=gate_views, method=method))
        elif getattr(layer, "weights", None):
            reason = layers_lib.unsupported_reason(layer) or "not a recurrent layer"
            skipped[layer.name] = reason
    if not reports:
        raise ValueError(f"Model {getattr(model, 'name', model)!r} has no SimpleRNN, LSTM or GRU layer to analyse. "
                         f"Layers with weights: {skipped or 'none'}.")
    return AnalysisReport(reports, skipped)


def _min_with_name(pairs: list[tuple[float, str]]) -> tuple[float, str]:
    defined = [(value, name) for value, name in pairs if not math.isnan(value)]
    return min(defined) if defined else (float("nan"), "")


def summarize_layers(reports: Iterable[GraphReport]) -> list[LayerSummary]:
    """Per-layer worst Delta over the per-gate graphs (or the single graph of ungated layers).

    Args:
        reports: `GraphReport`s, e.g. from `analyze`.

    Returns:
        One `LayerSummary` per layer, in first-seen order.
    """
    by_layer: dict[str, list[GraphReport]] = {}
    for report in reports:
        if report.gate_view == "per_gate":
            by_layer.setdefault(report.layer, []).append(report)
    summaries = []
    for layer, group in by_layer.items():
        edges = sum(r.unweighted.num_edges for r in group)
        slots = sum(r.unweighted.shape[0] * r.unweighted.shape[1] for r in group)
        delta_r, delta_r_graph = _min_with_name([(r.unweighted.delta_r, r.name) for r in group])
        delta_s, delta_s_graph = _min_with_name([(r.unweighted.delta_s, r.name) for r in group])
        summaries.append(LayerSummary(
            layer=layer, sparsity=1.0 - edges / slots,
            worst_delta_r=delta_r, worst_delta_r_graph=delta_r_graph,
            worst_delta_s=delta_s, worst_delta_s_graph=delta_s_graph,
            worst_weighted_delta_r=_min_with_name([(r.weighted.delta_r, r.name) for r in group])[0],
            worst_weighted_delta_s=_min_with_name([(r.weighted.delta_s, r.name) for r in group])[0],
            isolated_nodes=sum(r.unweighted.isolated_left + r.unweighted.isolated_right for r in group)))
    return summaries


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), "  ".join("-" * w for w in widths)] + [line(row) for row in rows]


def _fmt(value: float, digits: int = 3) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_report(reports: AnalysisReport | list[GraphReport]) -> list[str]:
    """Lines of the graph table and the per-layer summary (see `print_report`)."""
    header = ["graph", "left x right", "q (%)", "edges", "d_L", "d_R", "isolated L/R", "mu0", "mu1", "gap",
              "Ramanujan", "Delta_R", "Delta_S", "w.Delta_R", "w.Delta_S", "Cheeger h bounds"]
    rows = []
    for r in reports:
        u, w = r.unweighted, r.weighted
        rows.append([r.name, f"{u.shape[0]} x {u.shape[1]}", _fmt(u.remaining_edges_percent, 2), str(u.num_edges),
                     _fmt(u.mean_left_degree, 2), _fmt(u.mean_right_degree, 2),
                     f"{u.isolated_left}/{u.isolated_right}", _fmt(u.mu0), _fmt(u.mu1), _fmt(u.spectral_gap),
                     _fmt(u.ramanujan_bound), _fmt(u.delta_r), _fmt(u.delta_s), _fmt(w.delta_r), _fmt(w.delta_s),
                     f"[{_fmt(u.cheeger_lower, 2)}, {_fmt(u.cheeger_upper, 2)}]"])
    lines = ["Bipartite graphs (q = remaining edges; degrees, mu, Delta and Cheeger bounds are dimensionless; "
             "w. = weighted, mean non-zero |w| scaled to 1)"]
    lines += _table(header, rows)
    summary_rows = [[s.layer, _fmt(100 * s.sparsity, 2), _fmt(s.worst_delta_r), s.worst_delta_r_graph,
                     _fmt(s.worst_delta_s), s.worst_delta_s_graph, _fmt(s.worst_weighted_delta_r),
                     _fmt(s.worst_weighted_delta_s), str(s.isolated_nodes)]
                    for s in summarize_layers(reports)]
    lines += ["", "Per layer (worst over per-gate graphs)"]
    lines += _table(["layer", "sparsity (%)", "min Delta_R", "at", "min Delta_S", "at", "min w.Delta_R",
                     "min w.Delta_S", "isolated"], summary_rows)
    for layer, reason in getattr(reports, "skipped", {}).items():
        lines.append(f"skipped {layer}: {reason}")
    return lines


def print_report(reports: AnalysisReport | list[GraphReport], print_fn: Callable[[str], None] = print) -> None:
    """Prints one row per graph (units in the header) and a per-layer summary.

    Args:
        reports: From `analyze` or `analyze_layer`.
        print_fn: Called once per line (e.g. `logging.info`); defaults to `print`.
    """
    for line in format_report(reports):
        print_fn(line)


def report_to_json(reports: AnalysisReport | list[GraphReport]) -> str:
    """JSON text of a report (`nan` written as JSON null)."""
    report = reports if isinstance(reports, AnalysisReport) else AnalysisReport(reports)
    return json.dumps(nan_to_none(report.to_dict()), indent=2)


def nan_to_none(value):
    """Replaces float `nan` by None in nested dicts/lists, so that `json.dumps` writes strict JSON (null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(item) for item in value]
    return value
