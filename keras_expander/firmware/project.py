"""Generate a firmware project from a `.tflite` flatbuffer: the model array, the op resolver, the harness.

The project is plain source a firmware engineer can take into their own build: `model_data.cc/.h` (the
flatbuffer as a 16-byte aligned const array), `model_op_resolver.h` (exactly the ops the model uses, registered
with the `MicroMutableOpResolver` methods of the TFLM tree it is built against), `main.cc` and `arena.cc` (our
harness and its static tensor arena, sized with -DKE_ARENA_BYTES) and, for Cortex-M, `link.ld` (the core's CMSIS
gcc linker template of the tree, placed and sized for the board).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from keras_expander.files import write_atomic
from keras_expander.firmware.ops import CUSTOM_OPS, KERNELS_DIR, CustomOp
from keras_expander.firmware.toolchain import (CORES, FirmwareError, Registration, default_tree,
                                               resolver_registrations)

HARNESS_DIR = Path(__file__).parent / "harness"


def model_ops(model_content: bytes) -> list[str]:
    """Operator names of a flatbuffer, over all subgraphs, sorted and unique: builtin names such as
    "FULLY_CONNECTED", custom codes such as "TFLM_DECODE". Read with TFLM's `model_editor` (no TensorFlow)."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    model = model_editor.read(bytes(model_content))
    return sorted({op.opcode_name for subgraph in model.subgraphs for op in subgraph.operators})


