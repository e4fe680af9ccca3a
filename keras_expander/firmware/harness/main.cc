// keras-expander firmware harness: runs a TFLite Micro model on a file of input sequences and reports
// measurements. The same source builds for the host (g++) and for Cortex-M (bare metal, semihosting I/O, QEMU).
//
// inputs.bin:  "KEIN", uint32 count, uint32 bytes per input, uint32 arena limit (0: the whole static arena; a
//              smaller limit lets the arena search probe sizes without relinking), then count raw input tensors
//              (already quantized).
// outputs.bin: count raw output tensors, in order.
// stdout:      "KE <key> <value>" lines that keras_expander.firmware parses, and TFLM's own error messages.
//
// Every sequence starts from reset variable tensors (the LSTM state), as keras_expander.runtime does.
// On Cortex-M the instruction count of each Invoke comes from SysTick under `qemu -icount shift=0` (one
// instruction per virtual nanosecond; SysTick counts the board's processor clock, -DKE_SYSTICK_HZ=<Hz>: at the
// 25 MHz of the mps2 boards one tick is 40 instructions). These are instructions, not cycles: QEMU is not
// cycle-accurate.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "model_data.h"
#include "model_op_resolver.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

// The static arena (arena.cc, compiled with -DKE_ARENA_BYTES=<bytes>).
extern uint8_t g_tensor_arena[];
extern const size_t g_tensor_arena_bytes;

#if defined(KE_CORTEX_M)
#include CMSIS_DEVICE_ARM_CORTEX_M_XX_HEADER_FILE
#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"

extern "C" uint32_t __StackLimit;  // NOLINT: linker symbols of the CMSIS gcc linker script
extern "C" uint32_t __StackTop;    // NOLINT

namespace {

constexpr uint32_t kSysTickReload = 0xFFFFFFu;
// Instructions per tick = 1e9 / KE_SYSTICK_HZ (1 instruction/ns under -icount) as a reduced fraction, so that the
// conversion inside the measured window is a multiply and a shift (40/1 at 25 MHz, 125/4 at 32 MHz), no division.
constexpr uint64_t kTickGcd = std::gcd<uint64_t, uint64_t>(1000000000u, KE_SYSTICK_HZ);
constexpr uint64_t kInstructionsPerTickNum = 1000000000u / kTickGcd;
constexpr uint64_t kInstructionsPerTickDen = KE_SYSTICK_HZ / kTickGcd;
constexpr uint32_t kStackPaint = 0xA5A5A5A5u;
volatile uint32_t g_systick_wraps = 0;

// TFLM's TFLITE_ABORT on MCUs (tensorflow/lite/kernels/op_macros.h, AbortImpl) prints "HALTED" and spins
// forever, which would hang QEMU until its time-out (a failed TF_LITE_ASSERT, e.g. a kernel's Prepare in an
// arena that is too small): end the program with an error status instead.
void LogToStdout(const char* message) {
  fputs(message, stdout);
  if (strcmp(message, "HALTED") == 0) {
    fputs("\nKE error TFLM halted (TFLITE_ABORT)\n", stdout);
    exit(5);
  }
}

void StartInstructionCounter() {
  SysTick->LOAD = kSysTickReload;
  SysTick->VAL = 0;
  SysTick->CTRL = SysTick_CTRL_CLKSOURCE_Msk | SysTick_CTRL_TICKINT_Msk | SysTick_CTRL_ENABLE_Msk;
}

// Ticks since StartInstructionCounter, robust to a wrap between the two reads.
uint64_t Ticks() {
  uint32_t wraps, value;
  do {
    wraps = g_systick_wraps;
    value = SysTick->VAL;
  } while (wraps != g_systick_wraps);
  return static_cast<uint64_t>(wraps) * (kSysTickReload + 1) + (kSysTickReload - value);
}

uint64_t Instructions() { return Ticks() * kInstructionsPerTickNum / kInstructionsPerTickDen; }

// Fills the unused stack below the current frame with a pattern; StackBytesUsed finds the deepest overwrite.
__attribute__((noinline)) void PaintStack() {
  uint32_t* limit = &__StackLimit;
  uint32_t* here = reinterpret_cast<uint32_t*>(__get_MSP()) - 64;  // leave this call's own frame alone
  for (uint32_t* word = limit; word < here; ++word) *word = kStackPaint;
}

uint32_t StackBytesUsed() {
  uint32_t* word = &__StackLimit;
  while (word < &__StackTop && *word == kStackPaint) ++word;
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(&__StackTop) - reinterpret_cast<uintptr_t>(word));
}

}  // namespace

