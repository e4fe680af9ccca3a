"""Compilers, TFLite Micro source trees, and compiling only what a model needs.

A TFLM tree made by TFLM's `create_tflm_tree.py` has no build system. We compile its core (interpreter, allocator,
schema, quantization helpers) once per (tree, target, compiler, flags) into a cached static archive, and per
firmware only the kernels that the model's op resolver registers, found from TFLM's own
`micro_mutable_op_resolver.h` (which `Add...` method registers an op, and with which `Register_...` function) and
the `#include` closure of the file that defines that function. Flags are TFLM's own (its
`tensorflow/lite/micro/tools/make/Makefile`: CORE_OPTIMIZATION_LEVEL and KERNEL_OPTIMIZATION_LEVEL):
core at -Os, kernels at -O2.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

KERNEL_SETS = ("reference", "cmsis_nn")
APT_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm"
_SHARED_TFLM = Path(__file__).resolve().parents[3] / "shared" / "tflm"
SEMIHOSTING_START = Path(__file__).parent / "harness" / "semihosting_start.cc"


@dataclasses.dataclass(frozen=True)
class CortexCore:
    """How one Cortex-M core is compiled for and emulated under QEMU.

    Attributes:
        target: The `--target` name, e.g. "cortex-m7"; also QEMU's `-cpu`.
        cpu_flags: GCC's -mcpu, -mfpu and -mfloat-abi for the core.
        device: CMSIS device (Cortex_DFP folder, header, startup and linker template), e.g. "ARMCM7".
        device_defines: -D flags the device header needs besides the device's name (ARMCM4_FP for the M4F).
        qemu_machine: The QEMU 7.2 board, e.g. "mps2-an500".
        code_origin, code_bytes: Where that board runs code from (the vector table sits there), and its size, bytes.
        ram_origin, ram_bytes: Its RAM for data, heap and stack, and its size, bytes.
        systick_hz: The board's processor clock, which SysTick counts, Hz (one instruction is 1 ns under
            `-icount shift=0`).
    """

    target: str
    cpu_flags: tuple[str, ...]
    device: str
    device_defines: tuple[str, ...]
    qemu_machine: str
    code_origin: int
    code_bytes: int
    ram_origin: int
    ram_bytes: int
    systick_hz: int

    @property
    def title(self) -> str:
        """The core's name for reports, e.g. "Cortex-M33"."""
        return "Cortex-" + self.target.split("-")[1].upper()

    @property
    def device_header(self) -> str:
        """The CMSIS device header, e.g. "ARMCM4.h" (TFLM's Cortex-M port includes it through a macro)."""
        return f"{self.device}.h"


