"""Test set-up: quiet TensorFlow, tf_keras as tf.keras, and the offline data folder when the project has one.

tf.keras is tf_keras in the test process because some tests run tfmot's own `prune_low_magnitude` on RNN layers,
and tfmot looks RNN cells up among tf.keras' classes. keras_expander needs no such setting: tests/test_keras3.py
runs it in fresh processes without the variable, where tf.keras is Keras 3.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline data folder ($KERAS_EXPANDER_DATA or ../shared/data); skips the test when neither exists."""
    folder = Path(os.environ.get("KERAS_EXPANDER_DATA") or SHARED_DATA)
    if not (folder / "mnist").is_dir():
        pytest.skip(f"offline data folder {folder} not found")
    return folder
