"""Link a firmware project, run it (host executable or Cortex-M under QEMU), and measure the image.

QEMU runs each core on its board (`toolchain.CORES`: the Cortex-M4 on mps2-an386, 4 MiB code memory and 4 MiB
RAM; the M7 on mps2-an500, the M33 on mps2-an505, the M55 on mps3-an547) with `-icount shift=0`, so one
instruction takes one virtual nanosecond and the harness counts instructions with SysTick (40 instructions per
tick at the 25 MHz of the mps2 boards). Instruction counts are not cycle counts: QEMU does not model the pipeline
or memory wait states. Flash and RAM come from the linker map of the Cortex-M image.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

import numpy as np

from keras_expander.files import die_with_parent
from keras_expander.firmware.ops import KERNELS_DIR, CustomOp
from keras_expander.firmware.toolchain import (CORES, FirmwareError, Toolchain, compile_objects, core_archive,
                                               kernel_sources, startup_sources)

QEMU_FLASH_BYTES = CORES["cortex-m4"].code_bytes  # mps2-an386: 4 MiB at 0x00000000
QEMU_RAM_BYTES = CORES["cortex-m4"].ram_bytes  # and 4 MiB at 0x20000000
STACK_BYTES = 64 << 10  # reserved; the harness measures the high-water mark
HEAP_BYTES = 64 << 10  # newlib's stdio buffers (harness only)
# The arena of the first (probe) link: 3 MiB where the board has 4 MiB of RAM, what is left after stack, heap and
# an eighth for TFLM's static data on the M55's 512 KiB DTCM (320 KiB).
PROBE_ARENA_BYTES = {"host": 16 << 20, **{target: min(3 << 20, core.ram_bytes - STACK_BYTES - HEAP_BYTES -
                                                      core.ram_bytes // 8) for target, core in CORES.items()}}


def run_command(command: list[str], timeout_s: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs a command that dies with its parent; a time-out is a `FirmwareError` naming the command."""
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
                              preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired as error:
        raise FirmwareError(f"{Path(command[0]).name} did not finish within {timeout_s:.0f} s.") from error


def link(toolchain: Toolchain, project: Path, registrations: dict, arena_bytes: int) -> Path:
    """Compiles the project's harness and model, the kernels it registers, and links them with the cached core.

    Args:
        toolchain: Target compilers and TFLM tree.
        project: Folder from `write_project` (and `link.ld` for Cortex-M).
        registrations: From `write_project`.
        arena_bytes: Size of the harness's static tensor arena (`KE_ARENA_BYTES`), bytes.

    Returns:
        The executable (host) or ELF image (Cortex-M); a linker map `app.map` is written beside it.

    Raises:
        FirmwareError: a compile or link failure, with the tool's last lines.
    """
    build = project / "build"
    functions = sorted({f for r in registrations.values() if not isinstance(r, CustomOp) for f in r.functions})
    # Our kernels compile from the package (the project holds identical copies) and the harness from the
    # project, both cached by content (the harness's object is shared by every model with the same op
    # resolver); model_data.cc once per project; arena.cc, which holds the arena size, at every link.
    ours = sorted({KERNELS_DIR / source for r in registrations.values() if isinstance(r, CustomOp)
                   for source in r.sources})
    kernels = compile_objects(toolchain, kernel_sources(toolchain, functions, ours), by_content=True)
    # The harness turns SysTick ticks into instructions with the board's SysTick clock.
    clock = (f"-DKE_SYSTICK_HZ={toolchain.core.systick_hz}",) if toolchain.core else ()
    harness = compile_objects(toolchain, [project / "main.cc"], by_content=True, extra_flags=clock)
    harness += compile_objects(toolchain, [project / "model_data.cc", *startup_sources(toolchain)], build)
    harness += compile_objects(toolchain, [project / "arena.cc"], build, force=True,
                               extra_flags=(f"-DKE_ARENA_BYTES={int(arena_bytes)}",))
    core = core_archive(toolchain)
    image = build / ("app.elf" if toolchain.core else "app")
    command = link_command(toolchain, [*harness, *kernels, core], image, project / "link.ld",
                           extra_flags=(f"-Wl,-Map={build / 'app.map'}",))
    result = run_command(command, timeout_s=300)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-12:])
        raise FirmwareError(f"Linking the {toolchain.target} firmware failed:\n{tail}")
    return image


