"""Cortex-M4 cycle estimates from the instruction stream QEMU executes: what an inference costs on a real core.

QEMU counts instructions; it models no pipeline, no load pipelining, no branch refill and no flash wait state. This
module replays the executed instruction stream of a Cortex-M4 image through the timing table below and returns
cycles (estimate), with a breakdown by instruction class and by function.

Route: QEMU 7.2's `-d in_asm,exec,nochain` log lists every translation block (TB) when it is translated (its
instruction addresses) and every execution of a TB (`nochain` makes each one pass through the logged main loop).
The log streams through a pipe, never to disk. The instructions are decoded from the ELF image with capstone.
A window is an inference: the TBs executed strictly between the marker functions `ke_cycles_begin` and
`ke_cycles_end` (noinline, in harness/main.cc around `Invoke`), so semihosting I/O is never counted.

Timing table (Arm Cortex-M4 Technical Reference Manual, DDI 0439B, section 3.3.1 "Cortex-M4 instructions",
Table 3-1 "Cortex-M4 instruction set summary", its notes on load/store pipelining and branches (section 3.3.2),
and section 7.2.3 Table 7-1 "FPU instruction set" for the FPU; the same figures as TI's reproduction of the
Cortex-M4F table, SWCU192 Table 3-25). Zero-wait-state memory unless `wait_states` is given:

    data processing, moves, shifts, compares, extends, bit fields, saturation,
    SIMD adds, CLZ, NOP, barriers (B = 0) ........................................ 1
    MUL, MLA, MLS, SMULL, UMULL, SMLAL, UMLAL, SMLAxy, SMLAD, SMUAD, SMMLA, ...... 1
    SDIV, UDIV ................. 2-12 (early termination on the operands): DIVIDE_CYCLES = 7, the midpoint
    LDR, LDRB, LDRH, LDRSB, LDRSH, LDREX (single loads) ........................... 2
        but pipelined: a single load or store that follows a single load costs 1 less, unless its address
        uses the register the load wrote (so N back-to-back independent loads take N + 1)
    STR, STRB, STRH with an immediate offset ...................................... 1 (its data phase overlaps
        the next instruction); with a register offset 2, or 1 when pipelined after a load
    LDM, STM, PUSH, POP, LDRD, STRD, VLDM, VSTM, VPUSH, VPOP ...................... 1 + N (N registers, a
        double-precision register counting 2)
    a load or store whose address register the previous data-processing instruction wrote ... + 1 (no
        forwarding path to the address generator)
    branches (B, BL, BX, BLX, CBZ, CBNZ) not taken ................................ 1
    taken: 1 + P, P = 1 for an immediate branch, 2 for a register branch (BX, BLX, MOV/ADD PC) and 3 for a
        load to PC (POP {..., PC}, LDM, LDR PC: 1 + N + 3); TBB/TBH 2 + 1 + 3 = 6
        + 1 when the target is a 32-bit instruction at an address that is 2 mod 4 (the refill needs two fetches)
    IT ............................ 0 when it follows a 16-bit instruction (folded), else 1
    VLDR, VSTR .................... 2;  VMLA, VMLS, VNMLA, VNMLS, VFMA, VFMS, VFNMA, VFNMS 3;  VDIV, VSQRT 14;
    other FPU instructions 1

Flash wait states (a board parameter, `wait_states`): each non-sequential fetch, i.e. each taken branch, pays
`wait_states` cycles. Sequential fetches are taken as hidden by the flash's prefetch buffer (128-bit lines on the
STM32 and nRF52 parts), and the charge assumes every branch target misses any flash cache (ST's ART accelerator,
the nRF52840's instruction cache): an upper bound for code whose loops fit the cache, which hides most of it. The
breakdown's "flash_wait_states" entry says how much this bound adds; 0 wait states is the other end.

What the model leaves out, all of which make real cycles differ from the estimate:
    - instructions that an IT block skips are charged as if executed (QEMU's log shows the block, not the
      condition); a skipped load costs 1, not 2;
    - divide early termination (DIVIDE_CYCLES for every SDIV/UDIV), and MRS/MSR/CPS taken as 1 cycle;
    - exception entry and return (12 cycles each; a SysTick interrupt inside a window every 2**24 ticks);
    - bus contention: LDR Rx, [PC, #imm] competing with instruction fetch (up to 1 cycle), unaligned
      32-bit instruction groups in sequential code, data accesses to slow memory, write-buffer stalls;
    - pipelining across LDRD/LDM or into STR after a store, and FPU register dependencies (VMLA's 3 cycles are
      its issue cost, not a latency chain);
    - the data cache and flash data wait states for constants (weights) read from flash: every load is 2 cycles
      (1 pipelined), as from zero-wait-state SRAM.
Instruction counts from the same stream equal QEMU -icount's (tests/test_cycles.py checks it against the
harness's SysTick count). The estimate is a timing-table model, not a measurement: call its output cycles
(estimate).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import functools
import os
import shutil
import subprocess
import threading
from pathlib import Path

DIVIDE_CYCLES = 7  # SDIV/UDIV take 2-12 cycles (TRM Table 3-1); the midpoint, for want of the operands
MARKERS = ("ke_cycles_begin", "ke_cycles_end")
CLASSES = ("loads", "stores", "multiplies", "divides", "fpu", "branches_taken", "branches_not_taken", "other",
           "flash_wait_states")

_SINGLE_LOADS = {"ldr", "ldrb", "ldrh", "ldrsb", "ldrsh", "ldrex", "ldrexb", "ldrexh", "ldrt", "ldrbt", "ldrht",
                 "ldrsbt", "ldrsht"}
_SINGLE_STORES = {"str", "strb", "strh", "strex", "strexb", "strexh", "strt", "strbt", "strht"}
_MULTI_LOADS = {"ldm", "ldmdb", "pop", "ldrd", "vldmia", "vldmdb", "vpop"}
_MULTI_STORES = {"stm", "stmdb", "push", "strd", "vstmia", "vstmdb", "vpush"}
_MULTIPLIES = {"mul", "mla", "mls", "smull", "umull", "smlal", "umlal", "umaal", "smmul", "smmulr", "smmla",
               "smmlar", "smmls", "smmlsr", "smuad", "smuadx", "smusd", "smusdx", "smlad", "smladx", "smlsd",
               "smlsdx", "smlald", "smlaldx", "smlsld", "smlsldx", "smulbb", "smulbt", "smultb", "smultt", "smulwb",
               "smulwt", "smlabb", "smlabt", "smlatb", "smlatt", "smlawb", "smlawt", "smlalbb", "smlalbt",
               "smlaltb", "smlaltt", "usad8", "usada8"}
_DIVIDES = {"sdiv", "udiv"}
_FPU_THREE = {"vmla", "vmls", "vnmla", "vnmls", "vfma", "vfms", "vfnma", "vfnms"}
_IMMEDIATE_BRANCHES = {"b", "bl", "cbz", "cbnz"}
_REGISTER_BRANCHES = {"bx", "blx"}
_TABLE_BRANCHES = {"tbb", "tbh"}


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One decoded instruction and its static timing.

    Attributes:
        address, size: Where it is, bytes (2 or 4).
        name: capstone's instruction name without condition or width suffix, e.g. "ldr", "smlad".
        kind: Timing class, one of `CLASSES` ("branches_not_taken" for any branch: its taken refill is added
            per executed transition).
        cycles: Cycles when not pipelined, not stalled and (for a branch) not taken.
        single_load: A single-register load (LDR family): the next single load or store may pipeline after it.
        single_store_immediate: STR family without a register offset (1 cycle).
        pipelinable: A single load or store, which pipelines after a single load.
        writes, address_registers: Registers it writes, and those its address reads (capstone register ids).
        data_processing: Neither memory access nor branch (its result reaches an address only a cycle late).
        branch_refill: Cycles a taken branch adds to `cycles`: P (1 immediate, 2 register, 3 load to PC), or 4 for
            a table branch (6 in all with its 2 in `cycles`); 0 when not a branch.
        function: The symbol it belongs to.
    """

    address: int
    size: int
    name: str
    kind: str
    cycles: int
    single_load: bool
    pipelinable: bool
    writes: frozenset
    address_registers: frozenset
    data_processing: bool
    branch_refill: int
    function: str


