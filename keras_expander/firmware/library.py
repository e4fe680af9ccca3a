"""A self-contained source library for one model and one core, for a user's own firmware build.

`write_library` writes, for one `.tflite` and one (target, kernel set):

- `src/`: the TFLM core (`toolchain.core_sources`), the kernels the model registers (`toolchain.kernel_sources`,
  ours among them), every header they include (the include closure, nothing else), CMSIS-Core headers and, for
  kernels="cmsis_nn", CMSIS-NN's sources; the model array and op resolver (`project`); and a C API,
  `ke_model.h` / `ke_model.cc`: `ke_init`, `ke_invoke`, `ke_reset_state`, `ke_arena_bytes`, with the input and
  output sizes and quantization as constants. The include folders of the TFLM tree are merged into `src/`, so
  `src/` is the one include folder (Arduino compiles `src/` recursively and adds only it);
- `CMakeLists.txt` (a static library `ke_model`, the core's flags in `KE_CPU_FLAGS`), `cmake/arm-none-eabi.cmake`,
  `library.properties` (Arduino), `library.json` (PlatformIO), `README.md`, `LICENSES/` (the trees' licence files
  and a NOTICE) and the sketch `ke_benchmark.ino` in its examples folder (times `ke_invoke` with the DWT cycle
  counter).

The arena size is measured, not guessed: the firmware harness is built for the same tree and bisected under QEMU
(`deploy.tight_arena_image`), as `keras-expander firmware` does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from keras_expander import __version__
from keras_expander.files import staged_folder, write_atomic
from keras_expander.firmware import deploy, device, project
from keras_expander.firmware.model_edit import tflm_compression
from keras_expander.firmware.ops import KERNELS_DIR, CustomOp
from keras_expander.firmware.toolchain import (CORES, FirmwareError, Toolchain, core_sources, find_toolchain,
                                               is_kernel_path, kernel_sources)

LIBRARY_NAME = "ke_model"
ARENA_ALIGNMENT = 16  # bytes; TFLM aligns its arena to 16, the measured size assumes an aligned start
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*([<"])([^">]+)[">]', re.M)
_CXX_ONLY = ("-std=c++17", "-fno-rtti", "-fno-threadsafe-statics")
# The upstream of each folder under third_party/ (and of the tree itself), for LICENSES/NOTICE.md; the pinned
# commits are in the trees' README (docs/deployment.md).
_UPSTREAMS = {
    "tflite-micro": ("Apache-2.0", "https://github.com/tensorflow/tflite-micro"),
    "flatbuffers": ("Apache-2.0", "https://github.com/google/flatbuffers"),
    "gemmlowp": ("Apache-2.0", "https://github.com/google/gemmlowp"),
    "ruy": ("Apache-2.0", "https://github.com/google/ruy"),
    "kissfft": ("BSD-3-Clause", "https://github.com/mborgerding/kissfft"),
    "cmsis": ("Apache-2.0", "https://github.com/ARM-software/CMSIS_6 and https://github.com/ARM-software/Cortex_DFP"),
    "cmsis_nn": ("Apache-2.0", "https://github.com/ARM-software/CMSIS-NN"),
}


def write_library(model_content: bytes, folder: str | os.PathLike, target: str = "cortex-m4",
                  kernels: str = "reference", tree: str | os.PathLike | None = None) -> Path:
    """Writes a source library of the model for one core, to add to one's own build (CMake, Zephyr, ESP-IDF
    wrapper, Arduino, PlatformIO).

    The folder is written whole or not at all: a staging folder beside it takes its place at the end
    (`files.staged_folder`).

    Example:
        >>> write_library(open("int8.tflite", "rb").read(), "ke_model_lib", "cortex-m4", "cmsis_nn")

    Args:
        model_content: A full-int8 `.tflite` flatbuffer (int8 input and output), e.g. `int8.tflite` from
            `keras-expander export` or its rewrite by `rewrites.kernel_rewrite`.
        folder: The library folder to create; it must not exist or be empty.
        target: The core: "cortex-m4" or another of `toolchain.CORES`.
        kernels: "reference" or "cmsis_nn".
        tree: TFLM source tree; default `toolchain.default_tree(target, kernels)`.

    Returns:
        The library folder (absolute).

    Raises:
        ValueError: `folder` exists and is not an empty folder; `target` is no Cortex-M core; the model's input
            or output is not int8.
        FirmwareError: missing tool or tree, an op TFLM lacks, a header collision, or the arena measurement
            failed.
    """
    folder = check_library_folder(folder)
    if target not in CORES:
        raise ValueError(f"Argument `target` must be a Cortex-M core for a library, one of {tuple(CORES)}. "
                         f"Received: target={target!r}")
    toolchain = find_toolchain(target, kernels, tree)
    io = _int8_io(model_content)
    with staged_folder(folder, "folder") as staging:  # the whole library or nothing (an empty folder stays empty)
        _write(model_content, Path(staging), toolchain, io)
    return folder


def check_library_folder(folder: str | os.PathLike, argument: str = "folder") -> Path:
    """Refuses a library folder that exists and is not empty (a library is never written over other files).

    Args:
        folder: The library folder.
        argument: Its name in the message ("--library" for the command line).

    Returns:
        The absolute path.

    Raises:
        ValueError: `folder` is a file or a non-empty folder.
    """
    folder = Path(folder).resolve()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"Argument `{argument}` must be a new or empty folder. Received: {argument} {folder} "
                         f"(exists and is not empty); choose another folder or empty it.")
    return folder


def _int8_io(model_content: bytes) -> dict:
    """Input and output tensors' bytes, shape, scale and zero point; refuses a model whose input or output is not
    int8 (the C API passes int8 tensors)."""
    _, _, _, model_editor, schema = tflm_compression()
    subgraph = model_editor.read(bytes(model_content)).subgraphs[0]
    io = {}
    for role, tensor in (("input", subgraph.inputs[0]), ("output", subgraph.outputs[0])):
        if tensor.dtype != schema.TensorType.INT8 or tensor.quantization is None:
            raise ValueError(f"The library's C API takes an int8 model; the model's {role} is not quantized int8. "
                             f"Export it with `keras-expander export --mode int8`.")
        scale, zero_point = tensor.quantization.scales, tensor.quantization.zero_points
        io[role] = {"shape": tuple(int(size) for size in tensor.shape), "bytes": int(np.prod(tensor.shape)),
                    "scale": float(np.ravel(scale)[0]), "zero_point": int(np.ravel(zero_point)[0])}
    return io


def _write(model_content: bytes, out: Path, toolchain: Toolchain, io: dict) -> None:
    src = out / "src"
    src.mkdir()
    registrations = project.resolve_ops(project.model_ops(model_content), toolchain.tree)
    deploy.check_cmsis_nn_decode(list(registrations), toolchain.kernels)
    arena_bytes = measured_arena_bytes(model_content, toolchain, out / "arena_probe", io["input"]["bytes"])
    shutil.rmtree(out / "arena_probe")
    project.write_model_data(model_content, src)
    project.write_op_resolver(registrations, src)
    write_atomic(src / "ke_model.h", _api_header(io, arena_bytes, toolchain))
    write_atomic(src / "ke_model.cc", _API_SOURCE)
    functions = sorted({f for r in registrations.values() if not isinstance(r, CustomOp) for f in r.functions})
    ours = sorted({KERNELS_DIR / source for r in registrations.values() if isinstance(r, CustomOp)
                   for source in r.sources})
    core = core_sources(toolchain)
    kernel_files = kernel_sources(toolchain, functions, ours)
    placed = copy_include_closure(toolchain, [*core, *kernel_files], src)
    (out / "cmake").mkdir()
    write_atomic(out / "cmake" / "arm-none-eabi.cmake", _TOOLCHAIN_FILE)
    sources = sorted(path for path in placed if path.endswith((".cc", ".c")))
    our_names = {source.name for source in ours}
    fast = [path for path in sources if is_kernel_path(None if path in our_names else path)]
    write_atomic(out / "CMakeLists.txt", _cmake_lists(toolchain, [p for p in sources if p not in fast], fast))
    write_atomic(out / "library.properties", _arduino_properties(toolchain))
    write_atomic(out / "library.json", _platformio_manifest(toolchain))
    write_atomic(out / "README.md", _readme(toolchain, io, arena_bytes, sorted(registrations)))
    _write_licences(toolchain, placed, out / "LICENSES")
    example = out / "examples" / "ke_benchmark"
    example.mkdir(parents=True)
    write_atomic(example / "ke_benchmark.ino", _EXAMPLE)


def measured_arena_bytes(model_content: bytes, toolchain: Toolchain, workdir: Path, input_bytes: int) -> int:
    """The tightest tensor arena that runs the model on this tree and core: the firmware harness built in
    `workdir` and bisected under QEMU (`deploy.tight_arena_image`, 16-byte steps) on one all-zero input.

    Args:
        model_content: The flatbuffer.
        toolchain: Target, kernels and tree.
        workdir: A scratch folder for the harness project (created; the caller removes it).
        input_bytes: Bytes of the model's int8 input tensor.

    Returns:
        Arena bytes, a multiple of 16.

    Raises:
        FirmwareError: a build or run failure, or no arena up to the probe size works.
    """
    registrations = project.write_project(model_content, workdir, toolchain.tree)
    project.write_linker_script(toolchain.tree, workdir, toolchain.core.code_bytes, toolchain.core.ram_bytes,
                                device.STACK_BYTES, device.HEAP_BYTES, toolchain.target)
    probe = np.zeros((1, input_bytes), np.int8)
    return deploy.tight_arena_image(toolchain, workdir, registrations, probe)[1]


def _include_roots(toolchain: Toolchain) -> list[Path]:
    return [Path(flag[2:]) for flag in toolchain.include_flags] + [KERNELS_DIR]


def _destination(toolchain: Toolchain, source: Path) -> str:
    """Where a source goes under src/: its path in the tree, or its name for ours (beside ke_model.cc)."""
    return source.relative_to(toolchain.tree).as_posix() if source.is_relative_to(toolchain.tree) else source.name


def copy_include_closure(toolchain: Toolchain, sources: list[Path], src: Path) -> dict[str, Path]:
    """Copies sources into `src` with every header they (and the files already in `src`) include, found as the
    compiler finds it: a quoted include beside the including file first, then the tree's include folders in order.
    A header found through an include folder goes to that include's path under `src`, so `src` alone is the
    include folder; one found beside its includer keeps that relation. Includes that none of these hold (the C and
    C++ libraries) are left to the compiler.

    Args:
        toolchain: Gives the tree and its include folders (`Toolchain.include_flags`).
        sources: Absolute paths of .cc / .c files (tree sources, ours from `ops.KERNELS_DIR`).
        src: The library's src/ folder, holding the generated files already.

    Returns:
        Every file placed, path under `src` (POSIX) -> origin (the generated files map to themselves).

    Raises:
        FirmwareError: two different headers would land on one path.
    """
    roots = _include_roots(toolchain)
    placed: dict[str, Path] = {path.name: path for path in src.iterdir()}
    queue = [(path, path.name) for path in src.iterdir()]
    for source in sources:
        placed[_destination(toolchain, source)] = source
        queue.append((source, _destination(toolchain, source)))
    # Included through a macro (CMSIS_DEVICE_ARM_CORTEX_M_XX_HEADER_FILE), so invisible to the scan below.
    device_header = toolchain.core.device_header
    header = next(root / device_header for root in roots if (root / device_header).is_file())
    placed[device_header] = header
    queue.append((header, device_header))
    while queue:
        origin, destination = queue.pop()
        for bracket, name in _INCLUDE.findall(origin.read_text(errors="replace")):
            beside = origin.parent / name
            if bracket == '"' and beside.is_file():
                header, where = beside, os.path.normpath(Path(destination).parent / name)
            else:
                header = next((root / name for root in roots if (root / name).is_file()), None)
                where = os.path.normpath(name)
            if header is None:
                continue
            if where.startswith(".."):
                raise FirmwareError(f"{origin} includes {name!r}, which lies outside the library's src/.")
            if where in placed:
                if placed[where].read_bytes() != header.read_bytes():
                    raise FirmwareError(f"Two different headers go to src/{where}: {placed[where]} and {header}; "
                                        f"the tree's include folders collide.")
                continue
            placed[where] = header
            queue.append((header, where))
    for where, origin in placed.items():
        if origin.parent != src:
            (src / where).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, src / where)  # the source's time: a regenerated library rebuilds what changed
    return placed


def _write_licences(toolchain: Toolchain, placed: dict[str, Path], folder: Path) -> None:
    """LICENSES/: each contributing component's LICENSE file where the tree has one, and NOTICE.md naming every
    component, its licence and upstream."""
    folder.mkdir()
    components = set()
    for origin in placed.values():
        if not origin.is_relative_to(toolchain.tree):
            continue
        parts = origin.relative_to(toolchain.tree).parts
        components.add(parts[1] if parts[0] == "third_party" else "tflite-micro")
    lines = ["# Notices", "", f"This library was generated by keras_expander {__version__} "
             "(Apache-2.0) from a TensorFlow Lite Micro source tree made by TFLM's "
             "`create_tflm_tree.py`. Its parts and their licences:", "",
             "| part | files | licence | upstream | licence file |", "|---|---|---|---|---|",
             "| keras_expander | `src/ke_model.*`, `src/model_*`, our kernels in `src/` | Apache-2.0 | "
             "keras_expander | (Apache-2.0, as TFLM's) |"]
    for component in sorted(components):
        licence, upstream = _UPSTREAMS.get(component, ("see upstream", "unknown"))
        origin = toolchain.tree if component == "tflite-micro" else toolchain.tree / "third_party" / component
        files = "`src/tensorflow/`, `src/signal/`" if component == "tflite-micro" else f"`third_party/{component}`"
        copied = "-"
        if (origin / "LICENSE").is_file():
            copied = f"`LICENSES/{component}/LICENSE`"
            (folder / component).mkdir()
            shutil.copyfile(origin / "LICENSE", folder / component / "LICENSE")
        lines.append(f"| {component} | {files} (headers merged into `src/`) | {licence} | {upstream} | {copied} |")
    write_atomic(folder / "NOTICE.md", "\n".join(lines) + "\n")


def _split_flags(toolchain: Toolchain) -> tuple[list[str], list[str], list[str]]:
    """The toolchain's flags without include folders and path maps: (CPU flags, -D definitions, other flags)."""
    flags = [flag for flag in toolchain.flags if not flag.startswith(("-I", "-ffile-prefix-map"))]
    cpu = [flag for flag in flags if flag.startswith("-m")]
    definitions = [flag[2:] for flag in flags if flag.startswith("-D")]
    return cpu, definitions, [flag for flag in flags if flag not in cpu and not flag.startswith("-D")]