extern "C" void SysTick_Handler(void) { g_systick_wraps = g_systick_wraps + 1; }

// CMSIS' default fault handler spins forever, which would hang QEMU until its time-out (an arena that is too
// small can end in a fault on bare metal): report it and end the program instead.
extern "C" void HardFault_Handler(void) {
  fputs("KE error hard fault\n", stdout);
  exit(4);
}
#else
namespace {
uint64_t Instructions() { return 0; }
}  // namespace
#endif

// Marker functions around each Invoke: keras_expander.firmware.cycles estimates cycles over exactly the
// instructions QEMU executes between them (noipa: never inlined, folded into one or called away).
extern "C" __attribute__((noipa)) void ke_cycles_begin(void) { __asm__ volatile("" ::: "memory"); }
extern "C" __attribute__((noipa)) void ke_cycles_end(void) { __asm__ volatile("" ::: "memory"); }

namespace {

// newlib-nano's printf has no %llu: print 64-bit counts digit by digit.
void PrintValue(const char* key, uint64_t value) {
  char digits[21];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  printf("KE %s ", key);
  while (n > 0) putchar(digits[--n]);
  putchar('\n');
}

int Fail(const char* what) {
  printf("KE error %s\n", what);
  return 3;
}

}  // namespace

int main(void) {
#if defined(KE_CORTEX_M)
  RegisterDebugLogCallback(LogToStdout);
  StartInstructionCounter();
#endif
  const tflite::Model* model = tflite::GetModel(g_model);
  if (model->version() != TFLITE_SCHEMA_VERSION) return Fail("model schema version differs from the runtime's");
  static ModelOpResolver resolver;
  if (RegisterModelOps(resolver) != kTfLiteOk) return Fail("op registration failed");
  FILE* inputs = fopen("inputs.bin", "rb");
  FILE* outputs = fopen("outputs.bin", "wb");
  if (inputs == nullptr || outputs == nullptr) return Fail("cannot open inputs.bin or outputs.bin");
  char magic[4];
  uint32_t count = 0, bytes = 0, arena_limit = 0;
  if (fread(magic, 1, 4, inputs) != 4 || memcmp(magic, "KEIN", 4) != 0 || fread(&count, 4, 1, inputs) != 1 ||
      fread(&bytes, 4, 1, inputs) != 1 || fread(&arena_limit, 4, 1, inputs) != 1) {
    return Fail("inputs.bin has no KEIN header");
  }
  const size_t arena_bytes =
      (arena_limit != 0 && arena_limit < g_tensor_arena_bytes) ? arena_limit : g_tensor_arena_bytes;
  static tflite::MicroInterpreter interpreter(model, resolver, g_tensor_arena, arena_bytes);
  if (interpreter.AllocateTensors() != kTfLiteOk) return Fail("AllocateTensors failed");
  printf("KE arena_used_bytes %u\n", static_cast<unsigned>(interpreter.arena_used_bytes()));
  printf("KE arena_bytes %u\n", static_cast<unsigned>(arena_bytes));

  TfLiteTensor* input = interpreter.input(0);
  TfLiteTensor* output = interpreter.output(0);
  if (bytes != input->bytes) return Fail("input size in inputs.bin differs from the model's input tensor");

  uint64_t total = 0, first = 0, least = UINT64_MAX, most = 0;
  for (uint32_t n = 0; n < count; ++n) {
    if (fread(input->data.raw, 1, bytes, inputs) != bytes) return Fail("inputs.bin is shorter than its header");
    if (interpreter.Reset() != kTfLiteOk) return Fail("Reset failed");
#if defined(KE_CORTEX_M)
    if (n == 0) PaintStack();
#endif
    const uint64_t start = Instructions();
    ke_cycles_begin();
    const TfLiteStatus invoked = interpreter.Invoke();
    ke_cycles_end();
    const uint64_t used = Instructions() - start;
    if (invoked != kTfLiteOk) return Fail("Invoke failed");
#if defined(KE_CORTEX_M)
    if (n == 0) printf("KE stack_bytes %u\n", static_cast<unsigned>(StackBytesUsed()));
#endif
    if (n == 0) first = used;
    total += used;
    least = used < least ? used : least;
    most = used > most ? used : most;
    if (fwrite(output->data.raw, 1, output->bytes, outputs) != output->bytes) return Fail("cannot write outputs");
  }
  fclose(inputs);
  fclose(outputs);
  PrintValue("inferences", count);
  PrintValue("instructions_total", total);
  PrintValue("instructions_first", first);
  PrintValue("instructions_min", count ? least : 0);
  PrintValue("instructions_max", most);
  printf("KE done\n");
  return 0;
}