class Program:
    """The code and function symbols of an ELF image, and its instructions decoded on demand with capstone.

    Args:
        image: A Cortex-M4 ELF (32-bit little-endian, Thumb code).

    Raises:
        ValueError: `image` is not a 32-bit little-endian ELF file.
    """

    def __init__(self, image: Path):
        import capstone
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        from elftools.elf.sections import SymbolTableSection

        with open(image, "rb") as stream:
            try:
                elf = ELFFile(stream)
            except ELFError:
                elf = None
            if elf is None or elf.elfclass != 32 or not elf.little_endian:
                raise ValueError(f"Argument `image` must be a 32-bit little-endian ELF file. Received: image={image!r}")
            self.segments = [(segment["p_vaddr"], segment.data()) for segment in elf.iter_segments()
                             if segment["p_type"] == "PT_LOAD" and segment["p_filesz"]]
            symbols = {symbol["st_value"] & ~1: symbol.name
                       for section in elf.iter_sections() if isinstance(section, SymbolTableSection)
                       for symbol in section.iter_symbols() if symbol["st_info"]["type"] == "STT_FUNC"}
        self.symbol_addresses = sorted(symbols)
        self.symbol_names = _demangle([symbols[address] for address in self.symbol_addresses])
        self.addresses = {name: address for address, name in zip(self.symbol_addresses, self.symbol_names)}
        self._disassembler = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB | capstone.CS_MODE_MCLASS)
        self._disassembler.detail = True

    def function(self, address: int) -> str:
        """The name of the function symbol at or below `address` ("?" below every symbol)."""
        index = bisect.bisect_right(self.symbol_addresses, address) - 1
        return self.symbol_names[index] if index >= 0 else "?"

    def may_loop(self, block: tuple) -> bool:
        """Whether the TB of these instruction addresses may branch to its own first instruction: its last
        instruction is an immediate branch there, or a branch whose target is a register or loaded."""
        from capstone import arm

        last = self.instruction(block[-1])
        if not last.branch_refill:
            return False
        if last.name not in _IMMEDIATE_BRANCHES:
            return True
        start, code = next((start, code) for start, code in self.segments if start <= last.address < start + len(code))
        decoded = next(self._disassembler.disasm(code[last.address - start:last.address - start + 4], last.address, 1))
        return any(op.type == arm.ARM_OP_IMM and op.imm == block[0] for op in decoded.operands)

    @functools.lru_cache(maxsize=None)
    def instruction(self, address: int) -> Instruction:
        """The instruction at `address`, decoded and timed.

        Raises:
            ValueError: no loaded segment holds `address`, or capstone cannot decode it.
        """
        from capstone import arm

        for start, code in self.segments:
            if start <= address < start + len(code):
                decoded = next(self._disassembler.disasm(code[address - start:address - start + 4], address, 1),
                               None)
                break
        else:
            decoded = None
        if decoded is None:
            raise ValueError(f"No instruction at address 0x{address:08x} of the image (outside its code).")
        name = decoded.insn_name()
        _, written = decoded.regs_access()
        writes = frozenset(written)
        memory = [op.mem for op in decoded.operands if op.type == arm.ARM_OP_MEM]
        address_registers = frozenset(r for m in memory for r in (m.base, m.index) if r)
        registers = len(decoded.operands) - (1 if name in ("ldm", "ldmdb", "stm", "stmdb", "vldmia", "vldmdb",
                                                           "vstmia", "vstmdb") else 0)
        if name in ("ldrd", "strd"):
            registers = 2
        elif name in _MULTI_LOADS | _MULTI_STORES and name.startswith("v"):
            registers *= 2 if (decoded.reg_name(decoded.operands[-1].reg) or "").startswith("d") else 1
        writes_pc = arm.ARM_REG_PC in writes
        refill = 0
        if name in _TABLE_BRANCHES:
            kind, cycles, refill = "branches_not_taken", 2, 4
        elif name in _IMMEDIATE_BRANCHES:
            kind, cycles, refill = "branches_not_taken", 1, 1
        elif name in _REGISTER_BRANCHES or (writes_pc and not (name in _SINGLE_LOADS or name in _MULTI_LOADS)):
            kind, cycles, refill = "branches_not_taken", 1, 2
        elif name in _SINGLE_LOADS:
            kind, cycles, refill = ("branches_not_taken" if writes_pc else "loads"), 2, 3 if writes_pc else 0
        elif name in _MULTI_LOADS and not name.startswith("v"):
            kind, cycles, refill = ("branches_not_taken" if writes_pc else "loads"), 1 + registers, (
                3 if writes_pc else 0)
        elif name in _SINGLE_STORES:
            kind, cycles = "stores", 2 if any(m.index for m in memory) else 1
        elif name in _MULTI_STORES and not name.startswith("v"):
            kind, cycles = "stores", 1 + registers
        elif name in _MULTIPLIES:
            kind, cycles = "multiplies", 1
        elif name in _DIVIDES:
            kind, cycles = "divides", DIVIDE_CYCLES
        elif name.startswith("v"):
            kind = "fpu"
            cycles = (2 if name in ("vldr", "vstr") else 1 + registers if name in _MULTI_LOADS | _MULTI_STORES
                      else 3 if name in _FPU_THREE else 14 if name in ("vdiv", "vsqrt") else 1)
        else:
            kind, cycles = "other", 1
        memory_access = kind in ("loads", "stores") or name in _SINGLE_LOADS or name in _MULTI_LOADS
        return Instruction(
            address=address, size=decoded.size, name=name, kind=kind, cycles=cycles,
            single_load=name in _SINGLE_LOADS and not writes_pc,
            pipelinable=(name in _SINGLE_LOADS and not writes_pc) or name in _SINGLE_STORES,
            writes=writes, address_registers=address_registers,
            data_processing=not memory_access and refill == 0 and kind != "fpu" and name != "it",
            branch_refill=refill, function=self.function(address))