def link_command(toolchain: Toolchain, inputs: list[Path], image: Path, linker_script: Path | None = None,
                 extra_flags: tuple[str, ...] = ()) -> list[str]:
    """The compiler command that links objects and archives into an executable (host) or a Cortex-M ELF image.

    Args:
        toolchain: Target compilers.
        inputs: Objects and archives, in link order.
        image: Output path; the command ends with "-o", image.
        linker_script: The board's `link.ld` (Cortex-M only).
        extra_flags: More linker flags (e.g. a map file).

    Returns:
        The argument list.
    """
    command = [toolchain.cxx, *map(str, inputs), "-Wl,--gc-sections", *extra_flags]
    if toolchain.core:
        command[1:1] = [flag for flag in toolchain.flags if flag.startswith("-m")]
        # -nostartfiles: the objects include `startup_sources` (our _start).
        command += [f"-T{linker_script}", "--specs=nano.specs", "--specs=rdimon.specs", "-nostartfiles"]
    return command + ["-lm", "-o", str(image)]


def qemu_command(toolchain: Toolchain, image: Path, count_instructions: bool = True) -> list[str]:
    """The QEMU command that runs a Cortex-M image on its core's board (`CortexCore.qemu_machine`, e.g. mps2-an386
    for the Cortex-M4) with semihosting (stdout, files, exit status).

    Args:
        toolchain: Gives `qemu-system-arm` and the core.
        image: The ELF image.
        count_instructions: Add `-icount shift=0` (one instruction per virtual nanosecond), which the harness's
            instruction counts need.

    Returns:
        The argument list.
    """
    command = [toolchain.qemu, "-M", toolchain.core.qemu_machine, "-cpu", toolchain.target, "-nographic",
               "-monitor", "none", "-serial", "none", "-semihosting-config", "enable=on,target=native"]
    return command + (["-icount", "shift=0"] if count_instructions else []) + ["-kernel", str(image)]


