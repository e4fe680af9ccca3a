"""Deploy a `.tflite` model as firmware: generate the project, build it, run it, verify it, measure it.

One call builds the model for the host (g++) or a Cortex-M4F, M7, M33 or M55 (arm-none-eabi-gcc, run under QEMU's
board for the core, `toolchain.CORES`), with TFLM's reference or CMSIS-NN kernels (or keras_expander's sparse
kernels, which the model's ops select), and returns a `FirmwareReport`: outputs compared byte for byte with the pip
TFLite Micro interpreter on the same inputs, accuracy, and, on Cortex-M, flash, RAM, stack and instructions per
inference from the device build, and, on Cortex-M4 only, cycles per inference (estimate: `cycles`, the Cortex-M4
timing table applied to a traced inference) with milliseconds at the board's clock.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import time
from pathlib import Path

import numpy as np

from keras_expander.firmware import cycles, device, project
from keras_expander.firmware.toolchain import CORES, FirmwareError, find_toolchain
from keras_expander.predictions import flatbuffer_reading
from keras_expander.runtime import TFLiteModel, dequantize, quantize, working_tflm_arena


@dataclasses.dataclass(frozen=True)
class Board:
    """A board's memory budget for the fits verdict, and its clock for milliseconds.

    Attributes:
        name: Profile name.
        flash_kib, ram_kib: On-chip flash and RAM, KiB.
        description: The part, for reports.
        clock_mhz: Core clock of the profile, MHz (the part's maximum).
        flash_wait_states: Flash wait states at that clock, cycles per non-sequential fetch as `cycles` charges
            them (every taken branch, as if it missed the flash cache: a bound), from the part's reference manual.
        core: The part's Cortex-M core, the `--target` it is checked with, e.g. "cortex-m4".
    """

    name: str
    flash_kib: float
    ram_kib: float
    description: str
    clock_mhz: float
    flash_wait_states: int
    core: str


# Wait states: STM32F407 RM0090 (150-168 MHz at 2.7-3.6 V: 5), STM32F411 RM0383 (90-100 MHz at 2.7-3.6 V: 3),
# STM32L476 RM0351 (range 1, 64-80 MHz: 4), STM32F746 RM0385 (210-216 MHz at 2.7-3.6 V: 7), STM32H743 RM0433
# (VOS0, 480 MHz core, 240 MHz flash clock: 4), STM32U585 RM0456 (range 1, 128-160 MHz: 4), each with ST's ART
# accelerator or a flash cache hiding most of them in loops; Nordic's nRF52840 and nRF5340 specifications give no
# wait-state count for their flash (both have an instruction cache): 0 assumed; the Alif E3 profiles run code
# from the core's ITCM, the MPS2+/MPS3 boards from zero-wait-state SSRAM or ITCM: 0. Alif E3 RAM: the core's DTCM
# (Alif's "RAM regions" white paper: HE 256 KiB, HP 1 MiB), code from its 5.5 MB MRAM. Only the Cortex-M4 profiles'
# clocks and wait states enter a cycle estimate (`cycles` models the Cortex-M4 alone).
BOARDS = {board.name: board for board in (
    Board("nrf52840", 1024, 256, "Nordic nRF52840, Cortex-M4F 64 MHz", 64, 0, "cortex-m4"),
    Board("stm32f407", 1024, 192, "ST STM32F407, Cortex-M4F 168 MHz (128 KiB SRAM + 64 KiB CCM)", 168, 5,
          "cortex-m4"),
    Board("stm32f411", 512, 128, "ST STM32F411, Cortex-M4F 100 MHz", 100, 3, "cortex-m4"),
    Board("stm32l476", 1024, 128, "ST STM32L476, Cortex-M4F 80 MHz (96 + 32 KiB SRAM)", 80, 4, "cortex-m4"),
    Board("mps2-an386", 4096, 4096, "Arm MPS2+ AN386, Cortex-M4 25 MHz (the board QEMU emulates)", 25, 0,
          "cortex-m4"),
    Board("stm32f746", 1024, 320, "ST STM32F746, Cortex-M7 216 MHz (320 KiB SRAM with 64 KiB DTCM)", 216, 7,
          "cortex-m7"),
    Board("stm32h743", 2048, 1024, "ST STM32H743, Cortex-M7 480 MHz (864 KiB SRAM + 128 KiB DTCM + 64 KiB ITCM)",
          480, 4, "cortex-m7"),
    Board("mps2-an500", 4096, 4096, "Arm MPS2+ AN500, Cortex-M7 25 MHz (the board QEMU emulates)", 25, 0,
          "cortex-m7"),
    Board("nrf5340", 1024, 512, "Nordic nRF5340 application core, Cortex-M33 128 MHz", 128, 0, "cortex-m33"),
    Board("stm32u585", 2048, 786, "ST STM32U585, Cortex-M33 160 MHz", 160, 4, "cortex-m33"),
    Board("mps2-an505", 4096, 4096, "Arm MPS2+ AN505, Cortex-M33 20 MHz (the board QEMU emulates, Secure)", 20, 0,
          "cortex-m33"),
    Board("alif-e3-he", 5632, 256, "Alif Ensemble E3 high-efficiency core, Cortex-M55 160 MHz (256 KiB DTCM)", 160,
          0, "cortex-m55"),
    Board("alif-e3-hp", 5632, 1024, "Alif Ensemble E3 high-performance core, Cortex-M55 400 MHz (1 MiB DTCM)", 400,
          0, "cortex-m55"),
    Board("mps3-an547", 512, 512, "Arm Corstone-300 MPS3 AN547 (FVP reference), Cortex-M55 32 MHz: 512 KiB ITCM, "
          "512 KiB DTCM (the board QEMU emulates)", 32, 0, "cortex-m55"),
)}
DEFAULT_BOARD = "nrf52840"
DEFAULT_BOARDS = {"host": DEFAULT_BOARD, "cortex-m4": DEFAULT_BOARD, "cortex-m7": "stm32f746",
                  "cortex-m33": "nrf5340", "cortex-m55": "alif-e3-he"}
# The TFLM trees and the pip interpreter are built from different TFLM commits (docs/deployment.md); on
# 10,000 sequential-MNIST sequences through an int8 LSTM(128), 14 outputs differ by one int8 step, identically on
# host, Cortex-M4 reference and CMSIS-NN builds. Larger differences are failures.
TOLERANCE_INT8_STEPS = 1
TOLERANCE_FLOAT = 1e-5


def board_for(target: str, board: str | None = None) -> str:
    """The board profile a build of `target` is checked against: `board`, or the core's default.

    Args:
        target: "host" (any board; the host build has no fits verdict) or a Cortex-M core.
        board: A name of `BOARDS`, None for the core's default (`DEFAULT_BOARDS`).

    Returns:
        The board's name.

    Raises:
        ValueError: an unknown target or board, or a board of another core than `target`.
    """
    if target not in DEFAULT_BOARDS:
        raise ValueError(f"Argument `target` must be one of {tuple(DEFAULT_BOARDS)}. Received: target={target!r}")
    if board is None:
        return DEFAULT_BOARDS[target]
    if board not in BOARDS:
        raise ValueError(f"Argument `board` must be one of {sorted(BOARDS)}. Received: board={board!r}")
    core = BOARDS[board].core
    if target in CORES and core != target:
        boards = sorted(name for name, profile in BOARDS.items() if profile.core == target)
        raise ValueError(f"--board {board} is a {core} board, but --target is {target}; pass one of {boards} for "
                         f"{target}, or leave --board out for its default ({DEFAULT_BOARDS[target]}).")
    return board


def board_budget(board: str, flash_kib: float | None = None, ram_kib: float | None = None) -> Board:
    """The board profile, with `flash_kib` / `ram_kib` overriding its sizes when given.

    Raises:
        ValueError: unknown board name, or a size that is not a positive number.
    """
    if board not in BOARDS:
        raise ValueError(f"Argument `board` must be one of {sorted(BOARDS)}. Received: board={board!r}")
    chosen = BOARDS[board]
    for name, value in (("flash_kib", flash_kib), ("ram_kib", ram_kib)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"Argument `{name}` must be a positive number of KiB. Received: {name}={value!r}")
    if flash_kib is None and ram_kib is None:
        return chosen
    return dataclasses.replace(chosen, flash_kib=flash_kib or chosen.flash_kib, ram_kib=ram_kib or chosen.ram_kib,
                               name=f"{chosen.name} (custom sizes)")


@dataclasses.dataclass(frozen=True)
class FirmwareReport:
    """One firmware build of one model, run on test sequences.

    Attributes:
        target: "host" or a Cortex-M core, e.g. "cortex-m4".
        kernels: "reference" or "cmsis_nn" (TFLM kernel set of the tree built against).
        ops: The model's ops as the op resolver registers them.
        tree: TFLM source tree.
        project_dir: The generated firmware project (sources, build/, run/).
        samples: Test sequences run.
        bitexact_vs_tflm_python: Every output byte equals the pip TFLite Micro interpreter's.
        mismatched_sequences: Sequences whose output differs from it.
        max_abs_difference: Largest |firmware - interpreter| output difference, in the output tensor's units
            (integer steps for int8 outputs).
        accuracy: Accuracy in [0, 1] of the firmware's outputs, None without labels: the argmax of several outputs,
            a single output thresholded (its sigmoid (LOGISTIC) > 0.5, else its logit > 0;
            `keras_expander.predictions.flatbuffer_reading`).
        arena_bytes: Tight tensor arena (`arena_used_bytes()` after AllocateTensors), bytes; the measured run
            uses exactly this arena.
        model_flash_bytes, runtime_flash_bytes, library_flash_bytes, harness_flash_bytes, image_flash_bytes:
            Flash by origin (model array; TFLM core and kernels; C library; harness and startup) and in all,
            bytes (Cortex-M only, else None).
        data_bytes, bss_bytes: Static RAM, bytes (.bss holds the arena).
        stack_bytes: Stack high-water mark during the first Reset + Invoke, bytes.
        ram_bytes: .data + .bss + stack high-water mark, bytes.
        instructions_per_inference: Mean instructions per Invoke over all sequences but the first (QEMU
            -icount; instructions, not cycles; resolution 40 instructions per Invoke).
        instructions_first_inference: Instructions of the first Invoke (it also initialises kernel state).
        macs_per_inference, nonzero_macs_per_inference: Multiply-accumulates of one inference, dense and of
            non-zero weights only, from the plain model (`project.multiply_accumulates`).
        cycles_per_inference: Cycles (estimate) of one inference, the second test sequence's Invoke (the first's
            when only one is run) traced under QEMU and timed by `cycles` with the board's flash wait states
            (Cortex-M4 only, else None: `cycles` is a Cortex-M4 timing model). The instruction stream hardly
            depends on the data.
        cycles_first_inference: Cycles (estimate) of the first Invoke.
        cycles_per_mac, cycles_per_nonzero_mac: cycles_per_inference over the dense and non-zero MACs.
        ms_at_clock: cycles_per_inference at the board's clock, milliseconds (estimate).
        clock_mhz, flash_wait_states: The board's clock (MHz) and wait states per taken branch (cycles) used.
        cycle_estimate: The estimate's breakdown: traced sequence, instructions, taken branches, cycles at zero
            wait states, cycles and instructions by class, the functions with the most cycles (Cortex-M4 only).
        board, flash_kib, ram_kib: The budget checked.
        fits: image_flash_bytes <= flash and ram_bytes <= RAM (Cortex-M only, else None).
        build_seconds, run_seconds: Wall time of the build and of the measured run, seconds.
    """

    target: str
    kernels: str
    ops: list
    tree: str
    project_dir: str
    samples: int
    bitexact_vs_tflm_python: bool
    mismatched_sequences: int
    max_abs_difference: float
    accuracy: float | None
    arena_bytes: int
    model_flash_bytes: int | None
    runtime_flash_bytes: int | None
    library_flash_bytes: int | None
    harness_flash_bytes: int | None
    image_flash_bytes: int | None
    data_bytes: int | None
    bss_bytes: int | None
    stack_bytes: int | None
    ram_bytes: int | None
    instructions_per_inference: float | None
    instructions_first_inference: int | None
    macs_per_inference: int
    nonzero_macs_per_inference: int
    cycles_per_inference: int | None
    cycles_first_inference: int | None
    cycles_per_mac: float | None
    cycles_per_nonzero_mac: float | None
    ms_at_clock: float | None
    clock_mhz: float
    flash_wait_states: int
    cycle_estimate: dict | None
    board: str
    flash_kib: float
    ram_kib: float
    fits: bool | None
    build_seconds: float
    run_seconds: float


def device_inputs(model_content: bytes, x: np.ndarray) -> np.ndarray:
    """Test sequences as the firmware's input tensors: float x quantized with round and clip for int8 models
    (as `keras_expander.runtime` does), unchanged for float models.

    Args:
        x: float32 array of shape (N, T, F) (or the model's input dtype already).

    Returns:
        Array of shape (N, T, F) in the model's input dtype.
    """
    reference = reference_interpreter(model_content)
    x = np.asarray(x)
    if reference.input_dtype == np.float32 or x.dtype == reference.input_dtype:
        return x.astype(reference.input_dtype)
    return quantize(x, *reference.input_quantization, reference.input_dtype)


def model_input_shape(model_content: bytes) -> tuple[int, ...]:
    """The model's input shape without the batch axis, e.g. (28, 28), as the TFLite Micro interpreter reports it."""
    return tuple(int(size) for size in reference_interpreter(model_content).input_shape[1:])


@functools.lru_cache(maxsize=4)
def reference_interpreter(model_content: bytes) -> TFLiteModel:
    """The pip TFLite Micro interpreter the firmware is compared with, with an arena that runs the model
    (`keras_expander.runtime.working_tflm_arena`: 1 MiB, doubled until a probe works), so that a model with a large
    arena (e.g. a GRU unrolled over 400 steps) is compared rather than failing to allocate. Kept for the last few
    flatbuffers, as every check of one deploy asks for it.

    Raises:
        FirmwareError: no arena up to 64 MiB runs the model (an op TFLM lacks, or a model too large).
    """
    try:
        arena = working_tflm_arena(model_content)
    except RuntimeError as error:
        raise FirmwareError(f"{error} The pip TFLite Micro interpreter, the firmware's reference, cannot run "
                            f"it.") from None
    return TFLiteModel(model_content, runtime="tflm", arena_size=arena)


def tflm_python_outputs(model_content: bytes, inputs: np.ndarray) -> np.ndarray:
    """Raw outputs of the pip TFLite Micro interpreter, state reset before each sequence.

    Returns:
        uint8 array of shape (N, output bytes): each row is the output tensor's bytes.
    """
    reference = reference_interpreter(model_content)
    return np.stack([np.ascontiguousarray(reference.predict_raw(sequence)).view(np.uint8).reshape(-1)
                     for sequence in inputs])


def encoding_mismatches(plain_content: bytes, encoded_content: bytes, x: np.ndarray) -> int:
    """Sequences whose output differs, byte for byte, between a plain model and its encoded twin under the pip
    TFLite Micro interpreter (an encoding must change no output bit).

    Args:
        plain_content, encoded_content: The two flatbuffers.
        x: Test sequences, float32 array of shape (N, T, F).

    Returns:
        The number of differing sequences (0 when the encoding is exact).
    """
    inputs = device_inputs(plain_content, x)
    plain, encoded = tflm_python_outputs(plain_content, inputs), tflm_python_outputs(encoded_content, inputs)
    return int(np.sum(np.any(plain != encoded, axis=1)))


def within_tolerance(report: "FirmwareReport") -> bool:
    """Whether the firmware's outputs agree with the pip interpreter within `TOLERANCE_INT8_STEPS` (int8 outputs)
    or `TOLERANCE_FLOAT` (float outputs); `bitexact_vs_tflm_python` says whether they are identical."""
    limit = TOLERANCE_INT8_STEPS if report.max_abs_difference == int(report.max_abs_difference) else TOLERANCE_FLOAT
    return report.max_abs_difference <= limit


def check_cmsis_nn_decode(ops: list[str], kernels: str) -> None:
    """Refuses a DECODE-compressed LSTM on CMSIS-NN kernels, which cannot run it.

    Args:
        ops: The model's op names (builtin names and custom codes).
        kernels: "reference" or "cmsis_nn".

    Raises:
        FirmwareError: kernels is "cmsis_nn" and the ops hold both TFLM_DECODE and UNIDIRECTIONAL_SEQUENCE_LSTM.
    """
    if kernels == "cmsis_nn" and "TFLM_DECODE" in ops and "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops:
        raise FirmwareError(
            "CMSIS-NN's UNIDIRECTIONAL_SEQUENCE_LSTM precomputes kernel sums from constant weights in Prepare, so "
            "it cannot take the weights that TFLM_DECODE expands into the arena; build DECODE-compressed LSTMs with "
            "kernels='reference', or use the sparse kernels (keras-expander firmware --compression ke_sparse).")


def tight_arena_image(toolchain, folder: Path, registrations: dict, probe_inputs: np.ndarray,
                      granularity: int = 16) -> tuple[Path, int]:
    """Links the firmware with the smallest arena that runs the model, and returns (image, arena bytes).

    `arena_used_bytes()` after AllocateTensors leaves out the memory planner's temporary space, which TFLM needs
    during AllocateTensors, so the arena is found by bisection: probe runs of one sequence with an arena limit
    (no relink), from `arena_used_bytes()` upwards; then the image is linked with exactly that arena, and the
    measured run with that image proves it.

    Raises:
        FirmwareError: the model does not run even with the whole probe arena.
    """
    image = device.link(toolchain, folder, registrations, device.PROBE_ARENA_BYTES[toolchain.target])
    probe_dir = folder / "arena_search"

    start = time.perf_counter()
    used = device.run(toolchain, image, probe_inputs, probe_dir, timeout_s=300).values["arena_used_bytes"]
    probe_timeout_s = 30 + 5 * (time.perf_counter() - start)

    def works(size: int) -> bool:
        # The whole probe arena is known to work (the first run), so any failure below it means too small: TFLM
        # reports some shortfalls as "AllocateTensors failed" and aborts (the harness ends on TFLM's "HALTED") or
        # faults on others.
        try:
            device.run(toolchain, image, probe_inputs, probe_dir, timeout_s=probe_timeout_s, arena_limit=size)
            return True
        except FirmwareError:
            return False

    low, high = -(-int(used) // granularity) * granularity - granularity, -(-int(used) // granularity) * granularity
    while not works(high):  # low always fails (or is below what is used), high works at the end
        low, high = high, high * 2
        if high > device.PROBE_ARENA_BYTES[toolchain.target]:
            raise FirmwareError(f"The model does not run with a {device.PROBE_ARENA_BYTES[toolchain.target]}-byte "
                                f"arena on {toolchain.target}.")
    while high - low > granularity:
        middle = (low + high) // 2 // granularity * granularity
        if middle <= low:
            break
        low, high = (low, middle) if works(middle) else (middle, high)
    shutil.rmtree(probe_dir, ignore_errors=True)
    return device.link(toolchain, folder, registrations, high), high


def deploy(model_content: bytes, x: np.ndarray, y: np.ndarray | None = None, target: str = "cortex-m4",
           kernels: str = "reference", tree=None, out_dir="firmware_out", board: str | None = None,
           flash_kib: float | None = None, ram_kib: float | None = None,
           reference_content: bytes | None = None) -> FirmwareReport:
    """Builds the model into firmware, runs it on every test sequence, verifies and measures it.

    Args:
        model_content: The `.tflite` flatbuffer (batch size 1).
        x: Test sequences, float32 array of shape (N, T, F) (quantized for int8 models like `runtime` does).
        y: Labels, int array of shape (N,) (0 or 1 for a single output), for the accuracy; None to skip it.
        target: "host" or a Cortex-M core of `toolchain.CORES`, e.g. "cortex-m4".
        kernels: "reference" or "cmsis_nn".
        tree: TFLM source tree; default `toolchain.default_tree(target, kernels)`.
        out_dir: Folder for the project (sources, build/, run/); replaced if it exists.
        board: Board profile for the fits verdict (`BOARDS`), of the target's core; None for the core's default
            (`DEFAULT_BOARDS`).
        flash_kib, ram_kib: Override the board's sizes, KiB.
        reference_content: The flatbuffer whose pip TFLite Micro outputs the firmware must equal; default
            `model_content`. Pass the plain model when `model_content` uses keras_expander's sparse custom ops,
            which the pip interpreter does not have.

    Returns:
        A `FirmwareReport`.

    Raises:
        ValueError: bad target, kernels, board (or a board of another core) or sizes; empty `x`; labels of another
            length, or labels or an output the accuracy cannot read (`keras_expander.predictions.flatbuffer_reading`).
        FirmwareError: missing tool or tree, an op TFLM lacks, a build or run failure.
    """
    budget = board_budget(board_for(target, board), flash_kib, ram_kib)
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"Argument `x` must hold at least one sequence of shape (N, T, F). Received shape "
                         f"{x.shape}.")
    if y is not None and len(y) != len(x):
        raise ValueError(f"Arguments `x` and `y` must have the same length. Received {len(x)} and {len(y)}.")
    reference_content = reference_content or model_content
    if y is not None:  # how outputs become labels (a single sigmoid or logit output is thresholded), checked first
        width = int(np.prod(reference_interpreter(reference_content).output_details["shape"][1:]))
        reading = flatbuffer_reading(project.output_op(reference_content), width, y)
        reading.labels(y)
    toolchain = find_toolchain(target, kernels, tree)
    folder = Path(out_dir).resolve()  # the harness runs in folder/run: every path it gets must be absolute
    if folder.exists():
        shutil.rmtree(folder)
    start = time.perf_counter()
    registrations = project.write_project(model_content, folder, toolchain.tree)
    check_cmsis_nn_decode(list(registrations), kernels)
    if toolchain.core:
        project.write_linker_script(toolchain.tree, folder, toolchain.core.code_bytes, toolchain.core.ram_bytes,
                                    device.STACK_BYTES, device.HEAP_BYTES, target)
    inputs = device_inputs(reference_content, x)
    expected = tflm_python_outputs(reference_content, inputs)
    image, arena = tight_arena_image(toolchain, folder, registrations, inputs[:1])
    build_seconds = time.perf_counter() - start
    start = time.perf_counter()
    per_sequence_s = 0.25 if toolchain.core else 0.02
    result = device.run(toolchain, image, inputs, folder / "run", timeout_s=120 + per_sequence_s * len(inputs))
    run_seconds = time.perf_counter() - start
    mismatched = int(np.sum(np.any(result.outputs != expected, axis=1)))
    reference = reference_interpreter(reference_content)
    dtype = np.dtype(reference.output_details["dtype"])
    logits = result.outputs.view(dtype)
    difference = float(np.max(np.abs(logits.astype(np.float64) - expected.view(dtype).astype(np.float64))))
    quantization = reference.output_quantization
    outputs = logits if quantization is None else dequantize(logits, *quantization)
    accuracy = None if y is None else reading.accuracy(outputs, y)
    sizes = stack = instructions = first = ram = fits = None
    if toolchain.core:
        sizes = device.image_sizes(folder / "build" / "app.map")
        stack = int(result.values["stack_bytes"])
        ram = sizes.data_bytes + sizes.bss_bytes + stack
        count = int(result.values["inferences"])
        first = int(result.values["instructions_first"])
        total = int(result.values["instructions_total"])
        instructions = (total - first) / (count - 1) if count > 1 else float(first)
        fits = sizes.image_flash_bytes <= budget.flash_kib * 1024 and ram <= budget.ram_kib * 1024
    macs, nonzero_macs = project.multiply_accumulates(reference_content)
    estimated = None
    if target == "cortex-m4":  # the cycle model is the Cortex-M4's; other cores report None (format_reports: why)
        estimated = cycle_estimate(toolchain, image, inputs[:2], folder / "trace", budget, macs, nonzero_macs,
                                   timeout_s=300 + 200 * run_seconds / len(inputs))
    size_fields = dataclasses.asdict(sizes) if sizes else dict.fromkeys(
        ("model_flash_bytes", "runtime_flash_bytes", "library_flash_bytes", "harness_flash_bytes",
         "image_flash_bytes", "data_bytes", "bss_bytes"))
    return FirmwareReport(
        target=target, kernels=kernels, ops=sorted(registrations), tree=str(toolchain.tree),
        project_dir=str(folder), samples=len(inputs), bitexact_vs_tflm_python=mismatched == 0,
        mismatched_sequences=mismatched, max_abs_difference=difference, accuracy=accuracy, arena_bytes=arena,
        **size_fields, stack_bytes=stack,
        ram_bytes=ram, instructions_per_inference=instructions, instructions_first_inference=first,
        macs_per_inference=macs, nonzero_macs_per_inference=nonzero_macs,
        **(estimated or dict.fromkeys(("cycles_per_inference", "cycles_first_inference", "cycles_per_mac",
                                       "cycles_per_nonzero_mac", "ms_at_clock", "cycle_estimate"))),
        clock_mhz=budget.clock_mhz, flash_wait_states=budget.flash_wait_states, board=budget.name,
        flash_kib=budget.flash_kib, ram_kib=budget.ram_kib, fits=fits,
        build_seconds=build_seconds, run_seconds=run_seconds)


def cycle_estimate(toolchain, image: Path, inputs: np.ndarray, workdir: Path, budget: Board, macs: int,
                   nonzero_macs: int, timeout_s: float) -> dict:
    """The cycle fields of a `FirmwareReport`: `inputs` (one or two sequences) traced, the last one's Invoke
    estimated with the board's flash wait states (`cycles.estimate_inferences`).

    Returns:
        cycles_per_inference, cycles_first_inference, cycles_per_mac, cycles_per_nonzero_mac, ms_at_clock and
        cycle_estimate, as `FirmwareReport` documents them.

    Raises:
        FirmwareError: the traced run failed.
    """
    estimates, _ = cycles.estimate_inferences(toolchain, image, inputs, workdir, timeout_s,
                                              wait_states=budget.flash_wait_states)
    shutil.rmtree(workdir, ignore_errors=True)
    last = estimates[-1]
    return dict(
        cycles_per_inference=last.cycles, cycles_first_inference=estimates[0].cycles,
        cycles_per_mac=last.cycles / macs if macs else None,
        cycles_per_nonzero_mac=last.cycles / nonzero_macs if nonzero_macs else None,
        ms_at_clock=last.cycles / (budget.clock_mhz * 1e3),
        cycle_estimate={"traced_sequence": len(estimates), "instructions": last.instructions,
                        "taken_branches": last.taken_branches,
                        "cycles_zero_wait_states": last.cycles - last.cycles_by_class["flash_wait_states"],
                        "cycles_by_class": last.cycles_by_class, "instructions_by_class": last.instructions_by_class,
                        "top_functions": last.top_functions(8),
                        "model": "Cortex-M4 TRM timing table (keras_expander.firmware.cycles)"})


def format_reports(reports: list[FirmwareReport]) -> list[str]:
    """Lines of a table of firmware reports, with units."""
    header = ("build", "outputs vs TFLM Python", "accuracy (%)", "model flash (B)", "image flash (B)",
              "arena (B)", "stack (B)", "RAM (B)", "instructions/inference", "cycles/inference (est.)",
              "cycles/MAC (est.)", "ms (est.)", "image and RAM fit")
    rows = [header]
    for r in reports:
        ours = (" + KE sparse" if any(op.startswith("KE_SPARSE") for op in r.ops) else
                " + KE fused" if any(op.startswith("KE_") for op in r.ops) else "")
        name = f"{r.target} {r.kernels}{ours}"
        show = lambda value: "-" if value is None else f"{value:,}"  # noqa: E731
        agreement = (f"identical ({r.samples} seq.)" if r.bitexact_vs_tflm_python else
                     f"{r.mismatched_sequences} of {r.samples} differ, max {r.max_abs_difference:g}")
        rows.append((name, agreement,
                     "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}", show(r.model_flash_bytes),
                     show(r.image_flash_bytes), f"{r.arena_bytes:,}", show(r.stack_bytes), show(r.ram_bytes),
                     "-" if r.instructions_per_inference is None else f"{r.instructions_per_inference:,.0f}",
                     show(r.cycles_per_inference), "-" if r.cycles_per_mac is None else f"{r.cycles_per_mac:.2f}",
                     "-" if r.ms_at_clock is None else f"{r.ms_at_clock:,.1f} @ {r.clock_mhz:g} MHz",
                     "-" if r.fits is None else f"{'yes' if r.fits else 'NO'} ({r.board}: {r.flash_kib:g} KiB "
                                                f"flash, {r.ram_kib:g} KiB RAM)"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    emulated = [CORES[target] for target in dict.fromkeys(r.target for r in reports) if target in CORES]
    boards = ", ".join(f"{core.title} ({core.qemu_machine})" for core in emulated or [CORES["cortex-m4"]])
    lines.append(f"instructions: counted by QEMU -icount on the emulated {boards}, not cycles; RAM = "
                 f".data + .bss (with the tight arena) + stack high-water mark.")
    timed = [r for r in reports if r.cycles_per_inference is not None]
    if timed:
        r = timed[0]
        lines.append(f"cycles (est.): an estimate, not a measurement: the Cortex-M4 TRM's instruction timings applied "
                     f"to the instructions QEMU executed for test sequence {r.cycle_estimate['traced_sequence']} "
                     f"(keras_expander.firmware.cycles), {r.flash_wait_states} flash wait state(s) per taken branch; "
                     f"MACs of the dense model; ms at the {r.board} profile's {r.clock_mhz:g} MHz clock.")
    untimed = [core.title for core in emulated if core.target != "cortex-m4"]
    if untimed:
        lines.append(f"cycles (est.): not estimated on {', '.join(untimed)}: keras_expander.firmware.cycles is a "
                     f"Cortex-M4 timing model (these cores pipeline, dual-issue or, with Helium, beat instructions "
                     f"differently); compare them by instructions only with care.")
    if not all(r.bitexact_vs_tflm_python for r in reports):
        lines.append(f"outputs: the TFLM trees and the pip interpreter are different TFLM commits; differences up to "
                     f"{TOLERANCE_INT8_STEPS} int8 step are within tolerance, larger ones fail.")
    return lines
