"""keras-expander: expansion-aware pruning of SimpleRNN, LSTM, GRU and Bidirectional layers of Keras 3 and tf_keras
models, with TFLite/TFLM export.

The numpy-only math (`graph`, `spectral`, `masks`, `analysis`, `decision`) imports no TensorFlow. The
TensorFlow-backed API (`ExpanderPruningSchedule`, `ExpanderPruningCallback`, `prune_expander`, `strip_pruning`, `load_model`) is loaded
on first use. Importing keras_expander never changes what `tf.keras` means; tfmot is imported only when a tf_keras
model is pruned (see `keras_expander.backend`). `PruneExpander` is the tf_keras wrapper; the Keras 3 one is
`keras_expander.prune_keras3.PruneExpander`.
"""

import importlib

from keras_expander.analysis import AnalysisReport, GraphReport, analyze, print_report, summarize_layers
from keras_expander.graph import BipartiteGraph, layer_graphs
from keras_expander.masks import MASK_POLICIES, compute_mask
from keras_expander.spectral import SpectralMetrics, first_zero_crossing, spectral_metrics

__version__ = "0.1.0"

_LAZY = {
    "ExpanderPruningSchedule": "keras_expander.schedule",
    "ExpanderPruningCallback": "keras_expander.callbacks",
    "PruningEvent": "keras_expander.callbacks",
    "PruneExpander": "keras_expander.prune_tf_keras",
    "prune_expander": "keras_expander.prune",
    "strip_pruning": "keras_expander.prune",
    "load_model": "keras_expander.prune",
}

__all__ = ["AnalysisReport", "BipartiteGraph", "GraphReport", "MASK_POLICIES", "SpectralMetrics", "analyze",
           "compute_mask", "first_zero_crossing", "layer_graphs", "print_report", "spectral_metrics",
           "summarize_layers", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_expander' has no attribute {name!r}")