def write_inputs(path: Path, inputs: np.ndarray, arena_limit: int = 0) -> None:
    """Writes inputs.bin for the harness: b"KEIN", uint32 count, uint32 bytes per input, uint32 arena limit,
    then the raw tensors.

    Args:
        inputs: Array of shape (N, ...) in the model's input dtype (already quantized for int8 models).
        arena_limit: Bytes of the static arena the interpreter may use (0: all of it).
    """
    inputs = np.ascontiguousarray(inputs)
    header = b"KEIN" + np.array([len(inputs), inputs[0].nbytes if len(inputs) else 0, arena_limit],
                                "<u4").tobytes()
    with open(path, "wb") as stream:
        stream.write(header)
        stream.write(inputs.tobytes())


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one harness run printed and wrote.

    Attributes:
        outputs: Raw output tensors, array of shape (N, output bytes) as uint8 (reinterpret with the dtype).
        values: The harness's "KE key value" lines, e.g. {"arena_used_bytes": 7476, "instructions_total": ...}.
        log: Its whole stdout (TFLM's messages included).
    """

    outputs: np.ndarray
    values: dict
    log: str


def run(toolchain: Toolchain, image: Path, inputs: np.ndarray, workdir: Path, timeout_s: float,
        arena_limit: int = 0) -> RunResult:
    """Runs the image on `inputs` (host: directly; Cortex-M: under QEMU with -icount shift=0).

    Args:
        toolchain: Gives the target and QEMU.
        image: From `link`.
        inputs: (N, ...) raw input tensors in the model's input dtype.
        workdir: Folder for inputs.bin / outputs.bin (the harness opens them relative to its working folder).
        timeout_s: Wall-clock limit, seconds.
        arena_limit: Bytes of the static arena the interpreter may use (0: all of it).

    Returns:
        A `RunResult`.

    Raises:
        FirmwareError: the harness failed (with TFLM's messages) or did not finish in time.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    write_inputs(workdir / "inputs.bin", inputs, arena_limit)
    ensure_deleted(workdir / "outputs.bin")
    if toolchain.core:
        command = qemu_command(toolchain, image)
    else:
        command = [str(image)]
    result = run_command(command, timeout_s, cwd=workdir)
    log = result.stdout + result.stderr
    values = harness_values(log)
    if result.returncode != 0 or "done" not in re.findall(r"^KE (\w+)", log, re.M):
        errors = "\n".join(line for line in log.splitlines()[-15:])
        raise FirmwareError(f"The {toolchain.target} firmware failed (exit status {result.returncode}):\n{errors}")
    raw = np.fromfile(workdir / "outputs.bin", np.uint8)
    return RunResult(outputs=raw.reshape(len(inputs), -1), values=values, log=log)


def harness_values(log: str) -> dict:
    """The harness's "KE key value" lines of a run's output, e.g. {"instructions_first": 1234840, ...}."""
    return {key: float(value) if "." in value else int(value)
            for key, value in re.findall(r"^KE (\w+) ([-0-9.]+)\s*$", log, re.M)}


@dataclasses.dataclass(frozen=True)
class ImageSizes:
    """Flash and static RAM of a Cortex-M image, from its linker map.

    Attributes:
        model_flash_bytes: The flatbuffer array.
        runtime_flash_bytes: TFLM core and kernels (and CMSIS-NN, and our kernels), code and constants.
        library_flash_bytes: C/C++ runtime (newlib-nano printf, libm, semihosting, libgcc).
        harness_flash_bytes: Harness, startup and vector table.
        image_flash_bytes: Everything that goes into flash: code, constants, .data load image.
        data_bytes, bss_bytes: Static RAM (.bss includes the tensor arena).
    """

    model_flash_bytes: int
    runtime_flash_bytes: int
    library_flash_bytes: int
    harness_flash_bytes: int
    image_flash_bytes: int
    data_bytes: int
    bss_bytes: int


_FLASH_SECTIONS = (".text", ".ARM.extab", ".ARM.exidx", ".copy.table", ".zero.table", ".data")
_LIBRARIES = re.compile(r"(libc_nano|libc|libm|libg_nano|librdimon|libgcc|libstdc\+\+|libsupc\+\+|crt\w*\.o)")


def _origin_category(origin: str) -> str:
    if "model_data.o" in origin:
        return "model"
    if _LIBRARIES.search(Path(origin).name) or "/arm-none-eabi/" in origin:
        return "library"
    if any(name in origin for name in ("main.o", "arena.o", "startup_ARMCM", "system_ARMCM")):
        return "harness"
    return "runtime"


def image_sizes(map_path: Path) -> ImageSizes:
    """Splits the image by origin from a GNU ld map file.

    Flash = the flash output sections (.text with constants, exception tables, copy/zero tables) plus the .data
    load image; RAM = .data + .bss (the arena is in .bss). The map lists merged string sections with their sizes
    before merging, at overlapping addresses (even past the section's end), so entries are clipped to their
    output section and each address is counted once, for the first input section that covers it; alignment fill
    belongs to no origin.
    """
    totals, entries = {}, []
    output_section, section_start = None, 0
    text = map_path.read_text()
    for line in text[text.index("Linker script and memory map"):].splitlines():
        header = re.match(r"^(\.[\w.]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)", line)
        if header:
            output_section = header.group(1)
            section_start, totals[output_section] = int(header.group(2), 16), int(header.group(3), 16)
            continue
        if re.match(r"^\.[\w.]+\s*$", line):  # a long output-section name, address on the next line
            output_section = line.strip()
            continue
        entry = re.match(r"^ (?:[\w.$]+)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)$", line)
        if entry and output_section in _FLASH_SECTIONS:
            start = int(entry.group(1), 16)
            end = min(start + int(entry.group(2), 16), section_start + totals[output_section])
            offset = (1 << 40) * _FLASH_SECTIONS.index(output_section)  # keep .data (RAM addresses) apart
            entries.append((start + offset, max(0, end - start), _origin_category(entry.group(3))))
    sizes = dict.fromkeys(("model", "runtime", "library", "harness"), 0)
    covered = 0
    for address, size, category in sorted(entries):
        sizes[category] += max(0, address + size - max(address, covered))
        covered = max(covered, address + size)
    flash = sum(totals.get(section, 0) for section in _FLASH_SECTIONS)
    return ImageSizes(model_flash_bytes=sizes["model"], runtime_flash_bytes=sizes["runtime"],
                      library_flash_bytes=sizes["library"], harness_flash_bytes=sizes["harness"],
                      image_flash_bytes=flash, data_bytes=totals.get(".data", 0), bss_bytes=totals.get(".bss", 0))


def ensure_deleted(path: Path) -> None:
    """Removes a file if present (a stale outputs.bin must never pass for a new run's)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