def _demangle(names: list[str]) -> list[str]:
    """C++ names readable, without their parameter lists (c++filt from the Arm toolchain or the host; overloads
    share a name), unchanged when no c++filt is found."""
    tool = shutil.which("arm-none-eabi-c++filt") or shutil.which("c++filt")
    if not tool or not names:
        return names
    result = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    demangled = [name.replace("(anonymous namespace)", "{anonymous}").split("(")[0]
                 for name in result.stdout.splitlines()]
    return demangled if result.returncode == 0 and len(demangled) == len(names) else names


def pair_cycles(previous: Instruction | None, current: Instruction) -> int:
    """Cycles of `current` after `previous` in sequence (None after a taken branch: the pipeline was refilled).

    Returns:
        `current.cycles`, less 1 when a 2-cycle load or store pipelines after a single load, plus 1 when its
        address register was just written by a data-processing instruction; an IT folded onto a 16-bit
        instruction costs 0 (TRM Table 3-1 notes).
    """
    if current.name == "it":
        return 0 if previous is not None and previous.size == 2 else 1
    cycles = current.cycles
    if previous is None or not current.address_registers:
        return cycles
    dependent = bool(current.address_registers & previous.writes)
    if previous.single_load and current.pipelinable and not dependent and cycles > 1:
        cycles -= 1  # the address phase overlaps the load's data phase (never below 1: STR #imm is 1 already)
    elif previous.data_processing and dependent:
        cycles += 1
    return cycles


