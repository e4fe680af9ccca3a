"""The source library (`keras_expander.firmware.library`, `keras-expander firmware --library`): copied alone to a
clean folder it refers to nothing of ours or of the TFLM trees, builds as a static library with CMake and an
arm-none-eabi toolchain file without a warning at -Wall, and, linked into a small semihosting program and run
under QEMU on its core's board, gives outputs identical byte for byte to the stock firmware build of the same core
(`deploy.deploy`, reference kernels) of the same model, plain and rewritten to our sparse kernels. The Cortex-M4
(reference kernels) runs by default; every other core of `toolchain.CORES`, and the Cortex-M55 library with
CMSIS-NN (its Helium code) and our sparse kernels, with `make test-slow`.

These tests need the Arm toolchain, QEMU, CMake and Ninja (skipped without them, as test_firmware.py says).
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_firmware import require_toolchain, sequences, tiny_model
from test_fused_rnn import plain_model as rnn_model
from test_fused_rnn import sequences as rnn_sequences

from keras_expander import cli
from keras_expander.firmware import deploy, device, project
from keras_expander.firmware.library import write_library
from keras_expander.firmware.rewrites import kernel_rewrite
from keras_expander.firmware.toolchain import CORES, startup_sources
from keras_expander.tflite import export

ROOT = Path(__file__).resolve().parents[1]

# The program the test links the library into: inputs.bin in (device.write_inputs' format), outputs.bin out, the
# recurrent state reset before each sequence, as the firmware harness does.
MAIN = """#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ke_model.h"

alignas(KE_ARENA_ALIGNMENT) static uint8_t arena[KE_ARENA_BYTES];
static int8_t input[KE_INPUT_BYTES];
static int8_t output[KE_OUTPUT_BYTES];

int main(void) {
  FILE* inputs = fopen("inputs.bin", "rb");
  FILE* outputs = fopen("outputs.bin", "wb");
  char magic[4];
  uint32_t header[3];
  if (inputs == nullptr || outputs == nullptr || fread(magic, 1, 4, inputs) != 4 ||
      fread(header, 4, 3, inputs) != 3 || memcmp(magic, "KEIN", 4) != 0 || header[1] != KE_INPUT_BYTES) {
    puts("KE error inputs.bin");
    return 3;
  }
  const ke_status status = ke_init(arena, ke_arena_bytes());
  if (status != KE_OK) {
    printf("KE error ke_init %d\\n", static_cast<int>(status));
    return 4;
  }
  for (uint32_t n = 0; n < header[0]; ++n) {
    if (fread(input, 1, KE_INPUT_BYTES, inputs) != KE_INPUT_BYTES || ke_reset_state() != KE_OK ||
        ke_invoke(input, output) != KE_OK || fwrite(output, 1, KE_OUTPUT_BYTES, outputs) != KE_OUTPUT_BYTES) {
      puts("KE error inference");
      return 5;
    }
  }
  fclose(outputs);
  puts("KE done");
  return 0;
}
"""

# The board side: the start-up of toolchain.startup_sources (CMSIS' from the tree, then our _start), its
# QEMU board's linker script; the library comes in through add_subdirectory and gives the core's flags.
APP_CMAKE = """cmake_minimum_required(VERSION 3.16)
project(ke_library_test C CXX)
add_subdirectory(${{KE_LIBRARY}} ke_model)
add_executable(app main.cc startup_{device}.c system_{device}.c semihosting_start.cc)
target_compile_definitions(app PRIVATE {defines})
set_source_files_properties(main.cc PROPERTIES COMPILE_OPTIONS "-Wall;-Wextra;-Werror")
target_link_libraries(app PRIVATE ke_model)
target_link_options(app PRIVATE -T${{CMAKE_CURRENT_SOURCE_DIR}}/link.ld --specs=nano.specs --specs=rdimon.specs
                    -nostartfiles -Wl,--gc-sections)