def _cmake_lists(toolchain: Toolchain, core: list[str], fast: list[str]) -> str:
    cpu, definitions, other = _split_flags(toolchain)
    common = [flag for flag in other if flag not in _CXX_ONLY]
    cxx = [flag for flag in other if flag in _CXX_ONLY and not flag.startswith("-std")]
    listing = lambda paths: "\n".join(f"  src/{path}" for path in paths)  # noqa: E731
    quoted = " ".join('"' + definition.replace('"', '\\"') + '"' for definition in definitions)
    return f"""# Generated by keras_expander {__version__}: the model as a static library for {toolchain.target}
# ({toolchain.kernels} kernels). Use it with add_subdirectory(<this folder>) and link `{LIBRARY_NAME}`; see README.md.
cmake_minimum_required(VERSION 3.16)
project({LIBRARY_NAME} C CXX)

set(KE_CPU_FLAGS "{';'.join(cpu)}" CACHE STRING
    "Core flags ({toolchain.target}), also for targets linking {LIBRARY_NAME}; empty if the toolchain sets them")

set(KE_CORE_SOURCES
{listing(core)}
)
# Kernels (TFLM's, CMSIS-NN's, keras_expander's) at -O2 and the TFLM core at -Os, as TFLM's own Makefile.
set(KE_KERNEL_SOURCES
{listing(fast)}
)
set_source_files_properties(${{KE_CORE_SOURCES}} PROPERTIES COMPILE_OPTIONS "-Os")
set_source_files_properties(${{KE_KERNEL_SOURCES}} PROPERTIES COMPILE_OPTIONS "-O2")

add_library({LIBRARY_NAME} STATIC ${{KE_CORE_SOURCES}} ${{KE_KERNEL_SOURCES}})
set_target_properties({LIBRARY_NAME} PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF
                      C_STANDARD 11 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)
target_include_directories({LIBRARY_NAME} PUBLIC ${{CMAKE_CURRENT_SOURCE_DIR}}/src)
target_compile_definitions({LIBRARY_NAME} PRIVATE
  {quoted})
target_compile_options({LIBRARY_NAME} PRIVATE {' '.join(common)}
  "-ffile-prefix-map=${{CMAKE_CURRENT_SOURCE_DIR}}/=")
target_compile_options({LIBRARY_NAME} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:{';'.join(cxx)}>)
target_compile_options({LIBRARY_NAME} PUBLIC ${{KE_CPU_FLAGS}})
target_link_options({LIBRARY_NAME} INTERFACE ${{KE_CPU_FLAGS}})
"""


