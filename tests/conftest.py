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


# The longest test files (firmware builds: minutes each on 2 cores) start first, so that the pytest-xdist workers
# of `make test` (a file per worker) end together rather than one running a long file alone at the end.
LONGEST_FILES_FIRST = ("test_firmware.py", "test_backends.py", "test_sparse_kernels.py", "test_fused_rnn.py",
                       "test_library.py", "test_cortex_cores.py", "test_export.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FILES_FIRST.index(name) if name in LONGEST_FILES_FIRST else len(LONGEST_FILES_FIRST)

    items.sort(key=rank)  # stable: the order within each file and among the other files stays
