"""TFLite export: Keras vs LiteRT vs TFLM agreement, state reset, conversion failures, firmware files.

The LSTM export tests run on a tf_keras and on a Keras 3 model (the `lstm_export` fixture's two params).
"""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_expander.firmware import project
from keras_expander.frameworks import tf_keras
from keras_expander.runtime import TFLiteModel, tflm_arena_works
from keras_expander.tflite import export

FLOAT_TOL = 1e-5


def sequences(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 5)).astype("float32"), rng.integers(0, 3, n)


def small_model(cell, K=tf_keras):
    K.utils.set_random_seed(1)
    layer = {"lstm": K.layers.LSTM, "simple_rnn": K.layers.SimpleRNN}[cell]
    model = K.Sequential([K.Input((6, 5)), layer(8, name=cell), K.layers.Dense(3)])
    kernel = model.layers[0].cell.kernel.numpy()
    kernel[np.abs(kernel) < 0.2] = 0.0  # a pruned-looking matrix
    model.layers[0].cell.kernel.assign(kernel)
    return model


@pytest.fixture(scope="module", params=["tf_keras", "keras3"])
def lstm_export(tmp_path_factory, request):
    x, y = sequences()
    model = small_model("lstm", tf_keras if request.param == "tf_keras" else keras)
    out = str(tmp_path_factory.mktemp("lstm"))
    reports = export.export_model(model, modes=("float32", "int8"), x_test=x, y_test=y, representative_data=x,
                                  out_dir=out)
    return model, {r.mode: r for r in reports}, out, x


@pytest.mark.parametrize("runtime", ["litert", "tflm"])
def test_float_lstm_matches_keras(lstm_export, runtime):
    model, reports, out, x = lstm_export
    with open(reports["float32"].tflite_path, "rb") as stream:
        outputs = TFLiteModel(stream.read(), runtime=runtime, arena_size=reports["float32"].arena_bytes).predict(x)
    assert np.max(np.abs(outputs - model.predict(x, verbose=0))) <= FLOAT_TOL
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in reports["float32"].ops


def test_float_simple_rnn_matches_keras_on_both_runtimes(tmp_path):
    x, y = sequences()
    model = small_model("simple_rnn")
    content, notes = export.convert(model, "float32")
    assert notes == []
    for runtime in ("litert", "tflm"):
        outputs = TFLiteModel(content, runtime=runtime).predict(x)
        assert np.max(np.abs(outputs - model.predict(x, verbose=0))) <= FLOAT_TOL, runtime


def test_int8_lstm_tflm_agrees_with_litert(lstm_export):
    _, reports, _, x = lstm_export
    report = reports["int8"]
    with open(report.tflite_path, "rb") as stream:
        content = stream.read()
    litert = TFLiteModel(content, runtime="litert")
    tflm = TFLiteModel(content, runtime="tflm", arena_size=report.arena_bytes)
    assert litert.input_dtype == np.int8 and report.output_scale is not None
    litert_raw = np.stack([litert.predict_raw(s) for s in x]).astype(int)
    tflm_raw = np.stack([tflm.predict_raw(s) for s in x]).astype(int)
    assert np.max(np.abs(litert_raw - tflm_raw)) <= 1  # within one quantization step
    assert report.argmax_agreement_tflm_litert == 1.0
    assert np.array_equal(np.argmax(litert_raw, axis=1), np.argmax(tflm_raw, axis=1))


def test_reset_makes_identical_sequences_give_identical_outputs(lstm_export):
    _, reports, _, x = lstm_export
    with open(reports["float32"].tflite_path, "rb") as stream:
        content = stream.read()
    for runtime in ("litert", "tflm"):
        model = TFLiteModel(content, runtime=runtime)
        twice = model.predict(np.stack([x[0], x[0]]))
        assert np.array_equal(twice[0], twice[1]), runtime
    # Without the reset the fused LSTM carries its state into the next invoke, so the reset is what matters.
    tflm = TFLiteModel(content, runtime="tflm")
    first = tflm.predict_raw(x[0])
    tflm._interpreter.set_input(x[0][None], 0)
    tflm._interpreter.invoke()
    assert not np.array_equal(first, np.array(tflm._interpreter.get_output(0)))


def test_report_figures(lstm_export):
    model, reports, out, _ = lstm_export
    report = reports["int8"]
    with open(report.tflite_path, "rb") as stream:
        content = stream.read()
    assert report.flatbuffer_bytes == len(content) and 0 < report.gzip_bytes < len(content)
    weights = model.get_weights()
    assert report.nonzero_weights == sum(np.count_nonzero(w) for w in weights) < report.total_weights
    assert report.fits and 0 < report.arena_bytes <= 64 * 1024
    assert report.tflm_ms_per_sequence > 0
    assert sorted(os.listdir(out)) == ["float32.tflite", "int8.tflite", "model_data.cc", "model_data.h",
                                       "model_op_resolver.h", "report.json"]


def test_arena_search_finds_the_smallest_working_size(lstm_export):
    _, reports, _, _ = lstm_export
    arena = reports["int8"].arena_bytes
    path = reports["int8"].tflite_path
    assert tflm_arena_works(path, arena)
    assert not tflm_arena_works(path, arena - 16)


