"""Cycle estimates (keras_expander.firmware.cycles): micro-benchmarks whose cycle counts the Cortex-M4 Technical
Reference Manual states come out exactly, run under QEMU; the estimate's instruction count equals the harness's
SysTick count of the same inference; MACs per inference come from the flatbuffer.

Needs the Arm toolchain and QEMU (skipped without them, like tests/test_firmware.py); about 15 s in all.
"""

import subprocess
from pathlib import Path

import numpy as np
import pytest

from keras_expander.firmware import cycles, device, project
from keras_expander.firmware.deploy import device_inputs
from keras_expander.tflite import export
from test_firmware import require_toolchain, sequences, tiny_model

HERE = Path(__file__).parent / "cycles"
# Body cycles each benchmark's comment in tests/cycles/microbench.c derives from the TRM, in its run order.
BENCHMARKS = {"bench_empty": 0, "bench_ldr8": 9, "bench_ldr_chase": 4, "bench_ldr_str": 3, "bench_str4": 4,
              "bench_add_ldr": 4, "bench_ldm4": 5, "bench_smlad_loop": 1 + 10 * 6 + 9 * 2 + 1,
              "bench_branch_loop": 1 + 20 * 1 + 19 * 2 + 1, "bench_multiplies": 5, "bench_call": 7, "bench_it": 2,
              "bench_unaligned_target": 4}
TAKEN_IN_BODY = {"bench_smlad_loop": 9, "bench_branch_loop": 19, "bench_call": 2, "bench_unaligned_target": 1}


@pytest.fixture(scope="module")
def micro_benchmarks(tmp_path_factory):
    """(Program, Trace) of tests/cycles/microbench.c built with the project's Cortex-M4 flags, run under QEMU."""
    toolchain = require_toolchain("cortex-m4")
    folder = tmp_path_factory.mktemp("microbench")
    image = folder / "microbench.elf"
    flags = [flag for flag in toolchain.flags if flag.startswith("-m")]
    built = subprocess.run([toolchain.cc, *flags, "-O2", "-nostdlib", "-ffreestanding", f"-T{HERE / 'microbench.ld'}",
                            str(HERE / "microbench.c"), "-o", str(image)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    trace, log = cycles.trace_run(device.qemu_command(toolchain, image, count_instructions=False), image, folder,
                                  timeout_s=60)
    assert len(trace.windows) == len(BENCHMARKS), log
    return cycles.Program(image), trace


def body(micro_benchmarks, name, wait_states=0):
    """The benchmark's estimate less the empty benchmark's (the same call, markers and return)."""
    program, trace = micro_benchmarks
    index = list(BENCHMARKS).index(name)
    ours, empty = (cycles.estimate(program, trace, trace.windows[i], wait_states) for i in (index, 0))
    return ours, empty


@pytest.mark.parametrize("name", list(BENCHMARKS)[1:])
def test_micro_benchmark_cycles_equal_the_manual(micro_benchmarks, name):
    ours, empty = body(micro_benchmarks, name)
    assert ours.cycles - empty.cycles == BENCHMARKS[name]
    assert sum(ours.cycles_by_class.values()) == ours.cycles
    assert ours.taken_branches - empty.taken_branches == TAKEN_IN_BODY.get(name, 0)


def test_flash_wait_states_are_charged_per_taken_branch(micro_benchmarks):
    ours, empty = body(micro_benchmarks, "bench_branch_loop", wait_states=3)
    assert ours.cycles - empty.cycles == BENCHMARKS["bench_branch_loop"] + 3 * 19
    assert ours.cycles_by_class["flash_wait_states"] == 3 * ours.taken_branches
    with pytest.raises(ValueError, match="wait_states"):
        body(micro_benchmarks, "bench_branch_loop", wait_states=-1)


def test_breakdown_names_the_functions(micro_benchmarks):
    ours, _ = body(micro_benchmarks, "bench_smlad_loop")
    assert next(iter(ours.cycles_by_function)) == "bench_smlad_loop"
    assert ours.instructions_by_class["multiplies"] == 20 and ours.instructions_by_class["branches_taken"] >= 9


def test_inference_instructions_equal_the_harness_count(tmp_path):
    """The estimate covers exactly each Invoke: its instruction count equals the harness's SysTick count (40
    instructions per tick) up to the counter reads' own instructions and the marker calls."""
    toolchain = require_toolchain("cortex-m4")
    content = export.convert(tiny_model("lstm", 16, 0.8), "int8", sequences(16, seed=5))[0]
    registrations = project.write_project(content, tmp_path / "fw", toolchain.tree)
    project.write_linker_script(toolchain.tree, tmp_path / "fw", device.QEMU_FLASH_BYTES, device.QEMU_RAM_BYTES,
                                device.STACK_BYTES, device.HEAP_BYTES)
    image = device.link(toolchain, tmp_path / "fw", registrations, 256 << 10)
    inputs = device_inputs(content, sequences(2))
    estimates, _ = cycles.estimate_inferences(toolchain, image, inputs, tmp_path / "trace", timeout_s=120)
    values = device.run(toolchain, image, inputs, tmp_path / "run", timeout_s=120).values  # -icount
    harness = [values["instructions_first"], values["instructions_total"] - values["instructions_first"]]
    for estimate, counted in zip(estimates, harness):
        assert abs(estimate.instructions - counted) <= 40 + 20, (estimate.instructions, counted)
    # 28 steps x 4 gates x 16 x (28 + 16) MACs; the LSTM kernel holds most of the cycles.
    dense, nonzero = project.multiply_accumulates(content)
    assert dense == 28 * 4 * 16 * 44 + 16 * 10
    assert 0.1 * dense < nonzero < 0.35 * dense
    assert 1 < estimates[1].cycles / estimates[1].instructions < 2
    assert next(iter(estimates[1].cycles_by_function)) == "tflite::lstm_internal::FullyConnected"
    np.testing.assert_equal(sum(estimates[1].instructions_by_class.values()), estimates[1].instructions)


def test_a_tb_logged_but_not_run_is_dropped():
    """QEMU logs a TB before running it; one that exits at its start (an exit request) is logged again at the
    same address, and counts only where it may branch to itself."""
    def block(address, key):
        return ["----------------", "IN: f", f"0x{address:08x}:  4770       bx       lr", "",
                f"Trace 0: {key} [00800408/{address:08x}/00000110/ff020200] f"]

    log = [*block(0x100, "0xb"), *block(0x10, "0xa"), "Trace 0: 0xa [00800408/00000010/00000110/ff020200] f",
           *block(0x200, "0xe")]
    dropped = cycles.parse_log(iter(log), 0x100, 0x200, may_loop=lambda addresses: False)
    assert dropped.windows[0].transitions == {("0xb", "0xa"): 1, ("0xa", "0xe"): 1}
    kept = cycles.parse_log(iter(log), 0x100, 0x200)
    assert kept.windows[0].transitions == {("0xb", "0xa"): 1, ("0xa", "0xa"): 1, ("0xa", "0xe"): 1}
