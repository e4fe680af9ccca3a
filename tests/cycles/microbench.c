// Cortex-M4 micro-benchmarks whose cycle counts the Technical Reference Manual states (DDI 0439, "Processor
// instruction timings" and its load/store pipelining notes), for tests/test_cycles.py. Bare metal, no C library:
// each benchmark runs between the markers ke_cycles_begin and ke_cycles_end, called through the same indirect
// call, so that a benchmark's estimate minus the empty benchmark's is the cost of its body alone. QEMU ends
// through semihosting SYS_EXIT.
#include <stdint.h>

#define KE_MARKER __attribute__((noipa, used)) void  // noipa: never inlined nor folded into one
KE_MARKER ke_cycles_begin(void) { __asm__ volatile(""); }
KE_MARKER ke_cycles_end(void) { __asm__ volatile(""); }

typedef void (*Bench)(uint32_t* buffer);
// Aligned to 4 bytes, so that where a branch lands (2 mod 4 or not) is fixed by the body alone.
#define BENCH(name, body) \
  __attribute__((naked, noinline, aligned(4))) void name(uint32_t* buffer) { __asm__ volatile(body "bx lr\n"); }

// Body cycles per the TRM in the comments (tests/test_cycles.py holds the closed forms).
BENCH(bench_empty, "")
// 8 independent LDRs, back to back: 2 + 7 x 1 = 9.
BENCH(bench_ldr8, "ldr r1, [r0]\n ldr r2, [r0, #4]\n ldr r3, [r0, #8]\n ldr r12, [r0, #12]\n"
                  "ldr r1, [r0, #16]\n ldr r2, [r0, #20]\n ldr r3, [r0, #24]\n ldr r12, [r0, #28]\n")
// A load whose address is the previous load's result is not pipelined: 2 + 2 = 4.
BENCH(bench_ldr_chase, "ldr r1, [r0, #32]\n ldr r2, [r1]\n")
// LDR then STR of what it loaded: 2 + 1 = 3.
BENCH(bench_ldr_str, "ldr r1, [r0]\n str r1, [r0, #4]\n")
// STR with an immediate offset is one cycle: 4 x 1 = 4.
BENCH(bench_str4, "str r1, [r0]\n str r2, [r0, #4]\n str r3, [r0, #8]\n str r12, [r0, #12]\n")
// A load whose address a data-processing instruction has just written stalls one cycle: 1 + (1 + 2) = 4.
BENCH(bench_add_ldr, "adds r1, r0, #4\n ldr r2, [r1]\n")
// LDM of 4 registers: 1 + N = 5.
BENCH(bench_ldm4, "ldm r0, {r1, r2, r3, r12}\n")
// 10 iterations of two pipelined loads and two SMLADs: movs 1; per iteration ldr 2 + ldr 1 + 2 x smlad 1 +
// subs 1 + bne (1 + P, P = 1, taken 9 times; 1 not taken) = 1 + 10 x 6 + 9 x 2 + 1 = 80.
BENCH(bench_smlad_loop, "movs r3, #10\n 1: ldr r1, [r0]\n ldr r2, [r0, #4]\n smlad r12, r1, r2, r12\n"
                        "smlad r12, r2, r1, r12\n subs r3, #1\n bne 1b\n")
// A taken-branch loop of 20 iterations: movs 1 + 20 x subs 1 + 19 x taken bne 2 + 1 not taken = 60.
BENCH(bench_branch_loop, "movs r3, #20\n 1: subs r3, #1\n bne 1b\n")
// MUL, MLA, SMULL, SMLAL, SMLABB: 1 cycle each = 5.
BENCH(bench_multiplies, "mul r1, r2, r3\n mla r1, r2, r3, r1\n smull r1, r2, r3, r12\n smlal r1, r2, r3, r12\n"
                        "smlabb r1, r2, r3, r1\n")
// A call and return: mov 1, bl (1 + P, P = 1 for an immediate branch = 2), the callee's bx lr (1 + P, P = 2 for a
// register branch = 3), mov 1 = 7.
BENCH(bench_call, "mov r12, lr\n bl bench_empty\n mov lr, r12\n")
// A taken branch to a 32-bit instruction at 2 mod 4 refills one cycle longer: b (1 + 1 + 1) + add.w 1 = 4.
BENCH(bench_unaligned_target, "b 1f\n nop\n nop\n 1: add.w r1, r1, #1\n")
// IT folded onto the preceding 16-bit CMP: cmp 1 + it 0 + moveq 1 = 2.
BENCH(bench_it, "cmp r0, r0\n it eq\n moveq r1, #1\n")

static const Bench kBenches[] = {bench_empty, bench_ldr8, bench_ldr_chase, bench_ldr_str, bench_str4,
                                 bench_add_ldr, bench_ldm4, bench_smlad_loop, bench_branch_loop,
                                 bench_multiplies, bench_call, bench_it, bench_unaligned_target};
static uint32_t g_buffer[16];

int main(void) {
  g_buffer[8] = (uint32_t)&g_buffer[0];  // bench_ldr_chase loads this pointer, then through it
  for (unsigned i = 0; i < sizeof(kBenches) / sizeof(kBenches[0]); ++i) {
    Bench volatile bench = kBenches[i];
    ke_cycles_begin();
    bench(g_buffer);
    ke_cycles_end();
  }
  return 0;
}

// Reset: run main, then semihosting SYS_EXIT (0x18) with ADP_Stopped_ApplicationExit (0x20026).
__attribute__((naked, noreturn)) void reset(void) {
  __asm__ volatile("bl main\n movs r0, #0x18\n ldr r1, =0x20026\n bkpt 0xab\n b .\n");
}
extern uint32_t __stack_top;
__attribute__((section(".vectors"), used)) const void* const kVectors[2] = {&__stack_top, (void*)reset};