@dataclasses.dataclass
class Window:
    """The executed TBs of one window: counts of each transition (previous TB, TB) by their host-code keys.

    The first transition comes from the begin marker's TB, the last goes to the end marker's TB.
    """

    transitions: collections.Counter


@dataclasses.dataclass
class Trace:
    """What a traced run executed.

    Attributes:
        blocks: TB key (QEMU's host-code address, as logged) -> the guest addresses of its instructions.
        windows: One `Window` per begin/end marker pair, in order.
        markers: TB keys of the marker functions' TBs.
    """

    blocks: dict
    windows: list
    markers: set


def parse_log(lines, begin_address: int, end_address: int, may_loop=lambda block: True) -> Trace:
    """Reads a QEMU `-d in_asm,exec,nochain` log into TBs and the transitions of each marker window.

    QEMU logs a TB before running it; a TB that exits at its start (an exit request: an interrupt or, under
    -icount, the end of an instruction budget) ran no instruction and is logged again, or as a shorter TB at the
    same address. Such a TB is dropped: a TB followed by one at its own address that `may_loop` says cannot branch
    there.

    Args:
        lines: The log's lines (an iterable: a file or a pipe, read once).
        begin_address, end_address: Entry addresses of `ke_cycles_begin` and `ke_cycles_end`.
        may_loop: (instruction addresses of a TB) -> whether its last instruction may branch to its first
            (`Program.may_loop`); by default every TB may, and none is dropped.

    Returns:
        A `Trace`.
    """
    blocks, markers, windows = {}, set(), []
    pending, addresses, counter, previous, before = (), [], None, None, None
    loops = {}  # TB key -> may_loop(its addresses)
    for line in lines:
        if line.startswith("Trace"):
            key = line.split(None, 3)[2]
            if pending:
                if blocks.get(key, pending) != pending:  # QEMU flushed its TB cache and reused host code
                    raise ValueError("QEMU retranslated a TB at the host address of another (TB cache flush): "
                                     "trace fewer inferences.")
                blocks[key] = pending
                if pending[0] in (begin_address, end_address):
                    markers.add(key)
                pending = ()
            if previous is not None and blocks[key][0] == blocks[previous][0] and previous not in markers:
                if previous not in loops:
                    loops[previous] = may_loop(blocks[previous])
                if not loops[previous]:  # the previous TB ran nothing: forget it
                    if counter is not None and before is not None:
                        counter[(before, previous)] -= 1
                    previous = before
            if counter is not None:
                counter[(previous, key)] += 1
                if key in markers:
                    windows.append(Window(counter))
                    counter = None
            elif key in markers and blocks[key][0] == begin_address:
                counter = collections.Counter()
            before, previous = previous, key
        elif line.startswith("0x"):
            addresses.append(int(line[2:10], 16))
        elif line.startswith("IN:"):
            addresses = []
        elif addresses:  # the blank line that ends an in_asm block
            pending, addresses = tuple(addresses), []
    return Trace(blocks=blocks, windows=windows, markers=markers)