def output_op(model_content: bytes) -> str:
    """Name of the operator that writes the flatbuffer's (first subgraph's first) output tensor, e.g. "LOGISTIC"
    for a sigmoid head or "FULLY_CONNECTED" for logits (`keras_expander.predictions.flatbuffer_reading`); "" when no
    operator writes it. Read with TFLM's `model_editor`."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    subgraph = model_editor.read(bytes(model_content)).subgraphs[0]
    output = subgraph.outputs[0]
    return next((op.opcode_name for op in subgraph.operators if any(t is output for t in op.outputs)), "")


def multiply_accumulates(model_content: bytes) -> tuple[int, int]:
    """Multiply-accumulates of one inference (batch 1), dense and with non-zero weights only, from the flatbuffer's
    constant weights (read with TFLM's `model_editor`).

    Counted: FULLY_CONNECTED, rows x outputs x inputs (rows: the input's elements over the weights' inputs);
    UNIDIRECTIONAL_SEQUENCE_LSTM, per step the four gates' input and recurrent weights (4 x units x (inputs +
    units)) and a projection if any, times the steps. Ops of the first subgraph only; other ops (elementwise, the
    gates' activations) have no weights and count no MACs. Pass the plain model of a rewritten one: our custom
    ops' weights are encoded blobs.

    Returns:
        (dense MACs, MACs of non-zero weights) per inference.
    """
    import numpy as np
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    dense = nonzero = 0
    for op in model_editor.read(bytes(model_content)).subgraphs[0].operators:
        if op.opcode_name == "FULLY_CONNECTED":
            activations, weights = op.inputs[0], op.inputs[1]
            rows = int(np.prod(activations.shape)) // int(weights.shape[-1])
            tensors, repeats = [weights], rows
        elif op.opcode_name == "UNIDIRECTIONAL_SEQUENCE_LSTM":
            activations = op.inputs[0]
            tensors = [op.inputs[i] for i in (1, 2, 3, 4, 5, 6, 7, 8, 16)
                       if i < len(op.inputs) and op.inputs[i] is not None]
            repeats = int(np.prod(activations.shape[:-1]))  # steps, batch 1
        else:
            continue
        for tensor in tensors:
            values = tensor.array
            dense += repeats * int(np.prod(tensor.shape))
            nonzero += repeats * int(np.count_nonzero(values) if values is not None else np.prod(tensor.shape))
    return dense, nonzero


def resolve_ops(ops: list[str], tree: Path) -> dict[str, Registration | CustomOp]:
    """Maps each op to how the firmware registers it, or refuses the model naming the ops TFLM lacks.

    Args:
        ops: From `model_ops`.
        tree: The TFLM tree the firmware is built against.

    Returns:
        op name -> `Registration` (a TFLM resolver method) or `ops.CustomOp` (ours).

    Raises:
        FirmwareError: an op neither the tree's `MicroMutableOpResolver` nor keras_expander provides.
    """
    known = resolver_registrations(tree)
    missing = [op for op in ops if op not in known and op not in CUSTOM_OPS]
    if missing:
        raise FirmwareError(f"The model needs op(s) {', '.join(missing)}, which TFLite Micro's op resolver "
                            f"(tree {tree}) does not provide; convert without them (e.g. full int8, no "
                            f"EXPERIMENTAL_SPARSITY) or add a kernel.")
    return {op: CUSTOM_OPS.get(op) or known[op] for op in ops}


def write_model_data(model_content: bytes, folder: Path, array_name: str = "g_model") -> list[Path]:
    """Writes model_data.h / model_data.cc: the flatbuffer as a 16-byte aligned const array (TFLM needs the
    alignment) and its length `<array_name>_len`, atomically.

    Raises:
        ValueError: `array_name` is not a C identifier.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", array_name):
        raise ValueError(f"Argument `array_name` must be a C identifier. Received: array_name={array_name!r}")
    guard = "KERAS_EXPANDER_MODEL_DATA_H_"
    # The header is the same for every model (its size is in the source), so the harness that includes it
    # compiles to the same object for models with the same ops (device.link caches it by content).
    header = (f"// Generated by keras_expander: the TFLite flatbuffer (model_data.cc).\n"
              f"#ifndef {guard}\n#define {guard}\n\n"
              f"extern const unsigned char {array_name}[];\nextern const unsigned int {array_name}_len;\n\n"
              f"#endif  // {guard}\n")
    rows = ("  " + ", ".join(f"0x{byte:02x}" for byte in model_content[start:start + 12]) + ","
            for start in range(0, len(model_content), 12))
    source = (f"// Generated by keras_expander: TFLite flatbuffer, {len(model_content)} bytes.\n"
              f"#include \"model_data.h\"\n\n"
              f"// TFLM needs the flatbuffer aligned to 16 bytes.\n"
              f"alignas(16) const unsigned char {array_name}[] = {{\n" + "\n".join(rows) + "\n};\n"
              f"const unsigned int {array_name}_len = {len(model_content)};\n")
    paths = [Path(folder) / "model_data.h", Path(folder) / "model_data.cc"]
    write_atomic(paths[0], header)
    write_atomic(paths[1], source)
    return paths


def write_op_resolver(registrations: dict[str, Registration | CustomOp], folder: Path) -> Path:
    """Writes model_op_resolver.h: `ModelOpResolver` sized to the model's ops and `RegisterModelOps(resolver)`.

    Args:
        registrations: From `resolve_ops`.
        folder: Output folder.

    Returns:
        The path written.
    """
    lines, includes = [], ['#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"']
    for op, registration in sorted(registrations.items()):
        if isinstance(registration, CustomOp):
            if f'#include "{registration.header}"' not in includes:
                includes.append(f'#include "{registration.header}"')
            variable = op.lower()
            lines.append(f"  static const TFLMRegistration {variable} = {registration.register_function}();")
            lines.append(f'  TF_LITE_ENSURE_STATUS(resolver.AddCustom("{op}", &{variable}));')
        else:
            lines.append(f"  TF_LITE_ENSURE_STATUS(resolver.{registration.method}());  // {op}")
    text = ("// Generated by keras_expander: the ops of the model, for TFLite Micro.\n"
            "#ifndef KERAS_EXPANDER_MODEL_OP_RESOLVER_H_\n#define KERAS_EXPANDER_MODEL_OP_RESOLVER_H_\n\n"
            + "\n".join(includes) + "\n\n"
            f"constexpr int kModelOpCount = {len(registrations)};\n"
            "using ModelOpResolver = tflite::MicroMutableOpResolver<kModelOpCount>;\n\n"
            "inline TfLiteStatus RegisterModelOps(ModelOpResolver& resolver) {\n" + "\n".join(lines) +
            "\n  return kTfLiteOk;\n}\n\n#endif  // KERAS_EXPANDER_MODEL_OP_RESOLVER_H_\n")
    path = Path(folder) / "model_op_resolver.h"
    write_atomic(path, text)
    return path


def write_linker_script(tree: Path, folder: Path, flash_bytes: int, ram_bytes: int, stack_bytes: int,
                        heap_bytes: int, target: str = "cortex-m4", ram_origin: int | None = None) -> Path:
    """Writes link.ld: the tree's CMSIS `<device>_gcc.ld` of the core, with the code and RAM origins of its QEMU
    board (`toolchain.CORES`: e.g. the Cortex-M33's Secure aliases 0x10000000 and 0x38000000) and the given sizes.

    Args:
        tree: The TFLM tree (holds the Cortex_DFP device folders).
        folder: Where link.ld goes.
        flash_bytes, ram_bytes: Code memory and RAM, bytes.
        stack_bytes, heap_bytes: Stack and heap reserved in RAM, bytes.
        target: The Cortex-M core, a key of `toolchain.CORES`.
        ram_origin: Another RAM address of the board (default: the core's `ram_origin`), e.g. the Cortex-M55
            board's DDR at 0x60000000 for programs larger than its 512 KiB DTCM.

    Returns:
        The path written.

    Raises:
        FirmwareError: the tree has no such template or its configuration lines changed.
    """
    core = CORES[target]
    template = tree / f"third_party/cmsis/Cortex_DFP/Device/{core.device}/Config/{core.device}_gcc.ld"
    if not template.is_file():
        raise FirmwareError(f"{template} not found: the {target} build needs the CMSIS linker template.")
    text = template.read_text()
    ram_base = core.ram_origin if ram_origin is None else ram_origin
    for symbol, value in (("__ROM_BASE", core.code_origin), ("__ROM_SIZE", flash_bytes),
                          ("__RAM_BASE", ram_base), ("__RAM_SIZE", ram_bytes),
                          ("__STACK_SIZE", stack_bytes), ("__HEAP_SIZE", heap_bytes)):
        text, count = re.subn(rf"^{symbol}\s*=\s*0x[0-9A-Fa-f]+;", f"{symbol} = 0x{value:08X};", text, flags=re.M)
        if count != 1:
            raise FirmwareError(f"{template}: expected one '{symbol} = ...;' line, found {count}.")
    path = Path(folder) / "link.ld"
    write_atomic(path, text)
    return path


def write_project(model_content: bytes, folder: Path, tree: Path) -> dict[str, Registration | CustomOp]:
    """Writes a firmware project for the model into `folder` (created): model_data.cc/.h, model_op_resolver.h,
    main.cc, arena.cc and, where the model uses our custom ops, their kernel sources.

    Returns:
        The op registrations (from `resolve_ops`).

    Raises:
        FirmwareError: the model needs an op neither TFLM nor keras_expander provides.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    registrations = resolve_ops(model_ops(model_content), tree)
    write_model_data(model_content, folder)
    write_op_resolver(registrations, folder)
    for name in ("main.cc", "arena.cc"):
        shutil.copyfile(HARNESS_DIR / name, folder / name)
    custom_sources = {source for registration in registrations.values()
                      if isinstance(registration, CustomOp) for source in registration.sources}
    if custom_sources:
        for path in KERNELS_DIR.iterdir():
            if path.suffix in (".h",) or path.name in custom_sources:
                shutil.copyfile(path, folder / path.name)
    return registrations


# Where TFLM's MicroMutableOpResolver does not follow Add + CamelCase of the op name (checked against the tree's
# micro_mutable_op_resolver.h by tests/test_export.py).
_OP_METHOD_EXCEPTIONS = {"UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
                         "BATCH_MATMUL": "AddBatchMatMul", "CUMSUM": "AddCumSum", "PADV2": "AddPadV2"}


def resolver_method(op_name: str) -> str:
    """TFLM `MicroMutableOpResolver` method for a builtin op, e.g. FULLY_CONNECTED -> AddFullyConnected,
    CONV_2D -> AddConv2D (used when no TFLM tree is at hand to read the methods from)."""
    if op_name in _OP_METHOD_EXCEPTIONS:
        return _OP_METHOD_EXCEPTIONS[op_name]
    parts = op_name.split("_")
    return "Add" + "".join(part if re.fullmatch(r"\d+D", part) else part.capitalize() for part in parts)


def write_firmware_files(model_content: bytes, folder: str | Path, array_name: str = "g_model") -> list[str]:
    """Writes model_data.h / model_data.cc (a 16-byte aligned const array and its length, as the TFLM examples
    do) and model_op_resolver.h (the builtin ops the model needs), atomically, for a user's own build without a
    TFLM tree at hand; `keras-expander export` writes them beside the `.tflite`, `write_project` is the whole project.

    Args:
        model_content: The flatbuffer (builtin ops only, as the export writes it).
        folder: Output folder (created).
        array_name: C identifier of the array; its length is `<array_name>_len`.

    Returns:
        The three paths written.

    Raises:
        ValueError: `array_name` is not a C identifier.
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = write_model_data(model_content, Path(folder), array_name)
    # The tree's own resolver header names the methods exactly; the naming rule covers a machine without a tree.
    tree = default_tree("host", "reference")
    known = resolver_registrations(tree) if tree is not None else {}
    registrations = {op: Registration(known[op].method if op in known else resolver_method(op), ())
                     for op in model_ops(model_content)}
    return [str(path) for path in (*paths, write_op_resolver(registrations, Path(folder)))]