_TOOLCHAIN_FILE = """# A plain arm-none-eabi GCC toolchain file: -DCMAKE_TOOLCHAIN_FILE=cmake/arm-none-eabi.cmake
# The core's flags come from the library's KE_CPU_FLAGS. Any other arm-none-eabi toolchain file works as well.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_CXX_COMPILER arm-none-eabi-g++)
set(CMAKE_ASM_COMPILER arm-none-eabi-gcc)
set(CMAKE_AR arm-none-eabi-ar)
# Compiler checks build a static library, not an executable (no board start-up or linker script here).
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
"""


def _c_float(value: float) -> str:
    return f"{float(np.float32(value))!r}f"


def _api_header(io: dict, arena_bytes: int, toolchain: Toolchain) -> str:
    i, o = io["input"], io["output"]
    return f"""// Generated by keras_expander {__version__}: C API of the model
// ({toolchain.target}, {toolchain.kernels} kernels).
// No heap: the caller gives the tensor arena; the interpreter lives in static storage of ke_model.cc.
//
//   alignas(16) static uint8_t arena[KE_ARENA_BYTES];
//   ke_init(arena, sizeof(arena));
//   for each sequence: ke_reset_state(); ke_invoke(input, output);
#ifndef KE_MODEL_H_
#define KE_MODEL_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

// Tensor arena, bytes: the smallest that runs the model, measured on this TFLM tree and core under QEMU. The
// arena must start on a KE_ARENA_ALIGNMENT-byte boundary.
#define KE_ARENA_BYTES {arena_bytes}u
#define KE_ARENA_ALIGNMENT {ARENA_ALIGNMENT}u
// Input: int8 tensor of shape {list(i["shape"])} (batch first), {i["bytes"]} bytes;
// quantize a float x as clamp(round(x / KE_INPUT_SCALE) + KE_INPUT_ZERO_POINT, -128, 127).
#define KE_INPUT_BYTES {i["bytes"]}u
#define KE_INPUT_SCALE {_c_float(i["scale"])}
#define KE_INPUT_ZERO_POINT ({i["zero_point"]})
// Output: int8 tensor of shape {list(o["shape"])}, {o["bytes"]} bytes;
// float = (q - KE_OUTPUT_ZERO_POINT) * KE_OUTPUT_SCALE.
#define KE_OUTPUT_BYTES {o["bytes"]}u
#define KE_OUTPUT_SCALE {_c_float(o["scale"])}
#define KE_OUTPUT_ZERO_POINT ({o["zero_point"]})

typedef enum {{
  KE_OK = 0,
  KE_ERROR_ARGUMENT = 1,         // a null pointer, or an arena not aligned to KE_ARENA_ALIGNMENT
  KE_ERROR_MODEL = 2,            // the model's schema version differs from the runtime's
  KE_ERROR_OPS = 3,              // registering the model's ops failed
  KE_ERROR_ARENA = 4,            // AllocateTensors failed: the arena is smaller than ke_arena_bytes()
  KE_ERROR_TENSORS = 5,          // the input or output tensor differs from KE_INPUT_BYTES / KE_OUTPUT_BYTES
  KE_ERROR_NOT_INITIALISED = 6,  // ke_init has not succeeded
  KE_ERROR_INVOKE = 7            // an op failed during inference
}} ke_status;

// The arena ke_init needs, bytes (KE_ARENA_BYTES).
size_t ke_arena_bytes(void);
// Builds the interpreter in `arena` (aligned to KE_ARENA_ALIGNMENT, at least ke_arena_bytes() bytes) and
// allocates the tensors; the recurrent state starts at zero. Calling it again starts over.
ke_status ke_init(void* arena, size_t arena_bytes);
// One inference: copies KE_INPUT_BYTES from `input`, runs the model, copies KE_OUTPUT_BYTES to `output`. The
// recurrent (variable) tensors carry over from the previous call: call ke_reset_state() between sequences.
ke_status ke_invoke(const int8_t* input, int8_t* output);
// Resets the recurrent (variable) tensors and the ops' state to what ke_init left (MicroInterpreter::Reset).
ke_status ke_reset_state(void);

#ifdef __cplusplus
}}  // extern "C"
#endif

#endif  // KE_MODEL_H_
"""