@dataclasses.dataclass(frozen=True)
class CycleEstimate:
    """Cycles (estimate) of one window on a Cortex-M4, from the timing table of this module.

    Attributes:
        cycles: Cycles (estimate), flash wait states included.
        instructions: Instructions executed in the window (equals QEMU -icount's count).
        taken_branches: Non-sequential fetches (each pays the branch refill and `wait_states`).
        wait_states: Flash wait states charged per taken branch, cycles.
        cycles_by_class: Cycles per timing class (`CLASSES`), summing to `cycles`.
        instructions_by_class: Instructions per class (branches split by taken or not).
        cycles_by_function: Cycles per function symbol, largest first (wait states charged to the branch's
            function).
        instructions_by_function: Instructions per function symbol.
    """

    cycles: int
    instructions: int
    taken_branches: int
    wait_states: int
    cycles_by_class: dict
    instructions_by_class: dict
    cycles_by_function: dict
    instructions_by_function: dict

    def top_functions(self, count: int = 8) -> dict:
        """The `count` functions with the most cycles: name -> {"cycles", "instructions", "share"}."""
        return {name: {"cycles": cycles, "instructions": self.instructions_by_function.get(name, 0),
                       "share": round(cycles / self.cycles, 4) if self.cycles else 0.0}
                for name, cycles in list(self.cycles_by_function.items())[:count]}