def gru_model(reset_after, K=keras):
    K.utils.set_random_seed(2)
    inputs = K.Input((6, 5))
    hidden = K.layers.GRU(8, reset_after=reset_after, return_sequences=True, name="gru")(inputs)
    hidden = K.layers.Bidirectional(K.layers.GRU(4), name="bi_gru")(hidden)
    return K.Model(inputs, K.layers.Dense(3)(hidden))


@pytest.mark.parametrize("mode", [pytest.param("float32", marks=pytest.mark.slow), "int8"])
def test_gru_exports_unrolled_and_runs_under_tflm(mode):
    x, _ = sequences()
    model = gru_model(reset_after=True)
    content, notes = export.convert(model, mode, representative_data=x)
    if mode == "int8":  # every GRU unrolled
        assert "GRU unrolled" in " ".join(notes) and "WHILE" not in project.model_ops(content)
    else:  # the GRU returning sequences is unrolled, the other stays a WHILE loop
        assert "GRU layers with return_sequences=True unrolled" in " ".join(notes)
        assert "WHILE" in project.model_ops(content) and "TANH" in project.model_ops(content)
    litert = TFLiteModel(content, runtime="litert")
    tflm = TFLiteModel(content, runtime="tflm")  # the default 1 MiB arena (the search is tested on the LSTM)
    if mode == "float32":
        for outputs in (litert.predict(x), tflm.predict(x)):
            assert np.max(np.abs(outputs - model.predict(x, verbose=0))) <= FLOAT_TOL
    else:
        litert_raw = np.stack([litert.predict_raw(s) for s in x]).astype(int)
        tflm_raw = np.stack([tflm.predict_raw(s) for s in x]).astype(int)
        # LiteRT and TFLM compute int8 LOGISTIC/TANH differently (one step at most), and the GRU's recurrence
        # carries such a step through 6 time steps: up to a few steps apart, 88 % of outputs identical here.
        assert np.max(np.abs(litert_raw - tflm_raw)) <= 4 and np.mean(litert_raw == tflm_raw) >= 0.8


def test_gru_without_reset_after_is_refused_for_tflm_and_runs_under_litert():
    x, _ = sequences()
    tf_keras.utils.set_random_seed(2)
    model = tf_keras.Sequential([tf_keras.Input((6, 5)), tf_keras.layers.GRU(8, reset_after=False, name="gru"),
                                 tf_keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="Layer 'gru': a GRU with reset_after=False .* target='litert'"):
        export.convert(model, "float32")
    content, _ = export.convert(model, "float32", target="litert")
    outputs = TFLiteModel(content, runtime="litert").predict(x)
    assert np.max(np.abs(outputs - model.predict(x, verbose=0))) <= FLOAT_TOL


def test_failing_conversion_raises_export_error_and_leaves_no_file(tmp_path):
    x, y = sequences()
    wrong_shape = np.zeros((4, 3, 3), np.float32)  # calibration data that does not fit the model
    out = tmp_path / "out"
    with pytest.raises(export.ExportError, match="int8"):
        export.export_model(small_model("lstm"), modes=("int8",), x_test=x, y_test=y,
                            representative_data=wrong_shape, out_dir=str(out))
    assert not out.exists() and os.listdir(tmp_path) == []  # all-or-nothing: no folder, no staging leftovers


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="dynamic_range"), "TFLite Micro cannot run"),
    (dict(mode="float32", sparsity_encoding=True), "DENSIFY"),
    (dict(mode="int4"), "mode='int4'"),
    (dict(mode="float32", target="mcu"), "target='mcu'"),
    (dict(mode="int8"), "representative_data"),
])
def test_options_tflm_cannot_run_are_refused_with_the_reason(kwargs, match):
    with pytest.raises(ValueError, match=match):
        export.convert(small_model("lstm"), **kwargs)