_API_SOURCE = """// Generated by keras_expander: the C API of ke_model.h over TFLite Micro's MicroInterpreter.
#include "ke_model.h"

#include <cstring>
#include <new>

#include "model_data.h"
#include "model_op_resolver.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

ModelOpResolver g_resolver;
bool g_registered = false;
alignas(tflite::MicroInterpreter) unsigned char g_interpreter_storage[sizeof(tflite::MicroInterpreter)];
tflite::MicroInterpreter* g_interpreter = nullptr;

void Release() {
  if (g_interpreter != nullptr) {
    g_interpreter->~MicroInterpreter();
    g_interpreter = nullptr;
  }
}

}  // namespace

extern "C" size_t ke_arena_bytes(void) { return KE_ARENA_BYTES; }

extern "C" ke_status ke_init(void* arena, size_t arena_bytes) {
  Release();
  if (arena == nullptr || reinterpret_cast<uintptr_t>(arena) % KE_ARENA_ALIGNMENT != 0) return KE_ERROR_ARGUMENT;
  const tflite::Model* model = tflite::GetModel(g_model);
  if (model->version() != TFLITE_SCHEMA_VERSION) return KE_ERROR_MODEL;
  if (!g_registered) {
    if (RegisterModelOps(g_resolver) != kTfLiteOk) return KE_ERROR_OPS;
    g_registered = true;
  }
  tflite::MicroInterpreter* interpreter = new (g_interpreter_storage)
      tflite::MicroInterpreter(model, g_resolver, static_cast<uint8_t*>(arena), arena_bytes);
  g_interpreter = interpreter;
  if (interpreter->AllocateTensors() != kTfLiteOk) {
    Release();
    return KE_ERROR_ARENA;
  }
  if (interpreter->input(0)->bytes != KE_INPUT_BYTES || interpreter->output(0)->bytes != KE_OUTPUT_BYTES) {
    Release();
    return KE_ERROR_TENSORS;
  }
  return KE_OK;
}

extern "C" ke_status ke_invoke(const int8_t* input, int8_t* output) {
  if (g_interpreter == nullptr) return KE_ERROR_NOT_INITIALISED;
  if (input == nullptr || output == nullptr) return KE_ERROR_ARGUMENT;
  std::memcpy(g_interpreter->input(0)->data.int8, input, KE_INPUT_BYTES);
  if (g_interpreter->Invoke() != kTfLiteOk) return KE_ERROR_INVOKE;
  std::memcpy(output, g_interpreter->output(0)->data.int8, KE_OUTPUT_BYTES);
  return KE_OK;
}

extern "C" ke_status ke_reset_state(void) {
  if (g_interpreter == nullptr) return KE_ERROR_NOT_INITIALISED;
  return g_interpreter->Reset() == kTfLiteOk ? KE_OK : KE_ERROR_INVOKE;
}
"""


