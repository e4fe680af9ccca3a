"""keras-expander: expansion-aware pruning of SimpleRNN, LSTM, GRU and Bidirectional layers of Keras 3 and tf_keras
models, with TFLite export and TFLite Micro firmware.

The package follows the data: `layers` (which layers we prune and how their weights are laid out, asked by every
stage) -> `expansion` (bipartite graphs and their spectral metrics; numpy and scipy only) -> `pruning` (the wrappers
of both Kerases, the schedule, mask policies, the decision and the `model.fit` callback) -> `tflite` (conversion
and verification under LiteRT and TFLite Micro) -> `firmware` (`.tflite` -> `.tflite` rewrites to our kernels, the
C++ kernels, and the firmware build, run and measurement). `runtime` runs a `.tflite`, `datasets` loads the data,
`cli` is the `keras-expander` command; `frameworks` imports TensorFlow, Keras and tfmot on first use and `files`
writes outputs atomically.

The numpy-only API (`analyze`, `layer_graphs`, `spectral_metrics`, `compute_mask`, `allocate`, ...) imports no
TensorFlow. The TensorFlow-backed API (`ExpanderPruningSchedule`, `ExpanderPruningCallback`, `prune_expander`,
`strip_pruning`, `load_model`) is loaded on first use. Importing keras_expander never changes what `tf.keras` means;
tfmot is imported only when a tf_keras model is pruned (see `keras_expander.frameworks`). `PruneExpander` is the
tf_keras wrapper; the Keras 3 one is `keras_expander.pruning.keras3_wrapper.PruneExpander`. The import paths of the
former flat layout still work for one release (`keras_expander.moved_modules`).
"""

import importlib

from keras_expander import moved_modules
from keras_expander.expansion.analysis import AnalysisReport, GraphReport, analyze, print_report, summarize_layers
from keras_expander.expansion.graphs import BipartiteGraph, layer_graphs
from keras_expander.expansion.spectral import SpectralMetrics, first_zero_crossing, spectral_metrics
from keras_expander.pruning.allocation import ALLOCATIONS, allocate
from keras_expander.pruning.masks import MASK_POLICIES, compute_mask

__version__ = "0.1.0"

moved_modules.install()

_LAZY = {
    "ExpanderPruningSchedule": "keras_expander.pruning.schedule",
    "ExpanderPruningCallback": "keras_expander.pruning.callback",
    "PruningEvent": "keras_expander.pruning.callback",
    "StillLearningWarning": "keras_expander.pruning.callback",
    "PruneExpander": "keras_expander.pruning.tf_keras_wrapper",
    "prune_expander": "keras_expander.pruning.prune",
    "strip_pruning": "keras_expander.pruning.prune",
    "load_model": "keras_expander.pruning.prune",
}

__all__ = ["ALLOCATIONS", "AnalysisReport", "BipartiteGraph", "GraphReport", "MASK_POLICIES", "SpectralMetrics",
           "allocate", "analyze", "compute_mask", "first_zero_crossing", "layer_graphs", "print_report",
           "spectral_metrics", "summarize_layers", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if f"{__name__}.{name}" in moved_modules.MOVED:  # `keras_expander.schedule` of the flat layout, with a warning
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'keras_expander' has no attribute {name!r}")