def estimate(program: Program, trace: Trace, window: Window, wait_states: int = 0) -> CycleEstimate:
    """Cycles (estimate) of one window: each executed TB through the timing table, with branch refills and flash
    wait states from the transitions between TBs.

    Args:
        program: The image the trace ran.
        trace: From `parse_log` (its TBs).
        window: One of `trace.windows`.
        wait_states: Flash wait states per non-sequential fetch (taken branch), cycles (a board parameter).

    Returns:
        A `CycleEstimate`.

    Raises:
        ValueError: `wait_states` is negative.
    """
    if wait_states < 0:
        raise ValueError(f"Argument `wait_states` must be >= 0 cycles. Received: wait_states={wait_states!r}")
    cycles = collections.Counter()  # (function, class) -> cycles
    instructions = collections.Counter()  # (function, class) -> instructions
    taken = 0
    static = {}  # TB key -> [(instruction, cycles in sequence)], the first without a predecessor
    for (source, destination), count in window.transitions.items():
        if source not in trace.markers:  # the source's last instruction: a taken branch's refill, or not taken
            last = program.instruction(trace.blocks[source][-1])
            target = program.instruction(trace.blocks[destination][0])
            if target.address != last.address + last.size:
                taken += count
                unaligned = 1 if target.size == 4 and target.address % 4 == 2 else 0
                if last.branch_refill:
                    cycles[(last.function, "branches_taken")] += count * (last.branch_refill + unaligned)
                    instructions[(last.function, "branches_taken")] += count
                    instructions[(last.function, "branches_not_taken")] -= count
                cycles[(last.function, "flash_wait_states")] += count * wait_states
        if destination in trace.markers:
            continue
        if destination not in static:
            sequence = [program.instruction(address) for address in trace.blocks[destination]]
            static[destination] = [(now, pair_cycles(before, now))
                                   for before, now in zip([None, *sequence[:-1]], sequence)]
        block = static[destination]
        first, first_cycles = block[0]
        if source not in trace.markers:  # a fall-through from the previous TB keeps the pipeline going
            before = program.instruction(trace.blocks[source][-1])
            if first.address == before.address + before.size:
                cycles[(first.function, first.kind)] += count * (pair_cycles(before, first) - first_cycles)
        for instruction, each in block:
            cycles[(instruction.function, instruction.kind)] += count * each
            instructions[(instruction.function, instruction.kind)] += count
    by_class, by_function = collections.Counter(), collections.Counter()
    count_by_class, count_by_function = collections.Counter(), collections.Counter()
    for (function, kind), value in cycles.items():
        by_class[kind] += value
        by_function[function] += value
    for (function, kind), value in instructions.items():
        count_by_class[kind] += value
        count_by_function[function] += value
    return CycleEstimate(
        cycles=sum(by_class.values()), instructions=sum(count_by_class.values()), taken_branches=taken,
        wait_states=wait_states, cycles_by_class={kind: by_class.get(kind, 0) for kind in CLASSES},
        instructions_by_class={kind: count_by_class.get(kind, 0) for kind in CLASSES if kind != "flash_wait_states"},
        cycles_by_function=dict(by_function.most_common()),
        instructions_by_function=dict(count_by_function.most_common()))