"""


def _lstm_model() -> bytes:
    return export.convert(tiny_model("lstm", 16, 0.8), "int8", sequences(64, seed=5))[0]


# model -> (its full-int8 flatbuffer, n -> n input sequences, the encodings whose libraries are tested): an
# LSTM(16) 80 % sparse (KE_SPARSE_LSTM_V1 / KE_SPARSE_FC_V1), and a GRU(24) and a SimpleRNN(16) 90 % sparse (the
# fused ops with dense and with sparse weights; tests/test_fused_rnn.py's "device" model).
MODELS = {"lstm": (_lstm_model, lambda n: sequences(n, seed=7), ("plain", "ke_sparse")),
          "gru_simple_rnn": (lambda: rnn_model("device"), lambda n: rnn_sequences(n, seed=7),
                             ("plain", "ke_fused", "ke_sparse"))}

# (target, kernels, model): by default the Cortex-M4 with the reference kernels and the LSTM (the cheapest build:
# make test's 15 minutes hold one case; the M55's Helium sparse kernels are checked by default by
# test_sparse_kernels' kernel runner), the Cortex-M55 with CMSIS-NN's Helium code and every other core and model with
# `-m slow`; each against the stock reference firmware of its core.
CASES = [pytest.param("cortex-m4", "reference", "lstm", id="cortex-m4-lstm"),
         pytest.param("cortex-m55", "cmsis_nn", "lstm", id="cortex-m55-cmsis_nn-lstm", marks=pytest.mark.slow),
         *(pytest.param(target, "reference", model, id=f"{target}-{model}", marks=pytest.mark.slow)
           for target in CORES for model in MODELS if (target, model) != ("cortex-m4", "lstm"))]


def require_cmake():
    missing = [tool for tool in ("cmake", "ninja") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found on PATH (apt-get install cmake ninja-build)")


@pytest.fixture(scope="module")
def models():
    """model name (`MODELS`) -> encoding -> full-int8 flatbuffer, each converted once per module."""
    built = {}

    def of(name: str) -> dict:
        if name not in built:
            convert, _, encodings = MODELS[name]
            plain = convert()
            built[name] = {"plain": plain, **{encoding: kernel_rewrite(plain, encoding).content
                                              for encoding in encodings if encoding != "plain"}}
        return built[name]

    return of


@pytest.fixture(scope="module")
def stock_outputs(models, tmp_path_factory):
    """(target, model name) -> inputs and that core's stock firmware outputs (reference kernels, plain model), uint8
    (N, bytes); each built once per module."""
    built = {}

    def outputs(target: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        if (target, name) not in built:
            require_toolchain(target)
            plain, x = models(name)["plain"], MODELS[name][1](12)
            report = deploy.deploy(plain, x, target=target, kernels="reference",
                                   out_dir=tmp_path_factory.mktemp(f"stock-{target}-{name}") / "fw")
            expected = np.fromfile(Path(report.project_dir) / "run" / "outputs.bin", np.uint8).reshape(len(x), -1)
            built[(target, name)] = deploy.device_inputs(plain, x), expected
        return built[(target, name)]

    return outputs


def build_app(library: Path, folder: Path, toolchain) -> tuple[Path, str]:
    """Builds the test program against `library` for the toolchain's core with CMake and Ninja (again in
    `folder`'s build folder if there is one); returns (ELF image, build log)."""
    core, tree = toolchain.core, toolchain.tree
    folder.mkdir(exist_ok=True)
    (folder / "main.cc").write_text(MAIN)
    defines = " ".join([core.device, *(flag.removeprefix("-D") for flag in core.device_defines)])
    (folder / "CMakeLists.txt").write_text(APP_CMAKE.format(device=core.device, defines=defines))
    for source in startup_sources(toolchain):
        shutil.copyfile(source, folder / source.name)
    project.write_linker_script(tree, folder, core.code_bytes, core.ram_bytes, device.STACK_BYTES, device.HEAP_BYTES,
                                core.target)
    configure = subprocess.run(
        ["cmake", "-G", "Ninja", "-S", str(folder), "-B", str(folder / "build"), f"-DKE_LIBRARY={library}",
         f"-DCMAKE_TOOLCHAIN_FILE={library / 'cmake' / 'arm-none-eabi.cmake'}", "-DCMAKE_C_FLAGS=-Wall",
         "-DCMAKE_CXX_FLAGS=-Wall"], capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout[-2000:] + configure.stderr[-2000:]
    build = subprocess.run(["cmake", "--build", str(folder / "build"), "-j", str(os.cpu_count() or 1)],
                           capture_output=True, text=True)
    log = build.stdout + build.stderr
    assert build.returncode == 0, log[-3000:]
    return folder / "build" / "app", log


@pytest.mark.parametrize("target, kernels, model", CASES)
def test_library_builds_alone_and_matches_the_stock_firmware(models, stock_outputs, target, kernels, model,
                                                             tmp_path):
    """The plain model's library, then each encoding's written over it in the same place and rebuilt in the same
    build folder (TFLM's files keep the tree's times, so only what changed recompiles); all against the stock
    reference firmware of the same core."""
    toolchain = require_toolchain(target, kernels)
    require_cmake()
    inputs, expected = stock_outputs(target, model)
    library = tmp_path / "clean" / "ke_model"
    for encoding in MODELS[model][2]:
        written = write_library(models(model)[encoding], tmp_path / "written", target, kernels)
        shutil.rmtree(library, ignore_errors=True)
        shutil.copytree(written, library)
        shutil.rmtree(written)
        check_library_contents(library, toolchain, encoding, model)
        app = tmp_path / "app"
        image, log = build_app(library, app, toolchain)
        warnings = [line for line in log.splitlines() if "warning:" in line]
        assert not warnings, f"{target} {kernels} {encoding}:\n" + "\n".join(warnings[:20])
        assert (app / "build" / "ke_model" / "libke_model.a").is_file()
        compiled = len(re.findall(r"Building CX*X? object", log))
        assert encoding == "plain" or compiled < 12, f"{compiled} files recompiled for a new model"

        run_dir = tmp_path / f"run-{encoding}"
        run_dir.mkdir()
        device.write_inputs(run_dir / "inputs.bin", inputs)
        result = device.run_command(device.qemu_command(toolchain, image, count_instructions=False),
                                    timeout_s=300, cwd=run_dir)
        assert result.returncode == 0 and "KE done" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
        outputs = np.fromfile(run_dir / "outputs.bin", np.uint8).reshape(len(inputs), -1)
        np.testing.assert_array_equal(outputs, expected,
                                      err_msg=f"{target} {kernels} {encoding} library vs the stock firmware")


def test_library_example_sketch_compiles_without_a_warning(models, tmp_path):
    """The Arduino sketch, against a stub Arduino.h, with the board's CMSIS names (the device header) and without
    them (its own register definitions), at -Wall -Wextra -Werror."""
    toolchain = require_toolchain("cortex-m4")
    library = write_library(models("lstm")["plain"], tmp_path / "lib", "cortex-m4", "reference")
    (tmp_path / "stub").mkdir()
    (tmp_path / "stub" / "Arduino.h").write_text(
        "#include <stdint.h>\nstruct SerialStub {\n  void begin(int) {}\n  explicit operator bool() const { return "
        "true; }\n  template <class T> void print(T) {}\n  template <class T> void println(T) {}\n};\n"
        "extern SerialStub Serial;\ninline void delay(unsigned long) {}\n")
    cpu = [flag for flag in toolchain.flags if flag.startswith("-m")]
    for cmsis in ([], ["-DARMCM4", "-include", "ARMCM4.h"]):
        command = [toolchain.cxx, "-std=c++17", *cpu, "-Wall", "-Wextra", "-Werror", *cmsis, f"-I{tmp_path / 'stub'}",
                   f"-I{library / 'src'}", "-x", "c++", "-c", str(library / "examples/ke_benchmark/ke_benchmark.ino"),
                   "-o", str(tmp_path / "sketch.o")]
        compiled = subprocess.run(command, capture_output=True, text=True)
        assert compiled.returncode == 0, compiled.stderr[-2000:]


def check_library_contents(library: Path, toolchain, encoding: str, model: str = "lstm") -> None:
    """No path back to our package, the TFLM trees or their common parent; only the kernels the model registers;
    the manifests, licences and example."""
    for path in library.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            for forbidden in (str(ROOT.parent), str(toolchain.tree), "keras_expander/firmware"):
                assert forbidden.encode() not in text, f"{path.relative_to(library)} names {forbidden}"
    names = {path.name for path in (library / "src").rglob("*")}
    assert {"ke_model.h", "ke_model.cc", "model_data.cc", "model_op_resolver.h", "micro_interpreter.cc"} <= names
    ours = {"lstm": "sparse_lstm.cc", "gru_simple_rnn": "fused_rnn.cc"}[model]
    assert {"sparse_lstm.cc", "fused_rnn.cc"} & names == ({ours} if encoding != "plain" else set())
    assert not any(name.endswith("_test.cc") for name in names)
    assert {"library.properties", "library.json", "CMakeLists.txt", "README.md"} <= set(os.listdir(library))
    assert (library / "LICENSES" / "tflite-micro" / "LICENSE").is_file()
    assert (library / "examples" / "ke_benchmark" / "ke_benchmark.ino").is_file()


def test_library_refuses_a_non_empty_folder_and_several_builds(models, tmp_path, capsys):
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        write_library(models("lstm")["plain"], folder, "cortex-m4")
    assert os.listdir(folder) == ["mine.txt"]  # untouched
    model_path = tmp_path / "int8.tflite"
    model_path.write_bytes(models("lstm")["plain"])
    assert cli.main(["firmware", str(model_path), "--library", str(folder), "--target", "cortex-m4",
                     "--kernels", "reference"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--library" in error and str(folder) in error
    assert cli.main(["firmware", str(model_path), "--library", str(tmp_path / "new")]) == 2  # two targets
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--library" in error and "--target" in error
    assert not (tmp_path / "new").exists()
