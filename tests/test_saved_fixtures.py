"""`.keras` files saved by the flat layout (main f1d3baf, before the stage subpackages) still load with their masks,
pruning step and stop state, give the same outputs, strip and keep training; and the old import paths still work
with a DeprecationWarning.

The fixtures were written by tests/fixtures/save_pruned_models.py (public API only) on that commit.
"""

import importlib
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import keras_expander as ke
from keras_expander import moved_modules
from keras_expander.frameworks import keras_flavour

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("flavour", ["tf_keras", "keras3"])
def test_model_saved_before_the_move_loads_with_masks_step_and_stop_state(flavour, tmp_path):
    expected = np.load(FIXTURES / f"pruned_lstm_{flavour}_expected.npz")
    path = tmp_path / "model.keras"  # a copy: loading must not need the fixture folder to be writable
    shutil.copyfile(FIXTURES / f"pruned_lstm_{flavour}.keras", path)
    model = ke.load_model(path)
    assert keras_flavour(model) == flavour
    wrapper = model.layers[0]
    assert type(wrapper).__module__ == {"tf_keras": "keras_expander.pruning.tf_keras_wrapper",
                                        "keras3": "keras_expander.pruning.keras3_wrapper"}[flavour]
    masks = [entry[1].numpy() for entry in wrapper.pruning_vars]
    assert len(masks) == 2
    for index, mask in enumerate(masks):
        assert np.array_equal(mask, expected[f"mask_{index}"])
    assert 1 - np.mean(np.concatenate([m.ravel() for m in masks])) > 0.9  # held late in the 97 % schedule
    assert int(wrapper.pruning_step.numpy()) == int(expected["pruning_step"]) == 12
    assert float(wrapper.expansion_stopped.numpy()) == float(expected["stopped"]) == 1.0
    np.testing.assert_allclose(np.asarray(model(expected["probe"])), expected["outputs"], rtol=1e-5, atol=1e-6)
    stripped = ke.strip_pruning(model)
    for weight, mask in zip((stripped.layers[0].cell.kernel, stripped.layers[0].cell.recurrent_kernel), masks):
        assert not np.any(np.asarray(weight.numpy())[mask == 0])
    # It keeps training: the step advances and the held layer keeps its masks.
    K = importlib.import_module("keras" if flavour == "keras3" else "tf_keras")
    model.compile("adam", K.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.repeat(expected["probe"], 4, axis=0)
    model.fit(x, np.zeros(len(x), "int64"), batch_size=32, epochs=1, callbacks=[ke.ExpanderPruningCallback()],
              verbose=0)
    assert int(wrapper.pruning_step.numpy()) == 13
    for index, entry in enumerate(wrapper.pruning_vars):
        assert np.array_equal(entry[1].numpy(), expected[f"mask_{index}"])


@pytest.mark.parametrize("old", sorted(moved_modules.MOVED))
def test_old_import_paths_work_with_a_deprecation_warning(old, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {moved_modules.MOVED[old][0]}"):
        module = importlib.import_module(old)
    for home in moved_modules.MOVED[old]:
        new = importlib.import_module(home)
        public = [name for name in vars(new) if not name.startswith("_")]
        assert public and all(getattr(module, name) is getattr(new, name) for name in public if
                              hasattr(module, name)), home
        assert any(getattr(module, name, None) is getattr(new, name) for name in public), home


def test_documented_old_names_resolve_to_the_new_objects(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from keras_expander.compression import CompressionError, decode_prune, kernel_rewrite
        from keras_expander.export import export_model
        from keras_expander.prune_keras3 import PruneExpander
        from keras_expander.schedule import ExpanderPruningSchedule
    from keras_expander.firmware import decode_prune as decode_module
    from keras_expander.firmware import model_edit, rewrites
    from keras_expander.pruning import keras3_wrapper, schedule
    from keras_expander.tflite import export

    assert (CompressionError, decode_prune, kernel_rewrite) == (model_edit.CompressionError,
                                                                decode_module.decode_prune, rewrites.kernel_rewrite)
    assert export_model is export.export_model and PruneExpander is keras3_wrapper.PruneExpander
    assert ExpanderPruningSchedule is schedule.ExpanderPruningSchedule is ke.ExpanderPruningSchedule
    monkeypatch.delitem(sys.modules, "keras_expander.analysis", raising=False)
    monkeypatch.delattr(ke, "analysis", raising=False)  # set by an earlier import of the old path
    with pytest.warns(DeprecationWarning, match="keras_expander.analysis moved"):
        assert ke.analysis.analyze is ke.analyze  # attribute access of the old path