_EXAMPLE = """// keras_expander example: times one inference with the DWT cycle counter and prints the class.
// Arduino / PlatformIO (framework = arduino) on a Cortex-M3/M4/M7/M33/M55 board. Replace `input` with a quantized
// sequence (see KE_INPUT_SCALE in ke_model.h); the all-zero-point input below only shows the timing.
#include <Arduino.h>

#include "ke_model.h"

// The debug registers of Armv7-M / Armv8-M (the CMSIS names when the board's core headers define them).
#if !defined(DWT)
struct KeDwt { volatile uint32_t CTRL; volatile uint32_t CYCCNT; };
struct KeCoreDebug { volatile uint32_t DHCSR, DCRSR, DCRDR, DEMCR; };
#define DWT ((KeDwt*)0xE0001000UL)
#define CoreDebug ((KeCoreDebug*)0xE000EDF0UL)
#define CoreDebug_DEMCR_TRCENA_Msk (1UL << 24)
#define DWT_CTRL_CYCCNTENA_Msk (1UL << 0)
#endif

alignas(KE_ARENA_ALIGNMENT) static uint8_t arena[KE_ARENA_BYTES];
static int8_t input[KE_INPUT_BYTES];
static int8_t output[KE_OUTPUT_BYTES];

void setup() {
  Serial.begin(115200);
  while (!Serial) {
  }
  if (ke_init(arena, sizeof(arena)) != KE_OK) {
    Serial.println("ke_init failed");
    while (true) {
    }
  }
  CoreDebug->DEMCR |= CoreDebug_DEMCR_TRCENA_Msk;  // enable the trace unit, then the cycle counter
  DWT->CYCCNT = 0;
  DWT->CTRL |= DWT_CTRL_CYCCNTENA_Msk;
}

void loop() {
  for (unsigned i = 0; i < KE_INPUT_BYTES; ++i) input[i] = KE_INPUT_ZERO_POINT;
  ke_reset_state();  // a new sequence
  const uint32_t start = DWT->CYCCNT;
  const ke_status status = ke_invoke(input, output);
  const uint32_t cycles = DWT->CYCCNT - start;
  unsigned best = 0;
  for (unsigned i = 1; i < KE_OUTPUT_BYTES; ++i) {
    if (output[i] > output[best]) best = i;
  }
  Serial.print("status ");
  Serial.print(static_cast<int>(status));
  Serial.print(", class ");
  Serial.print(best);
  Serial.print(", cycles ");
  Serial.println(cycles);
  delay(1000);
}
"""