def test_firmware_mode_outside_the_exported_modes_is_refused_before_converting(tmp_path):
    x, y = sequences()
    with pytest.raises(ValueError, match=r"`firmware_mode` must be one of the exported modes \('int8',\)\. "
                                         r"Received: firmware_mode='float32'"):
        export.export_model(small_model("lstm"), modes=("int8",), x_test=x, y_test=y, representative_data=x,
                            firmware_mode="float32", out_dir=str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []


def test_dynamic_range_is_allowed_for_litert():
    content, _ = export.convert(small_model("lstm"), "dynamic_range", target="litert")
    assert TFLiteModel(content, runtime="litert").predict(sequences(4)[0]).shape == (4, 3)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_c_array_compiles_and_holds_the_flatbuffer(lstm_export, tmp_path):
    _, reports, out, _ = lstm_export
    with open(os.path.join(out, "int8.tflite"), "rb") as stream:
        content = stream.read()
    (tmp_path / "harness.cc").write_text(
        '#include <stdio.h>\n#include "model_data.h"\n'
        'int main() { unsigned long sum = 0; for (unsigned i = 0; i < g_model_len; ++i) sum += g_model[i];\n'
        '  printf("%u %lu %d\\n", g_model_len, sum, (int)(((unsigned long)g_model) % 16)); return 0; }\n')
    for source in (os.path.join(out, "model_data.cc"), str(tmp_path / "harness.cc")):
        subprocess.run(["gcc", "-c", "-I", out, source, "-o", str(tmp_path / (os.path.basename(source) + ".o"))],
                       check=True, cwd=tmp_path)
    subprocess.run(["gcc", str(tmp_path / "model_data.cc.o"), str(tmp_path / "harness.cc.o"), "-o",
                    str(tmp_path / "harness")], check=True)
    length, checksum, misalignment = subprocess.run([str(tmp_path / "harness")], capture_output=True, text=True,
                                                    check=True).stdout.split()
    assert int(length) == len(content) and int(checksum) == sum(content) and int(misalignment) == 0
    resolver = open(os.path.join(out, "model_op_resolver.h")).read()
    assert "AddUnidirectionalSequenceLSTM()" in resolver and "AddFullyConnected()" in resolver


def test_resolver_method_names_match_the_tflm_tree():
    """The naming rule used without a TFLM tree gives the method that the tree's micro_mutable_op_resolver.h
    declares for every builtin op (custom ops such as TFLM_DECODE are registered by name, not by this rule)."""
    from keras_expander.firmware import toolchain

    assert project.resolver_method("CONV_2D") == "AddConv2D"
    assert project.resolver_method("UNIDIRECTIONAL_SEQUENCE_LSTM") == "AddUnidirectionalSequenceLSTM"
    tree = toolchain.default_tree("host", "reference")
    if tree is None:
        if os.environ.get("KERAS_EXPANDER_REQUIRE_FIRMWARE") == "1":
            pytest.fail("firmware tests are required here, but no TFLM tree was found (KERAS_EXPANDER_TFLM)")
        pytest.skip("no TFLM tree (KERAS_EXPANDER_TFLM) to compare with")
    builtins = {op: r.method for op, r in toolchain.resolver_registrations(tree).items()
                if op.isupper() and op != "TFLM_DECODE"}  # signal-library custom ops are mixed case
    assert len(builtins) > 100
    assert {op: project.resolver_method(op) for op in builtins} == builtins


@pytest.mark.parametrize("K", [tf_keras, keras], ids=["tf_keras", "keras3"])
def test_mixed_float16_model_is_refused_before_converting_naming_the_policy(K, tmp_path):
    x, y = sequences(8)
    model = K.Sequential([K.Input((6, 5)), K.layers.LSTM(8, dtype="mixed_float16", name="lstm"), K.layers.Dense(3)],
                         name="mixed")
    match = (r"Model 'mixed': layer 'lstm' has dtype policy 'mixed_float16' \(computes in float16\).*"
             r"set_global_policy\('float32'\).*set_weights")
    with pytest.raises(ValueError, match=match):
        export.export_model(model, modes=("float32",), x_test=x, y_test=y, out_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=match):
        export.convert(model, "float32")
    assert not (tmp_path / "out").exists()


def test_failed_conversion_shows_the_converters_own_error_lines(tmp_path):
    # The converter itself on a model it cannot convert (export refuses it before; its worker does not check).
    model = tf_keras.Sequential([tf_keras.Input((6, 5), batch_size=1), tf_keras.layers.LSTM(8, dtype="mixed_float16"),
                                 tf_keras.layers.Dense(3)])
    model.save(tmp_path / "model.keras")
    result = subprocess.run([sys.executable, "-m", "keras_expander.tflite.export", "convert",
                             str(tmp_path / "model.keras"), "float32", str(tmp_path / "model.tflite")],
                            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0"))
    errors = export.converter_errors(result.stderr)
    assert result.returncode != 0 and 1 <= len(errors) <= 3
    assert all(f"error: {error}" in result.stderr and "CUDA" not in error for error in errors)
    assert any("f16" in error or "float16" in error for error in errors), errors  # the cause, not the IR dump
    assert export.converter_errors("E0000 00:00:1.0 cuda_platform.cc:52] CUDA error: no device\nSegfault") == []


def test_variable_number_of_steps_is_refused_with_the_fixed_input_to_build(tmp_path):
    x, y = sequences(8)
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((None, 5)), tf_keras.layers.LSTM(8), tf_keras.layers.Dense(3)],
                                name="any_length")
    with pytest.raises(ValueError, match=r"Model 'any_length' takes inputs of shape \(batch, None, 5\): a variable "
                                         r"number of time steps.*keras.Input\(\(T, 5\)\).*\(6 in x_test\)"):
        export.export_model(model, modes=("float32",), x_test=x, y_test=y, out_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"keras.Input\(\(T, 5\)\), T the sequence length of your data, and"):
        export.convert(model, "float32")
    fixed = tf_keras.Sequential([tf_keras.Input((6, 5)), tf_keras.layers.LSTM(8), tf_keras.layers.Dense(3)])
    fixed.set_weights(model.get_weights())  # as the message says: same weights, same outputs
    np.testing.assert_allclose(fixed.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
