"""Import paths of the flat layout (before the stage subpackages) that keep working for one release.

`import keras_expander.schedule` (or `from keras_expander.compression import kernel_rewrite`) still works and warns
with a DeprecationWarning naming the new home. A module that moved whole is the same module object under both
names; one that was split serves the names of all its new homes. `keras_expander/__init__.py` installs the finder.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# Old module -> its new home(s), in the order their names are looked up.
MOVED = {
    "keras_expander.graph": ("keras_expander.layers", "keras_expander.expansion.graphs"),
    "keras_expander.spectral": ("keras_expander.expansion.spectral",),
    "keras_expander.analysis": ("keras_expander.expansion.analysis",),
    "keras_expander.masks": ("keras_expander.pruning.masks",),
    "keras_expander.decision": ("keras_expander.pruning.decision",),
    "keras_expander.schedule": ("keras_expander.pruning.schedule",),
    "keras_expander.callbacks": ("keras_expander.pruning.callback",),
    "keras_expander.prune": ("keras_expander.pruning.prune", "keras_expander.pruning.wrapper",
                             "keras_expander.layers"),
    "keras_expander.prune_tf_keras": ("keras_expander.pruning.tf_keras_wrapper",),
    "keras_expander.prune_keras3": ("keras_expander.pruning.keras3_wrapper",),
    "keras_expander.backend": ("keras_expander.frameworks",),
    "keras_expander.io_utils": ("keras_expander.files", "keras_expander.frameworks"),
    "keras_expander.converter_model": ("keras_expander.tflite.converter_model",),
    "keras_expander.export": ("keras_expander.tflite.export", "keras_expander.firmware.project"),
    "keras_expander.compression": ("keras_expander.firmware.rewrites", "keras_expander.firmware.decode_prune",
                                   "keras_expander.firmware.sparse_rewrite", "keras_expander.firmware.model_edit"),
    "keras_expander.fused_rnn": ("keras_expander.firmware.fused_rnn",),
}


def _caller_stacklevel() -> int:
    """The stacklevel of the first frame outside the import machinery and this module (the user's import line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_globals.get("__name__", "").startswith("importlib")
                                 or frame.f_globals.get("__name__") == __name__):
        frame, level = frame.f_back, level + 1
    return level


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module names of `MOVED` and loads them from their new homes, with a DeprecationWarning."""

    def find_spec(self, fullname, path=None, target=None):
        """A spec for an old module name, None for any other (the normal import system handles those)."""
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        """The new module itself (moved whole), or a module holding the names of all its new homes (split)."""
        homes = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {' and '.join(homes)}; the old import path works until the next "
                      f"release: import from the new one.", DeprecationWarning, stacklevel=_caller_stacklevel())
        modules = [importlib.import_module(home) for home in homes]
        if len(modules) == 1:
            return modules[0]
        merged = types.ModuleType(spec.name, f"Deprecated: the names of {', '.join(homes)}.")
        for module in reversed(modules):  # the first home wins a name two of them define
            merged.__dict__.update({name: value for name, value in vars(module).items()
                                    if not name.startswith("__")})
        return merged

    def exec_module(self, module):
        """Nothing to run: `create_module` returned a loaded module."""


def install() -> None:
    """Puts the finder on `sys.meta_path` once."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