def _arduino_properties(toolchain: Toolchain) -> str:
    return (f"name=ke_model\nversion={__version__}\nauthor=keras_expander (generated)\n"
            f"maintainer=keras_expander\nsentence=A pruned recurrent int8 model on TensorFlow Lite Micro "
            f"({toolchain.kernels} kernels), generated by keras_expander.\n"
            f"paragraph=Call ke_init, ke_reset_state and ke_invoke (ke_model.h). Built for {toolchain.target}; "
            f"Arduino passes no compile flags to libraries: see README.md.\n"
            f"category=Data Processing\nurl=https://www.tensorflow.org/lite/microcontrollers\n"
            f"architectures=*\nincludes=ke_model.h\nprecompiled=false\n")


def _platformio_manifest(toolchain: Toolchain) -> str:
    _, definitions, other = _split_flags(toolchain)
    flags = [f"-D{definition}" for definition in definitions] + [f for f in other if f not in _CXX_ONLY]
    manifest = {"name": "ke_model", "version": __version__,
                "description": f"A pruned recurrent int8 model on TensorFlow Lite Micro for {toolchain.target} "
                               f"({toolchain.kernels} kernels), generated by keras_expander.",
                "keywords": ["tflite-micro", "tensorflow", "rnn", "int8"], "license": "Apache-2.0",
                "authors": [{"name": "keras_expander (generated)"}], "frameworks": "*", "platforms": "*",
                "build": {"srcDir": "src", "includeDir": "src", "srcFilter": ["+<*>"], "flags": flags,
                          "libArchive": True},
                "examples": ["examples/ke_benchmark/ke_benchmark.ino"]}
    return json.dumps(manifest, indent=2) + "\n"