def trace_run(qemu_command: list[str], image: Path, workdir: Path, timeout_s: float) -> tuple[Trace, str]:
    """Runs a Cortex-M4 image under QEMU with its `-d in_asm,exec,nochain` log streamed through a pipe into
    `parse_log` (the log grows by about 100 bytes per executed TB, so it never reaches the disk).

    Args:
        qemu_command: From `device.qemu_command` (its `-kernel image` last), best without -icount (instruction
            budgets make QEMU exit TBs at their start, which `parse_log` has to drop).
        image: The ELF image; it must define the functions `MARKERS`.
        workdir: QEMU's working folder (the harness opens inputs.bin there).
        timeout_s: Wall-clock limit, seconds; QEMU is killed after it.

    Returns:
        (the `Trace`, QEMU's stdout and stderr).

    Raises:
        ValueError: the image lacks a marker function.
        subprocess.TimeoutExpired: QEMU ran past `timeout_s`.
    """
    program = Program(image)
    missing = [name for name in MARKERS if name not in program.addresses]
    if missing:
        raise ValueError(f"Argument `image` must define the marker functions {MARKERS}; {image} lacks {missing}.")
    read, write = os.pipe()
    command = [*qemu_command[:-2], "-d", "in_asm,exec,nochain", "-D", f"/dev/fd/{write}", *qemu_command[-2:]]
    with open(Path(workdir) / "qemu_output.txt", "w+") as output:
        process = subprocess.Popen(command, cwd=workdir, stdout=output, stderr=subprocess.STDOUT, pass_fds=(write,))
        os.close(write)
        timer = threading.Timer(timeout_s, process.kill)
        timer.start()
        try:
            with open(read, buffering=1 << 20) as log:
                trace = parse_log(log, *(program.addresses[name] for name in MARKERS), may_loop=program.may_loop)
            process.wait()
        finally:
            timer.cancel()
        if process.returncode == -9:
            raise subprocess.TimeoutExpired(command, timeout_s)
        output.seek(0)
        return trace, output.read()


def estimate_inferences(toolchain, image: Path, inputs, workdir: Path, timeout_s: float,
                        wait_states: int = 0) -> tuple[list[CycleEstimate], dict]:
    """Runs the firmware harness traced on `inputs` and estimates each inference (each `Invoke`).

    The per-inference instruction stream of these models hardly depends on the data (no data-dependent branches
    in the int8 kernels but activations' saturation and the sparse kernels' per-row lengths, which are weights),
    so one or two sequences stand for all; the first `Invoke` also initialises kernel state.

    Args:
        toolchain: A Cortex-M4 `toolchain.Toolchain` (QEMU).
        image: The harness's ELF image (`device.link`).
        inputs: (N, ...) raw input tensors, N small: every executed TB is logged and parsed (the demo's
            reference-kernel LSTM, 25 M instructions per inference, traces in seconds per sequence).
        workdir: Folder for inputs.bin, outputs.bin and QEMU's output.
        timeout_s: Wall-clock limit, seconds.
        wait_states: Flash wait states per taken branch, cycles.

    Returns:
        (one `CycleEstimate` per inference, in order; the harness's "KE key value" lines (its instruction counts
        are meaningless here: the traced run has no -icount)).

    Raises:
        ValueError: a toolchain of another target than the Cortex-M4, whose timings this table is not.
        FirmwareError: the harness failed, ran past `timeout_s`, or the trace has another number of windows.
    """
    from keras_expander.firmware import device
    from keras_expander.firmware.toolchain import FirmwareError

    if toolchain.target != "cortex-m4":
        raise ValueError(f"Argument `toolchain` must be a Cortex-M4 toolchain: the timing table is the Cortex-M4's "
                         f"and says nothing about another core. Received: target={toolchain.target!r}")

    workdir.mkdir(parents=True, exist_ok=True)
    device.write_inputs(workdir / "inputs.bin", inputs)
    try:
        trace, log = trace_run(device.qemu_command(toolchain, image, count_instructions=False), image, workdir,
                               timeout_s)
    except subprocess.TimeoutExpired:
        raise FirmwareError(f"The traced Cortex-M4 run did not finish within {timeout_s:.0f} s.") from None
    values = device.harness_values(log)
    if "done" not in log or len(trace.windows) != len(inputs):
        tail = "\n".join(log.splitlines()[-15:])
        raise FirmwareError(f"The traced Cortex-M4 run gave {len(trace.windows)} inference windows for "
                            f"{len(inputs)} sequences:\n{tail}")
    program = Program(image)
    return [estimate(program, trace, window, wait_states) for window in trace.windows], values