# The QEMU boards' memories: mps2-an386 and mps2-an500, 4 MiB SSRAM at 0x0 and 4 MiB at 0x20000000 (25 MHz);
# mps2-an505 boots Secure, so the Secure aliases of its 4 MiB SSRAM (0x10000000) and of its 2 x 2 MiB SSRAM
# (0x38000000) (20 MHz); mps3-an547 boots from its 512 KiB ITCM at 0x0 and keeps data in its 512 KiB DTCM (32 MHz).
# SysTick frequencies measured under -icount shift=0 (a 2,000,000-instruction loop: 50,000 / 40,000 / 64,000 ticks).
CORES = {core.target: core for core in (
    CortexCore("cortex-m4", ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"), "ARMCM4", ("-DARMCM4_FP",),
               "mps2-an386", 0x00000000, 4 << 20, 0x20000000, 4 << 20, 25_000_000),
    CortexCore("cortex-m7", ("-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard"), "ARMCM7", (),
               "mps2-an500", 0x00000000, 4 << 20, 0x20000000, 4 << 20, 25_000_000),
    CortexCore("cortex-m33", ("-mcpu=cortex-m33", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"), "ARMCM33", (),
               "mps2-an505", 0x10000000, 4 << 20, 0x38000000, 4 << 20, 20_000_000),
    CortexCore("cortex-m55", ("-mcpu=cortex-m55", "-mfloat-abi=hard"), "ARMCM55", (),
               "mps3-an547", 0x00000000, 512 << 10, 0x20000000, 512 << 10, 32_000_000),
)}
TARGETS = ("host", *CORES)
# Default tree folder names under $KERAS_EXPANDER_TFLM (docs/deployment.md says how each tree is made). The trees
# made for the Cortex-M4 serve every Cortex-M core: TFLM's cortex_m_generic sources and CMSIS-NN are the same for
# all (CMSIS-NN picks its DSP or MVE code from the compiler's feature macros), and they hold each core's CMSIS
# device files; the core comes from the flags.
TREE_NAMES = {("host", "reference"): "host",
              **{(target, "reference"): "cortex_m4" for target in CORES},
              **{(target, "cmsis_nn"): "cortex_m4_cmsis_nn" for target in CORES}}

_COMMON_FLAGS = ["-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics", "-fno-unwind-tables",
                 "-DTF_LITE_STATIC_MEMORY", "-ffunction-sections", "-fdata-sections", "-Wno-psabi"]
_HOST_FLAGS = ["-DTF_LITE_USE_CTIME", "-DTF_LITE_DISABLE_X86_NEON"]
_CMSIS_NN_FLAGS = ["-DCMSIS_NN", "-DARM_NN_ENABLE_F16=0", "-DARM_NN_ENABLE_F32=0"]
# TFLM sources that are tests or test doubles, never part of firmware.
_NOT_FIRMWARE = re.compile(r"(_test\.cc$|test_helper|mock_micro_graph|fake_micro_context|recording_micro|"
                           r"kernel_runner|/testing/|/benchmarks/|/examples/)")


class FirmwareError(RuntimeError):
    """A firmware step failed: missing tool or tree, unsupported op, build, run or verification failure."""


@dataclasses.dataclass(frozen=True)
class Toolchain:
    """The tools and flags for one (target, kernel set).

    Attributes:
        target: "host" or a Cortex-M core of `CORES`, e.g. "cortex-m4".
        kernels: "reference" or "cmsis_nn".
        tree: The TFLM source tree (absolute path).
        cxx, cc, ar, size: Compiler and binutils commands.
        qemu: `qemu-system-arm` for Cortex-M, else None.
    """

    target: str
    kernels: str
    tree: Path
    cxx: str
    cc: str
    ar: str
    size: str | None
    qemu: str | None

    @property
    def core(self) -> CortexCore | None:
        """The Cortex-M core of `CORES`, None for the host."""
        return CORES.get(self.target)

    @property
    def include_flags(self) -> list[str]:
        """-I flags: the tree root and its third-party folders (CMSIS for Cortex-M, CMSIS-NN when used)."""
        folders = ["", "third_party/gemmlowp", "third_party/flatbuffers/include", "third_party/kissfft",
                   "third_party/ruy"]
        if self.core:
            folders += ["third_party/cmsis/CMSIS/Core/Include",
                        f"third_party/cmsis/Cortex_DFP/Device/{self.core.device}/Include"]
        if self.kernels == "cmsis_nn":
            folders += ["third_party/cmsis", "third_party/cmsis_nn", "third_party/cmsis_nn/Include"]
        return [f"-I{self.tree / folder}" for folder in folders]

    @property
    def flags(self) -> list[str]:
        """Compile flags without optimisation level; the tree path is mapped to "." so images reproduce."""
        flags = [*_COMMON_FLAGS, f"-ffile-prefix-map={self.tree}=."]
        if self.core:
            device = self.core.device
            flags += [*self.core.cpu_flags, "-mthumb", "-DTF_LITE_MCU_DEBUG_LOG", f"-D{device}",
                      *self.core.device_defines,
                      f'-DCMSIS_DEVICE_ARM_CORTEX_M_XX_HEADER_FILE="{self.core.device_header}"',
                      "-DKE_CORTEX_M"]
        else:
            flags += _HOST_FLAGS
        if self.kernels == "cmsis_nn":
            flags += _CMSIS_NN_FLAGS
        return flags + self.include_flags

    @property
    def c_flags(self) -> list[str]:
        """Flags for C sources (CMSIS-NN, CMSIS startup): the C++-only flags dropped."""
        cxx_only = {"-std=c++17", "-fno-rtti", "-fno-threadsafe-statics"}
        return ["-std=c11", *(flag for flag in self.flags if flag not in cxx_only)]


def default_tree(target: str, kernels: str) -> Path | None:
    """The default TFLM tree for (target, kernels): `$KERAS_EXPANDER_TFLM/<name>`, else `<name>` in the project's
    shared TFLM folder beside the checkout (`_SHARED_TFLM`); None when neither exists. Names (`TREE_NAMES`): host,
    cortex_m4, cortex_m4_cmsis_nn (the last two for every Cortex-M core)."""
    name = TREE_NAMES[(target, kernels)]
    for parent in (os.environ.get("KERAS_EXPANDER_TFLM"), _SHARED_TFLM):
        if parent and (Path(parent) / name).is_dir():
            return (Path(parent) / name).resolve()
    return None


def check_target(target: str, kernels: str) -> None:
    """Refuses unknown targets and kernel sets, and CMSIS-NN on the host.

    Raises:
        ValueError: the argument, the value received and the accepted values.
    """
    if target not in TARGETS:
        raise ValueError(f"Argument `target` must be one of {TARGETS}. Received: target={target!r}")
    if kernels not in KERNEL_SETS:
        raise ValueError(f"Argument `kernels` must be one of {KERNEL_SETS}. Received: kernels={kernels!r}")
    if (target, kernels) not in TREE_NAMES:
        raise ValueError(f"kernels={kernels!r} runs on Cortex-M only; use a Cortex-M target "
                         f"({', '.join(CORES)}) or kernels='reference'. Received: target={target!r}")


def find_toolchain(target: str, kernels: str = "reference", tree: str | os.PathLike | None = None) -> Toolchain:
    """Finds the compilers, QEMU and the TFLM tree for a target, or says what to install or pass.

    Args:
        target: "host" (g++) or a Cortex-M core of `CORES` (arm-none-eabi-gcc, run under qemu-system-arm).
        kernels: "reference" or "cmsis_nn" (Cortex-M only).
        tree: TFLM source tree made by `create_tflm_tree.py`; default `default_tree(target, kernels)`.

    Returns:
        A `Toolchain`.

    Raises:
        ValueError: unknown target or kernel set.
        FirmwareError: a missing tool (naming the Debian packages to install) or tree (naming how to get one).
    """
    check_target(target, kernels)
    if target == "host":
        tools = {"cxx": "g++", "cc": "gcc", "ar": "ar"}
        size = qemu = None
        install = "g++ (apt-get install g++)"
    else:
        tools = {"cxx": "arm-none-eabi-g++", "cc": "arm-none-eabi-gcc", "ar": "arm-none-eabi-ar",
                 "size": "arm-none-eabi-size", "qemu": "qemu-system-arm"}
        install = f"the Arm toolchain and QEMU: as root, `apt-get install {APT_PACKAGES}`"
    found = {}
    for role, command in tools.items():
        path = shutil.which(command)
        if path is None:
            raise FirmwareError(f"{command} not found on PATH; the {target} firmware build needs {install}.")
        found[role] = path
    size, qemu = found.pop("size", None), found.pop("qemu", None)
    chosen = Path(tree).resolve() if tree else default_tree(target, kernels)
    name = TREE_NAMES[(target, kernels)]
    if chosen is None:
        raise FirmwareError(
            f"No TFLite Micro source tree for target={target!r}, kernels={kernels!r}: pass --tflm-tree, or set "
            f"KERAS_EXPANDER_TFLM to a folder holding '{name}/' (README: 'TFLite Micro source trees').")
    if not (chosen / "tensorflow/lite/micro/micro_interpreter.h").is_file():
        raise FirmwareError(f"--tflm-tree {str(chosen)!r} is not a TFLite Micro tree (no "
                            f"tensorflow/lite/micro/micro_interpreter.h); make one with create_tflm_tree.py.")
    if kernels == "cmsis_nn" and not (chosen / "third_party/cmsis_nn").is_dir():
        raise FirmwareError(f"--tflm-tree {str(chosen)!r} has no third_party/cmsis_nn; kernels='cmsis_nn' needs a "
                            f"tree made with OPTIMIZED_KERNEL_DIR=cmsis_nn.")
    device = CORES[target].device if target in CORES else None
    if device and not (chosen / f"third_party/cmsis/Cortex_DFP/Device/{device}").is_dir():
        raise FirmwareError(f"--tflm-tree {str(chosen)!r} has no third_party/cmsis/Cortex_DFP/Device/{device} "
                            f"(startup, linker template) for target={target!r}; use a tree made for "
                            f"TARGET=cortex_m_generic with Cortex_DFP's {device} folder copied in (README of the "
                            f"trees).")
    return Toolchain(target=target, kernels=kernels, tree=chosen, size=size, qemu=qemu, **found)


@dataclasses.dataclass(frozen=True)
class Registration:
    """How TFLM's `MicroMutableOpResolver` registers one op.

    Attributes:
        method: The resolver method, e.g. "AddFullyConnected".
        functions: The `Register_...` functions it calls, e.g. ("Register_FULLY_CONNECTED",).
    """

    method: str
    functions: tuple[str, ...]


@functools.lru_cache(maxsize=None)
def resolver_registrations(tree: Path) -> dict[str, Registration]:
    """Every op the tree's `MicroMutableOpResolver` can register: builtin names (e.g. "FULLY_CONNECTED") and
    custom codes (e.g. "TFLM_DECODE") -> `Registration`, parsed from `micro_mutable_op_resolver.h`."""
    text = (tree / "tensorflow/lite/micro/micro_mutable_op_resolver.h").read_text()
    registrations = {}
    for match in re.finditer(r"TfLiteStatus (Add\w+)\((.*?)\n  \}", text, re.S):
        method, body = match.groups()
        functions = tuple(dict.fromkeys(re.findall(r"\b(Register_\w+)\(", body)))
        names = re.findall(r"BuiltinOperator_(\w+)", body) + re.findall(r'AddCustom\("(\w+)"', body)
        for name in names:
            registrations.setdefault(name, Registration(method, functions))
    return registrations


def _source_files(tree: Path, folder: str, suffixes=(".cc", ".c")) -> list[Path]:
    root = tree / folder
    if not root.is_dir():
        return []
    return sorted(path for path in root.rglob("*") if path.suffix in suffixes
                  and not _NOT_FIRMWARE.search(path.relative_to(tree).as_posix()))


@functools.lru_cache(maxsize=None)
def _kernel_files(tree: Path) -> tuple[Path, ...]:
    return tuple(_source_files(tree, "tensorflow/lite/micro/kernels") + _source_files(tree, "signal/micro/kernels"))


def _defining_file(tree: Path, function: str) -> Path:
    pattern = re.compile(rf"TFLMRegistration\*?\s+{function}\s*\([^)]*\)\s*\{{")
    for path in _kernel_files(tree):
        if function in path.read_text(errors="replace") and pattern.search(path.read_text(errors="replace")):
            return path
    raise FirmwareError(f"No source in {tree} defines {function}(); the tree lacks this kernel.")


def _include_closure(tree: Path, start: list[Path], extra_roots: tuple[Path, ...] = ()) -> list[Path]:
    """Sources reachable from `start` through quoted includes: for every included header `x.h` of a kernel
    folder, the implementation files `x.cc`/`x_common.cc` beside it (TFLM's convention) join the set."""
    roots = (tree, *extra_roots)
    sources, seen_headers, queue = list(dict.fromkeys(start)), set(), list(start)
    while queue:
        path = queue.pop()
        for include in re.findall(r'^#include "([^"]+)"', path.read_text(errors="replace"), re.M):
            header = next((root / include for root in roots if (root / include).is_file()),
                          path.parent / include if (path.parent / include).is_file() else None)
            if header is None or header in seen_headers:
                continue
            seen_headers.add(header)
            queue.append(header)
            if "kernels" not in header.parts:
                continue  # the core archive holds everything outside the kernel folders
            stem = header.with_suffix("")
            for candidate in (stem.with_suffix(".cc"), Path(f"{stem}_common.cc")):
                if candidate.is_file() and candidate not in sources:
                    sources.append(candidate)
                    queue.append(candidate)
    return sources


def kernel_sources(toolchain: Toolchain, functions: list[str], extra_sources: list[Path] = ()) -> list[Path]:
    """The kernel sources that define the given `Register_...` functions, with their helper sources.

    Args:
        toolchain: Gives the tree.
        functions: `Register_...` names from `resolver_registrations`.
        extra_sources: Our own kernel sources (compiled with the tree's kernels, same flags).

    Returns:
        Absolute source paths, each once.

    Raises:
        FirmwareError: a function no source in the tree defines.
    """
    start = [_defining_file(toolchain.tree, function) for function in functions] + list(extra_sources)
    extra_roots = tuple({Path(p).parent for p in extra_sources})
    return [path for path in _include_closure(toolchain.tree, start, extra_roots)
            if path.suffix in (".cc", ".c")]


def core_sources(toolchain: Toolchain) -> list[Path]:
    """The TFLM core of the tree: everything outside the kernel folders that firmware needs, and CMSIS-NN's
    library when the tree has it (both go into one static archive, so the linker takes only what is used)."""
    tree = toolchain.tree
    micro = [path for path in _source_files(tree, "tensorflow/lite/micro", (".cc",))
             if "kernels" not in path.relative_to(tree / "tensorflow/lite/micro").parts
             and "cortex_m_generic" not in path.parts]
    if toolchain.core:
        # The generic Cortex-M port replaces the host's debug_log.cc and micro_time.cc.
        micro = [path for path in micro if path.name not in ("debug_log.cc", "micro_time.cc")]
        micro += _source_files(tree, "tensorflow/lite/micro/cortex_m_generic")
    sources = micro + [path for folder in ("tensorflow/lite/core", "tensorflow/lite/kernels", "tensorflow/compiler")
                       for path in _source_files(tree, folder) if "micro" not in path.parts]
    sources += [tree / "tensorflow/lite/micro/kernels/kernel_util.cc"]
    if toolchain.kernels == "cmsis_nn":
        sources += _source_files(tree, "third_party/cmsis_nn/Source", (".c",))
    return sources


def startup_sources(toolchain: Toolchain) -> list[Path]:
    """The start-up of a semihosting program under QEMU: the core's CMSIS startup and system files (vector table,
    FPU enable) and our `_start` (harness/semihosting_start.cc: .bss, constructors, stdio, main, exit; linked with
    -nostartfiles); none for the host."""
    if not toolchain.core:
        return []
    device = toolchain.core.device
    folder = toolchain.tree / f"third_party/cmsis/Cortex_DFP/Device/{device}/Source"
    return [folder / f"startup_{device}.c", folder / f"system_{device}.c", SEMIHOSTING_START]


def cache_root() -> Path:
    """Object cache folder: $KERAS_EXPANDER_CACHE, else ~/.cache/keras_expander."""
    return Path(os.environ.get("KERAS_EXPANDER_CACHE") or Path.home() / ".cache" / "keras_expander")


@functools.lru_cache(maxsize=None)
def _compiler_identity(compiler: str) -> str:
    return subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def _object_folder(toolchain: Toolchain) -> Path:
    key = "\n".join([str(toolchain.tree), _compiler_identity(toolchain.cxx), *toolchain.flags])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "tflm-objects" / f"{toolchain.target}-{toolchain.kernels}-{digest}"


def _object_path(cache: Path, toolchain: Toolchain, source: Path, out_folder: Path | None,
                 extra_flags: tuple[str, ...], by_content: bool) -> tuple[Path, bool]:
    """Where `compile_objects` puts the object of `source`, and whether that object is keyed by content."""
    if source.is_relative_to(toolchain.tree):
        return cache / source.relative_to(toolchain.tree).with_suffix(".o"), False
    if by_content:
        # Keyed by the source, every header beside it (what its quoted includes find first) and the extra flags,
        # so that an edited source or header never reuses a stale object.
        digest = hashlib.sha256("\n".join(extra_flags).encode() + b"\0" + source.read_bytes())
        for header in sorted(source.parent.glob("*.h")):
            digest.update(b"\0" + header.name.encode() + b"\0" + header.read_bytes())
        return cache / "by-content" / digest.hexdigest()[:16] / (source.stem + ".o"), True
    if out_folder is None:
        raise ValueError(f"Argument `out_folder` is needed for {source}, which is outside the tree "
                         f"{toolchain.tree}.")
    return Path(out_folder) / (source.stem + ".o"), False


def is_kernel_path(relative: str | None) -> bool:
    """Whether a source compiles at -O2, as TFLM's Makefile compiles kernels, rather than at the core's -Os.

    Args:
        relative: The source's path in the tree (a kernel folder's or CMSIS-NN's source is a kernel), or None for
            a source outside the tree (ours: kernels and harness).
    """
    return relative is None or "/kernels/" in relative or relative.startswith("third_party/cmsis_nn")


def _is_kernel(toolchain: Toolchain, source: Path) -> bool:
    return is_kernel_path(source.relative_to(toolchain.tree).as_posix() if source.is_relative_to(toolchain.tree)
                          else None)


def compile_objects(toolchain: Toolchain, sources: list[Path], out_folder: Path | None = None,
                    extra_flags: tuple[str, ...] = (), force: bool = False, by_content: bool = False) -> list[Path]:
    """Compiles sources to objects in parallel, reusing cached objects whose source has not changed.

    Tree sources go to the shared object cache (keyed by tree, compiler and flags), and so, with `by_content`,
    do the other sources (keyed also by the source, the headers beside it and `extra_flags`); without it they go
    to `out_folder`.
    Kernels and CMSIS-NN compile at -O2, the core at -Os (TFLM's own choice).

    Args:
        toolchain: Compilers and flags.
        sources: Absolute paths of .cc / .c files.
        out_folder: Where objects of other sources go (required if there are any).
        extra_flags: Added to every compile (e.g. include folders of a project).
        force: Compile even when an object newer than its source exists (sources whose -D flags change).
        by_content: Cache the objects of sources outside the tree by content (sources that many projects share
            byte for byte and that include only the tree's headers and those beside them: our kernels, the
            harness).

    Returns:
        Object paths, in the order of `sources`.

    Raises:
        FirmwareError: a compile failed; the message holds the command's last error lines.
        ValueError: `out_folder` is None and a source needs it.
    """
    cache = _object_folder(toolchain)
    jobs = [(source, *_object_path(cache, toolchain, source, out_folder, extra_flags, by_content))
            for source in sources]

    def build(source: Path, target: Path, keyed_by_content: bool) -> Path:
        # An object keyed by content is current whatever the source's time (a new project's copy is newer).
        if not force and target.exists() and (keyed_by_content or target.stat().st_mtime >= source.stat().st_mtime):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        optimisation = "-O2" if _is_kernel(toolchain, source) else "-Os"
        compiler, flags = ((toolchain.cc, toolchain.c_flags) if source.suffix == ".c"
                           else (toolchain.cxx, toolchain.flags))
        handle, temporary = tempfile.mkstemp(suffix=".o", dir=target.parent)
        os.close(handle)
        command = [compiler, optimisation, *flags, *extra_flags, "-c", str(source), "-o", temporary]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            os.unlink(temporary)
            tail = "\n".join(result.stderr.strip().splitlines()[-12:])
            raise FirmwareError(f"Compiling {source} for {toolchain.target} failed:\n{tail}")
        os.replace(temporary, target)
        return target

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda job: build(*job), jobs))


def core_archive(toolchain: Toolchain) -> Path:
    """The cached static archive of the TFLM core (and CMSIS-NN) for this toolchain, built on first use.

    Processes building at once (parallel deploys, pytest-xdist workers) take turns through a lock file in the
    cache: the first builds the core (minutes on 2 cores), the others wait and reuse it.
    """
    folder = _object_folder(toolchain)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "core.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _build_core_archive(toolchain)


def _build_core_archive(toolchain: Toolchain) -> Path:
    objects = compile_objects(toolchain, core_sources(toolchain))
    archive = _object_folder(toolchain) / "libtflm_core.a"
    if archive.exists() and all(archive.stat().st_mtime >= obj.stat().st_mtime for obj in objects):
        return archive
    handle, temporary = tempfile.mkstemp(suffix=".a", dir=archive.parent)
    os.close(handle)
    os.unlink(temporary)
    result = subprocess.run([toolchain.ar, "rcs", temporary, *map(str, objects)], capture_output=True, text=True)
    if result.returncode != 0:
        raise FirmwareError(f"Archiving the TFLM core failed: {result.stderr.strip()}")
    os.replace(temporary, archive)
    return archive