def _readme(toolchain: Toolchain, io: dict, arena_bytes: int, ops: list[str]) -> str:
    cpu, definitions, other = _split_flags(toolchain)
    arduino_flags = " ".join([*(f"-D{d}" for d in definitions)]).replace('"', '\\"')
    return f"""# ke_model: a TensorFlow Lite Micro model as a source library

Generated by keras_expander {__version__} for **{toolchain.target}** with TFLM's **{toolchain.kernels}** kernels.
Ops: {', '.join(ops)}. Input {io['input']['bytes']} int8 bytes, output {io['output']['bytes']} int8 bytes, tensor
arena {arena_bytes} bytes (measured). Everything is in `src/` (TFLM's include folders merged into it); licences in
`LICENSES/`.

## C API (`src/ke_model.h`, C-callable, no heap)

```c
#include "ke_model.h"
alignas(16) static uint8_t arena[KE_ARENA_BYTES];   // or __attribute__((aligned(16))) in C
ke_init(arena, sizeof(arena));                       // KE_OK, or a ke_status naming what failed
ke_reset_state();                                    // before each new sequence (recurrent state to zero)
ke_invoke(input, output);                            // int8[KE_INPUT_BYTES] -> int8[KE_OUTPUT_BYTES]
```

Quantization: `KE_INPUT_SCALE`, `KE_INPUT_ZERO_POINT`, `KE_OUTPUT_SCALE`, `KE_OUTPUT_ZERO_POINT`.

## Plain CMake

```cmake
add_subdirectory(path/to/this/folder ke_model)
target_link_libraries(app PRIVATE ke_model)
```

`KE_CPU_FLAGS` (default `{';'.join(cpu)}`) is added to the library and to whatever links it; set it to an empty
string when your toolchain file already gives the core's flags. `cmake/arm-none-eabi.cmake` is a plain
arm-none-eabi-gcc toolchain file: `cmake -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/arm-none-eabi.cmake -B build`,
then `cmake --build build` builds `libke_model.a` alone. Your board gives the start-up code, linker script and
`SystemCoreClock`; TFLM's Cortex-M port includes the CMSIS device header that
`CMSIS_DEVICE_ARM_CORTEX_M_XX_HEADER_FILE` names (`{toolchain.core.device_header}`, shipped in `src/`) for its
timer only.

## Zephyr

In your application's `CMakeLists.txt`, after `find_package(Zephyr)`:

```cmake
set(KE_CPU_FLAGS "" CACHE STRING "" FORCE)   # Zephyr's toolchain sets the core's flags
add_subdirectory(path/to/this/folder ke_model)
target_link_libraries(app PRIVATE ke_model)
```

(or wrap `src/` in a module with `zephyr_library()` / `zephyr_library_sources(...)` and the definitions of
`CMakeLists.txt`). Enable C++ (`CONFIG_CPP=y`, `CONFIG_STD_CPP17=y`).

## ESP-IDF

A component folder `components/ke_model/CMakeLists.txt`:

```cmake
idf_component_register(INCLUDE_DIRS "")
set(KE_CPU_FLAGS "" CACHE STRING "" FORCE)
add_subdirectory(path/to/this/folder ke_model)
target_link_libraries(${{COMPONENT_LIB}} INTERFACE ke_model)
```

Espressif's chips are Xtensa or RISC-V: a library generated for {toolchain.target} holds Arm-only sources (TFLM's
`cortex_m_generic` port, CMSIS{', CMSIS-NN' if toolchain.kernels == 'cmsis_nn' else ''}), so for ESP-IDF generate
it from a TFLM tree made for that chip.

## Arduino

Copy this folder into `~/Arduino/libraries/ke_model` (or zip it and use "Add .ZIP Library"); the sketch
`examples/ke_benchmark` times `ke_invoke` with the DWT cycle counter and prints the class. The Arduino IDE passes
no compile flags to libraries: add these to `compiler.c.extra_flags` and `compiler.cpp.extra_flags` in the core's
`platform.local.txt`, or with arduino-cli `--build-property "compiler.cpp.extra_flags=..."`:

```
{arduino_flags}
```

## PlatformIO

Put this folder under `lib/` of your project (or `lib_deps = file://path/to/this/folder`); `library.json` gives
the flags. TFLM needs C++17: where the framework defaults to an older standard, add `build_unflags = -std=gnu++11
-std=gnu++14` and `build_flags = -std=gnu++17` to `platformio.ini`. The example:
`examples/ke_benchmark/ke_benchmark.ino`.
"""
