// KE_SPARSE_LSTM_V1: TFLM's int8 UNIDIRECTIONAL_SEQUENCE_LSTM (int8
// activations and weights, int16 cell state, int32 bias: the 8x8->16 path)
// with its eight gate weight matrices stored sparse and read in place.
//
// Weight format. Inputs 1-8 (input_to_{input,forget,cell,output} and
// recurrent_to_{input,forget,cell,output}) each hold one int8 tensor of shape
// [blob_bytes] with the original per-tensor scale (zero point 0). The blob
// encodes the dense [rows, cols] matrix (rows = n_cell; cols = n_input or
// n_output), little-endian, unaligned:
//   uint16 rows, uint16 cols, uint8 W (index bytes: 1 if cols <= 255 else 2),
//   3 reserved zero bytes; rows counts (W bytes each); nnz column indices
//   (W bytes each, ascending within a row); nnz int8 values.
// Byte cost: 8 + W * (rows + nnz) + nnz, against rows * cols dense.
// Example: LSTM(128) over 28 inputs at 90 % sparsity keeps about 7,990 of
// 79,872 weights (W = 1 throughout): about 17,070 bytes of blobs instead of
// 79,872.
//
// All other inputs (input, biases, variable hidden/cell state) and the
// output are those of the stock op, in the same positions. Custom options:
// a FlexBuffer map with every key of TfLiteUnidirectionalSequenceLSTMParams:
// "version" (1), "fused_activation_function", "cell_clip", "proj_clip",
// "time_major", "asymmetric_quantize_inputs" (false),
// "diagonal_recurrent_tensors" (false).
//
// Exactness. The stock kernel computes each gate as
//   sat16(clamp(requant(bias + W_x (x - zp_x))) + clamp(requant(W_h (h - zp_h))))
// with TFLM's reference int8 FullyConnected. A zero weight adds exactly 0 to
// the int32 accumulator, so summing only the stored non-zeros gives the same
// accumulator. Requantization, clamping, the saturating add, the gate
// nonlinearities and the cell/hidden updates use TFLM's own parameters
// (PrepareGateParametersInteger, computed in Prepare) and reimplement, inline
// and fused per element, the integer arithmetic of TFLM's helpers
// (lstm_internal::Sigmoid, Tanh, UpdateLstmCell, UpdateLstmHidden), so every
// output byte and the final state match the stock kernel. A cheaper
// requantization (SMMULR) is used only where Prepare proves it exact
// (sparse::RequantizeFast; bounds from the constant weights and biases).
//
// Work. Once per time step the input plus its input offset (-zero point) is
// widened to int16 (the hidden state is widened by the previous step's hidden
// update), so the inner loop per non-zero is one index load, one value load,
// one activation load and one multiply-accumulate. On Cortex-M4 the gate rows
// with one-byte indices run Thumb-2 assembly (below): about 15 instructions
// per gate row and matrix (count, table branch, requantization, saturation,
// store) plus 4 per non-zero. The recurrent product is added into the gate
// buffer in place, so the stock kernel's fourth scratch buffer (its recurrent
// FC output) is free to hold the widened hidden state. Per step: forget,
// input and cell gate pre-activations, one fused pass for their
// nonlinearities and the cell update, the output gate, one fused pass for the
// hidden update and output (on Cortex-M4 both in assembly as well: about 81
// instructions per cell and step). Measured (GCC 12 -O2, QEMU instruction
// counts, sequential-MNIST LSTM(128), 28 steps): 1.56 M instructions per
// inference (1.98 M cycles, estimate) at 90 % sparsity and 1.11 M (1.47 M
// cycles) at 95 %, against 6.14 M instructions for CMSIS-NN's dense kernel
// and 25.2 M for TFLM's reference kernel. On Cortex-M55 (Helium) the gate
// rows run MVE assembly instead (below: gathers of the int8 activations by
// index, one VMLADAV per row of up to 16 non-zeros, four rows requantized per
// vector) when every blob has one-byte indices and n_cell % 4 == 0.
//
// Arena: the stock kernel's four n_batch x n_cell int16 scratch buffers plus
// n_input int16 (times n_batch when time major) for the widened input; with
// the MVE rows also 8 x n_cell int32 of persistent effective biases (the
// size of CMSIS-NN's LSTM kernel sums: 4,096 bytes for LSTM(128)).

#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <limits>

#include "flatbuffers/flexbuffers.h"
#include "sparse_ops.h"
#include "sparse_weights.h"
#include "thumb_function.h"
#include "tensorflow/lite/c/builtin_op_data.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/kernels/internal/types.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/lstm_eval.h"
#include "tensorflow/lite/micro/kernels/lstm_shared.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace keras_expander {
namespace {

// ---------------------------------------------------------------------------
// Cortex-M4 gate-row loops in Thumb-2 assembly (index width 1 and the fast
// requantizations; the C++ passes below handle every other case and the
// host). GCC kept about 30 instructions of per-row set-up and spilled the
// block loop's registers; here the 32 most recent non-zeros of a row run as
// straight-line slots entered by a table branch (TBH; 16 bytes per slot),
// so a row costs about 15 instructions plus 4 per non-zero, with every
// constant in a register. Rows with more than 32 non-zeros run the excess in
// a loop first; the table has an entry for every count a one-byte index
// allows (those above 32 lead to that loop), so no row compares its count.
// The arithmetic is that of InputFcPass / RecurrentFcPass with
// sparse::RequantizeFast (the host and Cortex-M4 tests compare both with the
// stock kernels).
#if KE_SPARSE_USE_DSP && !TFLITE_SINGLE_ROUNDING && \
    !defined(KE_SPARSE_USE_TFLM_REQUANTIZE)
#define KE_SPARSE_USE_ASM 1

// Field offsets are fixed by the assembly below (static_asserts check them).
struct GateRowsArgs {
  const uint8_t* counts;   // 0: one count byte per row
  const uint8_t* indices;  // 4: column index bytes
  const int8_t* values;    // 8: int8 non-zeros
  const int16_t* x;        // 12: activations + input offset (int16)
  int16_t* out;            // 16: first output row
  int16_t* out_end;        // 20: one past the last output row
  int32_t multiplier;      // 24
  int32_t pre_shift;       // 28: FastRequantizer::pre_shift (left mode)
  int32_t half;            // 32: FastRequantizer::half (right mode)
  int32_t right_shift;     // 36: FastRequantizer::right_shift (right mode)
  const int32_t* bias;     // 40: int32 bias per row (input rows only)
};
static_assert(offsetof(GateRowsArgs, bias) == 40, "assembly field offsets");

extern "C" {
// out[r] = sat16(requant(bias[r] + W_x[r] . x)), left / right fast mode.
void ke_sparse_input_rows_left(const GateRowsArgs* args);
void ke_sparse_input_rows_right(const GateRowsArgs* args);
// out[r] = sat16(out[r] + sat16(requant(W_h[r] . x))). An empty row runs
// the requantization of 0, which is 0: rare under the degree floor.
void ke_sparse_recurrent_rows_left(const GateRowsArgs* args);
void ke_sparse_recurrent_rows_right(const GateRowsArgs* args);
}

// Registers: r0 counts, r1 indices, r2 values, r3 x, r4 out, r5 out_end,
// r6 multiplier, r7 pre_shift (left) or half (right), r8 right_shift,
// r9 accumulator, r10 row count, r11 index then activation, r12 bias,
// lr weight. TBH jumps to the slot that leaves `count` slots to run (slots
// word-aligned: a branch to a 32-bit instruction at 2 mod 4 costs a cycle
// more). The recurrent rows have r12 free and run non-zeros in pairs
// (KE_PAIR: the six loads pipeline, none after a write-back of its base
// register: 9 cycles for two non-zeros against 10): an even count enters
// the even block, an odd one the odd block, which ends with a single slot;
// each block has its own row end. The right shift's rounding: SMMLAR adds
// `half`, and 2 * acc >> 31 stands for the product's sign (they differ only
// where the product rounds to 0, which both shift to 0). QADD16's low lane
// is the saturating int16 add of the recurrent product to the gate.
__asm__(KE_THUMB_FUNCTION_MACRO R"(
  .macro KE_SLOT
    ldrb.w r11, [r1], #1
    ldrsb.w lr, [r2], #1
    ldrsh.w r11, [r3, r11, lsl #1]
    smlabb r9, lr, r11, r9
  .endm
  .macro KE_PAIR
    ldrb.w r12, [r1, #1]
    ldrb.w r11, [r1], #2
    ldrsb.w r10, [r2, #1]
    ldrsb.w lr, [r2], #2
    ldrsh.w r11, [r3, r11, lsl #1]
    ldrsh.w r12, [r3, r12, lsl #1]
    smlabb r9, lr, r11, r9
    smlabb r9, r10, r12, r9
  .endm
  .macro KE_ROW_END recurrent, right
  .if \right
  lsls.w r9, r9, #1
  smmlar r11, r9, r6, r7
  add.w r11, r11, r9, asr #31
  asr.w r9, r11, r8
  .else
  lsl.w r9, r9, r7
  smmulr r9, r9, r6
  .endif
  ssat r9, #16, r9
  .if \recurrent
  ldrh.w r10, [r4]
  qadd16 r9, r9, r10
  .endif
  strh r9, [r4], #2
  cmp r4, r5
  bne 1b
  .endm
  .macro KE_ROWS name, recurrent, right
  KE_FUNCTION \name
  push {r4-r11, lr}
  ldr r1, [r0, #4]
  ldr r2, [r0, #8]
  ldr r3, [r0, #12]
  ldr r4, [r0, #16]
  ldr r5, [r0, #20]
  ldr r6, [r0, #24]
  .if \right
  ldr r7, [r0, #32]
  ldr r8, [r0, #36]
  .else
  ldr r7, [r0, #28]
  .endif
  ldr r12, [r0, #40]
  ldr r0, [r0, #0]
  cmp r4, r5
  beq 9f
  .balign 4
1:
  ldrb r10, [r0], #1
  .if \recurrent
  mov.w r9, #0
  .else
  ldr r9, [r12], #4
  .endif
2:
  tbh [pc, r10, lsl #1]
.Ltable\@:
  .set ke_count, 0
  .rept 256
  .if ke_count > 32
  .short (.Lover\@ - .Ltable\@) / 2
  .elseif \recurrent
  .if ke_count % 2
  .short ((.Lodd\@ - .Ltable\@) - 32 * (ke_count / 2)) / 2
  .else
  .short ((.Leven\@ - .Ltable\@) - 32 * (ke_count / 2)) / 2
  .endif
  .else
  .short ((.Lslots\@ - .Ltable\@) + 16 * (32 - ke_count)) / 2
  .endif
  .set ke_count, ke_count + 1
  .endr
  .balign 4
  .if \recurrent
  .rept 16
  KE_PAIR
  .endr
.Leven\@:
  KE_ROW_END \recurrent, \right
  b 9f
  .balign 4
  .rept 15
  KE_PAIR
  .endr
.Lodd\@:
  KE_SLOT
  .else
.Lslots\@:
  .rept 32
  KE_SLOT
  .endr
  .endif
  KE_ROW_END \recurrent, \right
9:
  pop {r4-r11, pc}
.Lover\@:
  sub r10, r10, #32
7:
  KE_SLOT
  subs r10, #1
  bne 7b
  mov r10, #32
  b 2b
  .size \name, . - \name
  .endm
  KE_ROWS ke_sparse_input_rows_left, 0, 0
  KE_ROWS ke_sparse_input_rows_right, 0, 1
  KE_ROWS ke_sparse_recurrent_rows_left, 1, 0
  KE_ROWS ke_sparse_recurrent_rows_right, 1, 1
  .purgem KE_SLOT
  .purgem KE_PAIR
  .purgem KE_ROW_END
  .purgem KE_ROWS
  .purgem KE_FUNCTION
  .text
)");

// TFLM's Sigmoid16 / Tanh16 table interpolation as one SMLAD over a signed
// index (in >> 9, in >> 8): each word packs (lo << 16) | slope with the
// sign's mirror image, the rounding and the output offset folded in, so the
// only per-sign term is the accumulator's (in >> 31). sigmoid = SMLAD(e,
// (512 << 16) | (in & 511), 2^24 + (in >> 31)) >> 10 for in = 3x, tanh =
// SMLAD(e, (256 << 16) | (in & 255), 128 + (in >> 31)) >> 8 with the index
// saturated to [-256, 255] (entries -256 and 255 are TFLM's saturated value,
// slope 0). Prepare checks every word against tflite::sigmoid_table_uint16
// (PairsMatchTflm) and otherwise keeps the C++ passes.
constexpr int kSigmoidPairsMid = 192;
constexpr int kTanhPairsMid = 256;
alignas(4) constexpr uint32_t kSigmoidPairs[2 * kSigmoidPairsMid] = {
    0x80170001, 0x80180001, 0x80190001, 0x801a0001, 0x801b0001, 0x801c0001,
    0x801d0001, 0x801e0002, 0x80200001, 0x80210001, 0x80220002, 0x80240001,
    0x80250002, 0x80270001, 0x80280002, 0x802a0002, 0x802c0002, 0x802e0002,
    0x80300001, 0x80310003, 0x80340002, 0x80360002, 0x80380002, 0x803a0003,
    0x803d0002, 0x803f0003, 0x80420003, 0x80450003, 0x80480003, 0x804b0003,
    0x804e0003, 0x80510003, 0x80540004, 0x80580004, 0x805c0003, 0x805f0004,
    0x80630005, 0x80680004, 0x806c0004, 0x80700005, 0x80750005, 0x807a0005,
    0x807f0006, 0x80850005, 0x808a0006, 0x80900006, 0x80960006, 0x809c0007,
    0x80a30007, 0x80aa0007, 0x80b10008, 0x80b90007, 0x80c00008, 0x80c80009,
    0x80d10009, 0x80da0009, 0x80e30009, 0x80ec000a, 0x80f6000b, 0x8101000b,
    0x810c000b, 0x8117000c, 0x8123000c, 0x812f000d, 0x813c000d, 0x8149000e,
    0x8157000f, 0x8166000f, 0x8175000f, 0x81840011, 0x81950011, 0x81a60012,
    0x81b80012, 0x81ca0013, 0x81dd0015, 0x81f20014, 0x82060016, 0x821c0017,
    0x82330018, 0x824b0018, 0x8263001a, 0x827d001b, 0x8298001c, 0x82b4001d,
    0x82d1001e, 0x82ef0020, 0x830f0021, 0x83300022, 0x83520023, 0x83750026,
    0x839b0026, 0x83c10028, 0x83e9002a, 0x8413002c, 0x843f002d, 0x846c0030,
    0x849c0031, 0x84cd0033, 0x85000035, 0x85350038, 0x856d003a, 0x85a7003c,
    0x85e3003e, 0x86210041, 0x86620044, 0x86a60046, 0x86ec004a, 0x8736004c,
    0x8782004f, 0x87d10052, 0x88230056, 0x88790059, 0x88d2005d, 0x892f0060,
    0x898f0064, 0x89f30068, 0x8a5b006c, 0x8ac70070, 0x8b370075, 0x8bac0079,
    0x8c25007e, 0x8ca30082, 0x8d250088, 0x8dad008c, 0x8e390092, 0x8ecb0097,
    0x8f62009e, 0x900000a2, 0x90a200a9, 0x914b00af, 0x91fa00b6, 0x92b000bc,
    0x936c00c3, 0x942f00ca, 0x94f900d1, 0x95ca00d8, 0x96a200e0, 0x978200e7,
    0x986900f0, 0x995900f8, 0x9a510100, 0x9b510108, 0x9c590111, 0x9d6a011b,
    0x9e850123, 0x9fa8012c, 0xa0d40136, 0xa20a0140, 0xa34a0149, 0xa4930154,
    0xa5e7015d, 0xa7440168, 0xa8ac0172, 0xaa1e017d, 0xab9b0187, 0xad220192,
    0xaeb4019c, 0xb05001a8, 0xb1f801b2, 0xb3aa01be, 0xb56801c8, 0xb73001d3,
    0xb90301de, 0xbae101e9, 0xbcca01f4, 0xbebe01ff, 0xc0bd0209, 0xc2c60214,
    0xc4da021e, 0xc6f80228, 0xc9200232, 0xcb52023c, 0xcd8e0245, 0xcfd3024f,
    0xd2220257, 0xd4790260, 0xd6d90268, 0xd9410270, 0xdbb10278, 0xde29027e,
    0xe0a70285, 0xe32c028b, 0xe5b70291, 0xe8480295, 0xeadd029b, 0xed78029e,
    0xf01602a2, 0xf2b802a4, 0xf55c02a8, 0xf80402a8, 0xfaac02aa, 0xfd5602ab,
    0x000102ab, 0x02ac02aa, 0x055602a8, 0x07fe02a8, 0x0aa602a4, 0x0d4a02a2,
    0x0fec029e, 0x128a029b, 0x15250295, 0x17ba0291, 0x1a4b028b, 0x1cd60285,
    0x1f5b027e, 0x21d90278, 0x24510270, 0x26c10268, 0x29290260, 0x2b890257,
    0x2de0024f, 0x302f0245, 0x3274023c, 0x34b00232, 0x36e20228, 0x390a021e,
    0x3b280214, 0x3d3c0209, 0x3f4501ff, 0x414401f4, 0x433801e9, 0x452101de,
    0x46ff01d3, 0x48d201c8, 0x4a9a01be, 0x4c5801b2, 0x4e0a01a8, 0x4fb2019c,
    0x514e0192, 0x52e00187, 0x5467017d, 0x55e40172, 0x57560168, 0x58be015d,
    0x5a1b0154, 0x5b6f0149, 0x5cb80140, 0x5df80136, 0x5f2e012c, 0x605a0123,
    0x617d011b, 0x62980111, 0x63a90108, 0x64b10100, 0x65b100f8, 0x66a900f0,
    0x679900e7, 0x688000e0, 0x696000d8, 0x6a3800d1, 0x6b0900ca, 0x6bd300c3,
    0x6c9600bc, 0x6d5200b6, 0x6e0800af, 0x6eb700a9, 0x6f6000a2, 0x7002009e,
    0x70a00097, 0x71370092, 0x71c9008c, 0x72550088, 0x72dd0082, 0x735f007e,
    0x73dd0079, 0x74560075, 0x74cb0070, 0x753b006c, 0x75a70068, 0x760f0064,
    0x76730060, 0x76d3005d, 0x77300059, 0x77890056, 0x77df0052, 0x7831004f,
    0x7880004c, 0x78cc004a, 0x79160046, 0x795c0044, 0x79a00041, 0x79e1003e,
    0x7a1f003c, 0x7a5b003a, 0x7a950038, 0x7acd0035, 0x7b020033, 0x7b350031,
    0x7b660030, 0x7b96002d, 0x7bc3002c, 0x7bef002a, 0x7c190028, 0x7c410026,
    0x7c670026, 0x7c8d0023, 0x7cb00022, 0x7cd20021, 0x7cf30020, 0x7d13001e,
    0x7d31001d, 0x7d4e001c, 0x7d6a001b, 0x7d85001a, 0x7d9f0018, 0x7db70018,
    0x7dcf0017, 0x7de60016, 0x7dfc0014, 0x7e100015, 0x7e250013, 0x7e380012,
    0x7e4a0012, 0x7e5c0011, 0x7e6d0011, 0x7e7e000f, 0x7e8d000f, 0x7e9c000f,
    0x7eab000e, 0x7eb9000d, 0x7ec6000d, 0x7ed3000c, 0x7edf000c, 0x7eeb000b,
    0x7ef6000b, 0x7f01000b, 0x7f0c000a, 0x7f160009, 0x7f1f0009, 0x7f280009,
    0x7f310009, 0x7f3a0008, 0x7f420007, 0x7f490008, 0x7f510007, 0x7f580007,
    0x7f5f0007, 0x7f660006, 0x7f6c0006, 0x7f720006, 0x7f780005, 0x7f7d0006,
    0x7f830005, 0x7f880005, 0x7f8d0005, 0x7f920004, 0x7f960004, 0x7f9a0005,
    0x7f9f0004, 0x7fa30003, 0x7fa60004, 0x7faa0004, 0x7fae0003, 0x7fb10003,
    0x7fb40003, 0x7fb70003, 0x7fba0003, 0x7fbd0003, 0x7fc00003, 0x7fc30002,
    0x7fc50003, 0x7fc80002, 0x7fca0002, 0x7fcc0002, 0x7fce0003, 0x7fd10001,
    0x7fd20002, 0x7fd40002, 0x7fd60002, 0x7fd80002, 0x7fda0001, 0x7fdb0002,
    0x7fdd0001, 0x7fde0002, 0x7fe00001, 0x7fe10001, 0x7fe20002, 0x7fe40001,
    0x7fe50001, 0x7fe60001, 0x7fe70001, 0x7fe80001, 0x7fe90001, 0x7fea0001};
alignas(4) constexpr uint32_t kTanhPairs[2 * kTanhPairsMid] = {
    0x80010000, 0x80010001, 0x80020000, 0x80020000, 0x80020000, 0x80020000,
    0x80020000, 0x80020000, 0x80020000, 0x80020000, 0x80020000, 0x80020001,
    0x80030000, 0x80030000, 0x80030000, 0x80030000, 0x80030000, 0x80030000,
    0x80030000, 0x80030001, 0x80040000, 0x80040000, 0x80040000, 0x80040000,
    0x80040000, 0x80040001, 0x80050000, 0x80050000, 0x80050000, 0x80050000,
    0x80050001, 0x80060000, 0x80060000, 0x80060000, 0x80060001, 0x80070000,
    0x80070000, 0x80070000, 0x80070001, 0x80080000, 0x80080000, 0x80080001,
    0x80090000, 0x80090001, 0x800a0000, 0x800a0000, 0x800a0001, 0x800b0000,
    0x800b0001, 0x800c0000, 0x800c0001, 0x800d0000, 0x800d0001, 0x800e0000,
    0x800e0001, 0x800f0001, 0x80100000, 0x80100001, 0x80110001, 0x80120001,
    0x80130000, 0x80130001, 0x80140001, 0x80150001, 0x80160001, 0x80170001,
    0x80180001, 0x80190001, 0x801a0001, 0x801b0001, 0x801c0001, 0x801d0002,
    0x801f0001, 0x80200001, 0x80210002, 0x80230001, 0x80240002, 0x80260001,
    0x80270002, 0x80290002, 0x802b0002, 0x802d0002, 0x802f0001, 0x80300003,
    0x80330002, 0x80350002, 0x80370002, 0x80390003, 0x803c0002, 0x803e0003,
    0x80410003, 0x80440003, 0x80470003, 0x804a0003, 0x804d0003, 0x80500003,
    0x80530004, 0x80570004, 0x805b0003, 0x805e0004, 0x80620005, 0x80670004,
    0x806b0004, 0x806f0005, 0x80740005, 0x80790005, 0x807e0006, 0x80840005,
    0x80890006, 0x808f0006, 0x80950006, 0x809b0007, 0x80a20007, 0x80a90007,
    0x80b00008, 0x80b80007, 0x80bf0008, 0x80c70009, 0x80d00009, 0x80d90009,
    0x80e20009, 0x80eb000a, 0x80f5000b, 0x8100000b, 0x810b000b, 0x8116000c,
    0x8122000c, 0x812e000d, 0x813b000d, 0x8148000e, 0x8156000f, 0x8165000f,
    0x8174000f, 0x81830011, 0x81940011, 0x81a50012, 0x81b70012, 0x81c90013,
    0x81dc0015, 0x81f10014, 0x82050016, 0x821b0017, 0x82320018, 0x824a0018,
    0x8262001a, 0x827c001b, 0x8297001c, 0x82b3001d, 0x82d0001e, 0x82ee0020,
    0x830e0021, 0x832f0022, 0x83510023, 0x83740026, 0x839a0026, 0x83c00028,
    0x83e8002a, 0x8412002c, 0x843e002d, 0x846b0030, 0x849b0031, 0x84cc0033,
    0x84ff0035, 0x85340038, 0x856c003a, 0x85a6003c, 0x85e2003e, 0x86200041,
    0x86610044, 0x86a50046, 0x86eb004a, 0x8735004c, 0x8781004f, 0x87d00052,
    0x88220056, 0x88780059, 0x88d1005d, 0x892e0060, 0x898e0064, 0x89f20068,
    0x8a5a006c, 0x8ac60070, 0x8b360075, 0x8bab0079, 0x8c24007e, 0x8ca20082,
    0x8d240088, 0x8dac008c, 0x8e380092, 0x8eca0097, 0x8f61009e, 0x8fff00a2,
    0x90a100a9, 0x914a00af, 0x91f900b6, 0x92af00bc, 0x936b00c3, 0x942e00ca,
    0x94f800d1, 0x95c900d8, 0x96a100e0, 0x978100e7, 0x986800f0, 0x995800f8,
    0x9a500100, 0x9b500108, 0x9c580111, 0x9d69011b, 0x9e840123, 0x9fa7012c,
    0xa0d30136, 0xa2090140, 0xa3490149, 0xa4920154, 0xa5e6015d, 0xa7430168,
    0xa8ab0172, 0xaa1d017d, 0xab9a0187, 0xad210192, 0xaeb3019c, 0xb04f01a8,
    0xb1f701b2, 0xb3a901be, 0xb56701c8, 0xb72f01d3, 0xb90201de, 0xbae001e9,
    0xbcc901f4, 0xbebd01ff, 0xc0bc0209, 0xc2c50214, 0xc4d9021e, 0xc6f70228,
    0xc91f0232, 0xcb51023c, 0xcd8d0245, 0xcfd2024f, 0xd2210257, 0xd4780260,
    0xd6d80268, 0xd9400270, 0xdbb00278, 0xde28027e, 0xe0a60285, 0xe32b028b,
    0xe5b60291, 0xe8470295, 0xeadc029b, 0xed77029e, 0xf01502a2, 0xf2b702a4,
    0xf55b02a8, 0xf80302a8, 0xfaab02aa, 0xfd5502ab, 0x000002ab, 0x02ab02aa,
    0x055502a8, 0x07fd02a8, 0x0aa502a4, 0x0d4902a2, 0x0feb029e, 0x1289029b,
    0x15240295, 0x17b90291, 0x1a4a028b, 0x1cd50285, 0x1f5a027e, 0x21d80278,
    0x24500270, 0x26c00268, 0x29280260, 0x2b880257, 0x2ddf024f, 0x302e0245,
    0x3273023c, 0x34af0232, 0x36e10228, 0x3909021e, 0x3b270214, 0x3d3b0209,
    0x3f4401ff, 0x414301f4, 0x433701e9, 0x452001de, 0x46fe01d3, 0x48d101c8,
    0x4a9901be, 0x4c5701b2, 0x4e0901a8, 0x4fb1019c, 0x514d0192, 0x52df0187,
    0x5466017d, 0x55e30172, 0x57550168, 0x58bd015d, 0x5a1a0154, 0x5b6e0149,
    0x5cb70140, 0x5df70136, 0x5f2d012c, 0x60590123, 0x617c011b, 0x62970111,
    0x63a80108, 0x64b00100, 0x65b000f8, 0x66a800f0, 0x679800e7, 0x687f00e0,
    0x695f00d8, 0x6a3700d1, 0x6b0800ca, 0x6bd200c3, 0x6c9500bc, 0x6d5100b6,
    0x6e0700af, 0x6eb600a9, 0x6f5f00a2, 0x7001009e, 0x709f0097, 0x71360092,
    0x71c8008c, 0x72540088, 0x72dc0082, 0x735e007e, 0x73dc0079, 0x74550075,
    0x74ca0070, 0x753a006c, 0x75a60068, 0x760e0064, 0x76720060, 0x76d2005d,
    0x772f0059, 0x77880056, 0x77de0052, 0x7830004f, 0x787f004c, 0x78cb004a,
    0x79150046, 0x795b0044, 0x799f0041, 0x79e0003e, 0x7a1e003c, 0x7a5a003a,
    0x7a940038, 0x7acc0035, 0x7b010033, 0x7b340031, 0x7b650030, 0x7b95002d,
    0x7bc2002c, 0x7bee002a, 0x7c180028, 0x7c400026, 0x7c660026, 0x7c8c0023,
    0x7caf0022, 0x7cd10021, 0x7cf20020, 0x7d12001e, 0x7d30001d, 0x7d4d001c,
    0x7d69001b, 0x7d84001a, 0x7d9e0018, 0x7db60018, 0x7dce0017, 0x7de50016,
    0x7dfb0014, 0x7e0f0015, 0x7e240013, 0x7e370012, 0x7e490012, 0x7e5b0011,
    0x7e6c0011, 0x7e7d000f, 0x7e8c000f, 0x7e9b000f, 0x7eaa000e, 0x7eb8000d,
    0x7ec5000d, 0x7ed2000c, 0x7ede000c, 0x7eea000b, 0x7ef5000b, 0x7f00000b,
    0x7f0b000a, 0x7f150009, 0x7f1e0009, 0x7f270009, 0x7f300009, 0x7f390008,
    0x7f410007, 0x7f480008, 0x7f500007, 0x7f570007, 0x7f5e0007, 0x7f650006,
    0x7f6b0006, 0x7f710006, 0x7f770005, 0x7f7c0006, 0x7f820005, 0x7f870005,
    0x7f8c0005, 0x7f910004, 0x7f950004, 0x7f990005, 0x7f9e0004, 0x7fa20003,
    0x7fa50004, 0x7fa90004, 0x7fad0003, 0x7fb00003, 0x7fb30003, 0x7fb60003,
    0x7fb90003, 0x7fbc0003, 0x7fbf0003, 0x7fc20002, 0x7fc40003, 0x7fc70002,
    0x7fc90002, 0x7fcb0002, 0x7fcd0003, 0x7fd00001, 0x7fd10002, 0x7fd30002,
    0x7fd50002, 0x7fd70002, 0x7fd90001, 0x7fda0002, 0x7fdc0001, 0x7fdd0002,
    0x7fdf0001, 0x7fe00001, 0x7fe10002, 0x7fe30001, 0x7fe40001, 0x7fe50001,
    0x7fe60001, 0x7fe70001, 0x7fe80001, 0x7fe90001, 0x7fea0001, 0x7feb0001,
    0x7fec0001, 0x7fed0000, 0x7fed0001, 0x7fee0001, 0x7fef0001, 0x7ff00000,
    0x7ff00001, 0x7ff10001, 0x7ff20000, 0x7ff20001, 0x7ff30000, 0x7ff30001,
    0x7ff40000, 0x7ff40001, 0x7ff50000, 0x7ff50001, 0x7ff60000, 0x7ff60000,
    0x7ff60001, 0x7ff70000, 0x7ff70001, 0x7ff80000, 0x7ff80000, 0x7ff80001,
    0x7ff90000, 0x7ff90000, 0x7ff90000, 0x7ff90001, 0x7ffa0000, 0x7ffa0000,
    0x7ffa0000, 0x7ffa0001, 0x7ffb0000, 0x7ffb0000, 0x7ffb0000, 0x7ffb0000,
    0x7ffb0001, 0x7ffc0000, 0x7ffc0000, 0x7ffc0000, 0x7ffc0000, 0x7ffc0000,
    0x7ffc0001, 0x7ffd0000, 0x7ffd0000, 0x7ffd0000, 0x7ffd0000, 0x7ffd0000,
    0x7ffd0000, 0x7ffd0000, 0x7ffd0001, 0x7ffe0000, 0x7ffe0000, 0x7ffe0000,
    0x7ffe0000, 0x7ffe0000, 0x7ffe0000, 0x7ffe0000, 0x7ffe0000, 0x7ffe0000,
    0x7ffe0001, 0x7fff0000};

struct CellPassArgs {
  const int16_t* forget;     // 0: gate pre-activations (Q3.12)
  const int16_t* input;      // 4
  const int16_t* cell;       // 8
  int16_t* state;            // 12: cell state, updated in place
  int16_t* state_end;        // 16
  int32_t input_round;       // 20: 2^r + 1 (input Mul shifts right by r)
  int32_t input_shift;       // 24: r + 1
  const uint32_t* sigmoid;   // 28: kSigmoidPairs + kSigmoidPairsMid
  const uint32_t* tanh;      // 32: kTanhPairs + kTanhPairsMid
  int32_t clip;              // 36: quantized cell clip (clip variant)
};
static_assert(offsetof(CellPassArgs, clip) == 36, "assembly field offsets");

// Whether the tables are those tflite::sigmoid_table_uint16 gives.
bool PairsMatchTflm() {
  const uint16_t* t = tflite::sigmoid_table_uint16;
  const auto pack = [](int32_t hi, int32_t lo) {
    return (static_cast<uint32_t>(hi) << 16) | static_cast<uint16_t>(lo);
  };
  for (int j = -kSigmoidPairsMid; j < kSigmoidPairsMid; ++j) {
    const int k = j >= 0 ? j : -j - 1;
    const int32_t lo = j >= 0 ? t[k] + 1 - 32768 : 32769 - t[k + 1];
    if (kSigmoidPairs[j + kSigmoidPairsMid] != pack(lo, t[k + 1] - t[k])) {
      return false;
    }
  }
  for (int j = -kTanhPairsMid; j < kTanhPairsMid; ++j) {
    const int k = j >= 0 ? j : -j - 1;
    const bool saturated = k == 255;  // |in| >= 255 * 256
    const int32_t slope = saturated ? 0 : t[k + 1] - t[k];
    const int32_t lo = j >= 0 ? t[k] - 32768
                              : 32768 - (saturated ? t[255] : t[k + 1]);
    if (kTanhPairs[j + kTanhPairsMid] != pack(lo, slope)) return false;
  }
  return true;
}

extern "C" {
// CellPass<false, true> when both cell Muls have multiplier 2^30 and the
// forget Mul shifts right by 14 (TFLM's Q0.15 x cell-scale Muls); the clip
// variant clamps the new cell state to [-clip, clip] instead of int16.
void ke_sparse_lstm_cell_pass(const CellPassArgs* args);
void ke_sparse_lstm_cell_pass_clip(const CellPassArgs* args);
}

// A Mul by 2^30 with right shift r, RequantizeFast's SMMULR(2p, 2^30) =
// (p + 1) >> 1 followed by its rounding shift, is one shift of p:
// (p + 2^r + 1 + 2 * (p >> 31)) >> (r + 1); the sign of p = s * v (s >= 0 a
// sigmoid) is that of v, or p = 0 where both signs give 0. v is a
// sign-extended int16 (top half v >> 31) and the sigmoid's accumulator
// carries 2^27, so s comes out as s | (2 << 16) and one SMLAD gives
// s * v + 2 * (v >> 31) + rounding.
// Registers: r0-r3 forget, input, cell, state; r4, r5 the tables; r6
// 2^24 + 2^27, r7 128, r8 2^14 + 1 (the forget Mul's rounding); r9-r12, lr
// the element; [sp] state_end, [sp, #4] input_round, [sp, #8] input_shift,
// [sp, #12] -clip. About 47 cycles an element, 54 with the clip (GCC's loop
// and clip loop: about 107 and 11).
__asm__(KE_THUMB_FUNCTION_MACRO R"(
  .macro KE_CELL_PASS name, clip
  KE_FUNCTION \name
  push {r4-r11, lr}
  ldr r9, [r0, #16]
  ldr r10, [r0, #20]
  ldr r11, [r0, #24]
  ldr r12, [r0, #36]
  ldr r4, [r0, #28]
  ldr r5, [r0, #32]
  ldr r1, [r0, #4]
  ldr r2, [r0, #8]
  ldr r3, [r0, #12]
  ldr r0, [r0, #0]
  rsb r12, r12, #0
  push {r9-r12}
  cmp r3, r9
  beq 9f
  mov.w r6, #0x9000000
  movs r7, #128
  movw r8, #16385
  .align 2
1:
  ldrsh.w r9, [r1], #2
  ldrsh.w lr, [r2], #2
  add.w r9, r9, r9, lsl #1
  add.w lr, lr, lr, lsl #1
  asr.w r10, r9, #9
  ssat r11, #9, lr, asr #8
  ldr.w r10, [r4, r10, lsl #2]
  ldr.w r11, [r5, r11, lsl #2]
  mov.w r12, #0x2000000
  bfi r12, r9, #0, #9
  add.w r9, r6, r9, asr #31
  smlad r9, r10, r12, r9
  mov.w r12, #0x1000000
  bfi r12, lr, #0, #8
  add.w lr, r7, lr, asr #31
  smlad lr, r11, r12, lr
  lsr.w r9, r9, #10
  asr.w lr, lr, #8
  ldr r10, [sp, #4]
  ldr r11, [sp, #8]
  smlad r9, r9, lr, r10
  asr.w r9, r9, r11
  ssat r9, #16, r9
  ldrsh.w r10, [r0], #2
  ldrsh.w lr, [r3]
  add.w r10, r10, r10, lsl #1
  asr.w r11, r10, #9
  mov.w r12, #0x2000000
  bfi r12, r10, #0, #9
  add.w r10, r6, r10, asr #31
  ldr.w r11, [r4, r11, lsl #2]
  smlad r10, r11, r12, r10
  .if \clip
  ldr r11, [sp, #12]
  .endif
  lsr.w r10, r10, #10
  smlad r10, r10, lr, r8
  ssat r10, #16, r10, asr #15
  .if \clip
  add r9, r10
  cmp r9, r11
  it lt
  movlt r9, r11
  neg r11, r11
  cmp r9, r11
  it gt
  movgt r9, r11
  .else
  qadd16 r9, r9, r10
  .endif
  strh r9, [r3], #2
  ldr r12, [sp]
  cmp r3, r12
  bne 1b
9:
  add sp, #16
  pop {r4-r11, pc}
  .size \name, . - \name
  .endm
  KE_CELL_PASS ke_sparse_lstm_cell_pass, 0
  KE_CELL_PASS ke_sparse_lstm_cell_pass_clip, 1
  .purgem KE_CELL_PASS
  .purgem KE_FUNCTION
  .text
)");

struct HiddenPassArgs {
  const int16_t* output_gate;  // 0: pre-activations (Q3.12)
  const int16_t* cell_state;   // 4
  int8_t* output;              // 8
  int16_t* hidden16;           // 12: hidden + its input offset
  const int16_t* cell_end;     // 16
  int32_t right_shift;         // 20: output Mul's, 1..31
  int32_t hidden_offset;       // 24
  int32_t tanh_multiplier;     // 28: tanh shift 0
  int32_t multiplier;          // 32
  int32_t rounding;            // 36: 2^(shift - 1) + (zero point << shift)
  const uint32_t* sigmoid;     // 40: kSigmoidPairs + kSigmoidPairsMid
  const uint32_t* tanh;        // 44: kTanhPairs + kTanhPairsMid
};
static_assert(offsetof(HiddenPassArgs, tanh) == 44, "assembly field offsets");

extern "C" {
// HiddenPass<true> when the cell state's Tanh does not shift right; writes
// the output and the widened hidden state (the caller copies the output to
// the hidden state).
void ke_sparse_lstm_hidden_pass(const HiddenPassArgs* args);
}

// RequantizeFast<true> of p = t * o plus the zero point is
// (SMMLAR(2p, M, rounding) + (p >> 31)) >> shift: the zero point is a
// multiple of 2^shift in the rounding term (Prepare checks |rounding| <
// 2^30), and p >> 31 stands for x >> 31 (they differ only where x = 0,
// which both round to the zero point).
// Registers: r0 output_gate, r1 cell_state, r2 output, r3 hidden16, r4, r5
// the tables, r6 2^24, r7 128, r8 multiplier, r9 rounding, r10-r12, lr the
// element; [sp] cell_end, [sp, #4] right_shift, [sp, #8] hidden_offset,
// [sp, #12] tanh_multiplier. About 39 cycles an element (GCC's: about 80).
__asm__(KE_THUMB_FUNCTION_MACRO R"(
  KE_FUNCTION ke_sparse_lstm_hidden_pass
  push {r4-r11, lr}
  ldr r10, [r0, #16]
  ldr r11, [r0, #20]
  ldr r12, [r0, #24]
  ldr lr, [r0, #28]
  ldr r8, [r0, #32]
  ldr r9, [r0, #36]
  ldr r4, [r0, #40]
  ldr r5, [r0, #44]
  ldr r1, [r0, #4]
  ldr r2, [r0, #8]
  ldr r3, [r0, #12]
  ldr r0, [r0, #0]
  push {r10-r12, lr}
  cmp r1, r10
  beq 9f
  mov.w r6, #0x1000000
  movs r7, #128
  .align 2
1:
  ldrsh.w r10, [r0], #2
  ldrsh.w r11, [r1], #2
  ldr r12, [sp, #12]
  add.w r10, r10, r10, lsl #1
  mul r11, r11, r12
  asr.w lr, r10, #9
  mov.w r12, #0x2000000
  bfi r12, r10, #0, #9
  add.w r10, r6, r10, asr #31
  ldr.w lr, [r4, lr, lsl #2]
  smlad r10, lr, r12, r10
  ssat lr, #9, r11, asr #8
  mov.w r12, #0x1000000
  bfi r12, r11, #0, #8
  add.w r11, r7, r11, asr #31
  ldr.w lr, [r5, lr, lsl #2]
  smlad r11, lr, r12, r11
  ldr r12, [sp, #4]
  ldr lr, [sp, #8]
  lsr.w r10, r10, #10
  asr.w r11, r11, #8
  smulbb r10, r10, r11
  lsl.w r10, r10, #1
  smmlar r11, r10, r8, r9
  add.w r11, r11, r10, asr #31
  asr.w r11, r11, r12
  ssat r11, #8, r11
  strb r11, [r2], #1
  add r11, lr
  strh r11, [r3], #2
  ldr r12, [sp]
  cmp r1, r12
  bne 1b
9:
  add sp, #16
  pop {r4-r11, pc}
  .size ke_sparse_lstm_hidden_pass, . - ke_sparse_lstm_hidden_pass
  .purgem KE_FUNCTION
  .text
)");
#else
#define KE_SPARSE_USE_ASM 0
#endif

// ---------------------------------------------------------------------------
// Cortex-M55 (Helium, MVE) gate-row loops. Each row of up to 16 non-zeros is
// one predicated block: VCTP.8 of the row's count, the column indices
// (VLDRB.U8), the values (VLDRB.S8), a gather of the int8 activations at
// those indices (VLDRB.U8 [x, indices]) and one VMLADAV.S8 into the row's
// accumulator; longer rows run further 16-lane blocks out of line. The
// activations are gathered as stored (int8, not widened), so the input
// offset is folded into an effective bias, bias + offset * sum(row), computed
// in Prepare as CMSIS-NN's LSTM computes its kernel sums
// (arm_vector_sum_s8): the accumulator is the stock one modulo 2^32. Four
// rows' accumulators are requantized together with TFLM's
// MultiplyByQuantizedMultiplier arithmetic: VSHL by the left shift and
// VQRDMULH (gemmlowp's SaturatingRoundingDoublingHighMul), or VQRDMULH and
// RoundingDivideByPOT as CMSIS-NN's arm_divide_by_power_of_two_mve writes it
// (a -1 fix-up for negative values, then VRSHL), then VQMOVNB saturates to
// int16 (the recurrent rows add to the gate with VQADD.S16). About 11
// instructions a row (14.5 with its share of the requantization) whatever
// its count up to 16, against 15 + 4 per non-zero in the Thumb-2 loops.
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1) && \
    !defined(__ARM_BIG_ENDIAN) && !TFLITE_SINGLE_ROUNDING && \
    !defined(KE_SPARSE_USE_TFLM_REQUANTIZE)
#define KE_SPARSE_USE_MVE 1

// Field offsets are fixed by the assembly below (static_asserts check them).
struct MveRowsArgs {
  const uint8_t* counts;   // 0: one count byte per row
  const uint8_t* indices;  // 4: column index bytes
  const int8_t* values;    // 8: int8 non-zeros
  const int8_t* x;         // 12: int8 activations as stored
  int16_t* out;            // 16: first output row
  int16_t* out_end;        // 20: one past the last row (rows % 4 == 0)
  int32_t multiplier;      // 24
  int32_t shift;           // 28: TFLM's output_shift (> 0 left, else right)
  const int32_t* bias;     // 32: effective bias per row
};
static_assert(offsetof(MveRowsArgs, bias) == 32, "assembly field offsets");

extern "C" {
// out[r] = sat16(requant(bias[r] + W_x[r] . x)), shift > 0 / shift <= 0.
void ke_sparse_mve_input_rows_left(const MveRowsArgs* args);
void ke_sparse_mve_input_rows_right(const MveRowsArgs* args);
// out[r] = sat16(out[r] + sat16(requant(bias[r] + W_h[r] . h))).
void ke_sparse_mve_recurrent_rows_left(const MveRowsArgs* args);
void ke_sparse_mve_recurrent_rows_right(const MveRowsArgs* args);
// The same for matrices whose rows all have at most 16 non-zeros (no
// count check: 2 instructions a row fewer).
void ke_sparse_mve_input_rows_left_short(const MveRowsArgs* args);
void ke_sparse_mve_input_rows_right_short(const MveRowsArgs* args);
void ke_sparse_mve_recurrent_rows_left_short(const MveRowsArgs* args);
void ke_sparse_mve_recurrent_rows_right_short(const MveRowsArgs* args);
}

using MveRows = void (*)(const MveRowsArgs*);
// [recurrent][left shift][long rows]
constexpr MveRows kMveRows[2][2][2] = {
    {{ke_sparse_mve_input_rows_right_short, ke_sparse_mve_input_rows_right},
     {ke_sparse_mve_input_rows_left_short, ke_sparse_mve_input_rows_left}},
    {{ke_sparse_mve_recurrent_rows_right_short,
      ke_sparse_mve_recurrent_rows_right},
     {ke_sparse_mve_recurrent_rows_left_short,
      ke_sparse_mve_recurrent_rows_left}}};

// Registers: r0 counts, r1 indices, r2 values, r3 x, r4 out, r5 out_end,
// r6 multiplier, r7 the row's count, r8 / r12 / r10 / lr the accumulators of
// rows 0-3 (VMLADAV takes even registers), r9 bias, q3 the shift in every
// lane. A zero count gives an all-false predicate, and VMLADAV of no lanes
// writes 0. The accumulators enter q0 by single-lane VMOVs: GCC 12 (its
// vcreateq) and QEMU 7.2 disagree on the lane order of the two-lane VMOV. The out-of-line block of a row with more than 16 non-zeros
// leaves r7 at the count of its last block, as the in-line path has it.
__asm__(KE_THUMB_FUNCTION_MACRO R"(
  .macro KE_MVE_BLOCK acc, mac
  vctp.8 r7
  vpstttt
  vldrbt.u8 q0, [r1]
  vldrbt.s8 q1, [r2]
  vldrbt.u8 q2, [r3, q0]
  \mac\().s8 \acc, q1, q2
  .endm
  .macro KE_MVE_ROW name, acc, n, long
  ldrb r7, [r0], #1
  KE_MVE_BLOCK \acc, vmladavt
  .if \long
  cmp r7, #16
  bhi \name\()_more\n
\name\()_back\n:
  .endif
  add r1, r7
  add r2, r7
  .endm
  .macro KE_MVE_MORE name, acc, n
\name\()_more\n:
  adds r1, #16
  adds r2, #16
  subs r7, #16
  KE_MVE_BLOCK \acc, vmladavat
  cmp r7, #16
  bhi \name\()_more\n
  b \name\()_back\n
  .endm
  .macro KE_MVE_ROWS name, recurrent, right, long
  KE_FUNCTION \name
  push {r4-r10, lr}
  ldr r1, [r0, #4]
  ldr r2, [r0, #8]
  ldr r3, [r0, #12]
  ldr r4, [r0, #16]
  ldr r5, [r0, #20]
  ldr r6, [r0, #24]
  ldr r7, [r0, #28]
  ldr r9, [r0, #32]
  ldr r0, [r0, #0]
  vdup.32 q3, r7
  cmp r4, r5
  beq 9f
  .balign 4
1:
  KE_MVE_ROW \name, r8, 0, \long
  KE_MVE_ROW \name, r12, 1, \long
  KE_MVE_ROW \name, r10, 2, \long
  KE_MVE_ROW \name, lr, 3, \long
  vmov.32 q0[0], r8
  vmov.32 q0[1], r12
  vmov.32 q0[2], r10
  vmov.32 q0[3], lr
  vldrw.u32 q1, [r9], #16
  vadd.i32 q0, q0, q1
  .if \right
  vqrdmulh.s32 q0, q0, r6
  vand q1, q0, q3
  vshr.s32 q1, q1, #31
  vqadd.s32 q0, q0, q1
  vrshl.s32 q0, q0, q3
  .else
  vshl.s32 q0, q0, q3
  vqrdmulh.s32 q0, q0, r6
  .endif
  vqmovnb.s32 q0, q0
  .if \recurrent
  vldrh.u32 q1, [r4]
  vqadd.s16 q0, q0, q1
  .endif
  vstrh.32 q0, [r4], #8
  cmp r4, r5
  bne 1b
9:
  pop {r4-r10, pc}
  .if \long
  KE_MVE_MORE \name, r8, 0
  KE_MVE_MORE \name, r12, 1
  KE_MVE_MORE \name, r10, 2
  KE_MVE_MORE \name, lr, 3
  .endif
  .size \name, . - \name
  .endm
  KE_MVE_ROWS ke_sparse_mve_input_rows_left, 0, 0, 1
  KE_MVE_ROWS ke_sparse_mve_input_rows_right, 0, 1, 1
  KE_MVE_ROWS ke_sparse_mve_recurrent_rows_left, 1, 0, 1
  KE_MVE_ROWS ke_sparse_mve_recurrent_rows_right, 1, 1, 1
  KE_MVE_ROWS ke_sparse_mve_input_rows_left_short, 0, 0, 0
  KE_MVE_ROWS ke_sparse_mve_input_rows_right_short, 0, 1, 0
  KE_MVE_ROWS ke_sparse_mve_recurrent_rows_left_short, 1, 0, 0
  KE_MVE_ROWS ke_sparse_mve_recurrent_rows_right_short, 1, 1, 0
  .purgem KE_MVE_BLOCK
  .purgem KE_MVE_ROW
  .purgem KE_MVE_MORE
  .purgem KE_MVE_ROWS
  .purgem KE_FUNCTION
  .text
)");
#else
#define KE_SPARSE_USE_MVE 0
#endif

using sparse::LoadIndex;
using sparse::SparseMatrix;
using sparse::SparseRowDot;
using tflite::lstm_internal::LstmStepManager;

// Gate order inside this file; the stock op's tensor indices per gate.
enum GateId { kForget = 0, kInputGate = 1, kCell = 2, kOutputGate = 3 };
constexpr int kGateInputWeights[4] = {
    tflite::kLstmInputToForgetWeightsTensor,
    tflite::kLstmInputToInputWeightsTensor,
    tflite::kLstmInputToCellWeightsTensor,
    tflite::kLstmInputToOutputWeightsTensor};
constexpr int kGateRecurrentWeights[4] = {
    tflite::kLstmRecurrentToForgetWeightsTensor,
    tflite::kLstmRecurrentToInputWeightsTensor,
    tflite::kLstmRecurrentToCellWeightsTensor,
    tflite::kLstmRecurrentToOutputWeightsTensor};
constexpr int kGateBias[4] = {
    tflite::kLstmForgetGateBiasTensor, tflite::kLstmInputGateBiasTensor,
    tflite::kLstmCellGateBiasTensor, tflite::kLstmOutputGateBiasTensor};

// Names of inputs 1-8 for error messages.
const char* const kWeightNames[9] = {
    "",
    "input_to_input_weights",
    "input_to_forget_weights",
    "input_to_cell_weights",
    "input_to_output_weights",
    "recurrent_to_input_weights",
    "recurrent_to_forget_weights",
    "recurrent_to_cell_weights",
    "recurrent_to_output_weights"};

// How a gate FC requantizes its row accumulators: the generic arithmetic,
// or the fast one (sparse::RequantizeFast) when Prepare proved every row's
// |accumulator| small enough, for a left (or zero) or a right shift.
enum RequantMode : int8_t { kGeneric = 0, kFastLeft = 1, kFastRight = 2 };

struct OpDataSparseLstm {
  // The stock kernel's op data: sizes, cell state info, gate FC and
  // inter-gate Mul parameters, its four scratch buffer indices.
  tflite::OpDataLSTM lstm;
  // What the stock op reads from builtin_data, here from custom options.
  TfLiteUnidirectionalSequenceLSTMParams params;
  // Init cannot fail; a bad option is reported by Prepare.
  const char* options_error;
  const char* options_key;
  // n_input int16 per batch row of a step: input + input offset (requested
  // but unused when the MVE rows run: n_input * 2 bytes).
  int input_scratch_index;
  // Per gate (GateId order): input FC and recurrent FC requantization mode.
  RequantMode fc_modes[4][2];
  // Cortex-M55: whether the MVE gate passes run (one-byte indices in every
  // blob, n_cell % 4 == 0, constant biases); false on other targets.
  bool mve;
#if KE_SPARSE_USE_MVE
  // Their effective biases, [gate][input FC, recurrent FC][n_cell] int32
  // (persistent), and per gate and FC whether a row has more than 16
  // non-zeros.
  const int32_t* mve_bias;
  bool mve_long_rows[4][2];
#endif
  // The stock kernel's inter-gate Mul and Tanh parameters, pre-split.
  struct {
    sparse::Requantizer forget_mul;  // forget gate x cell state -> cell
    sparse::Requantizer input_mul;   // input gate x cell gate -> cell
    sparse::Requantizer output_mul;  // tanh(cell) x output gate -> hidden
    // The same, fast (used when fast_mul: all three shift right by 1..31).
    sparse::FastRequantizer forget_fast;
    sparse::FastRequantizer input_fast;
    sparse::FastRequantizer output_fast;
    bool fast_mul;
    int32_t hidden_zero_point;
    // Tanh of the cell state: (c * multiplier + round) >> shift.
    int32_t tanh_multiplier;
    int32_t tanh_shift;
    int32_t tanh_round;
    bool clip_cell;     // cell_clip > 0, as UpdateLstmCell tests it
    int16_t cell_clip;  // quantized
    // Cortex-M4: CellPass<false, true> runs ke_sparse_lstm_cell_pass.
    bool cell_asm;
    int32_t cell_asm_round;  // 2^r + 1, r the input Mul's right shift
    int32_t cell_asm_shift;  // r + 1
    // Cortex-M4: HiddenPass<true> runs ke_sparse_lstm_hidden_pass.
    bool hidden_asm;
    int32_t hidden_asm_rounding;  // 2^(r - 1) + (zero point << r)
  } ew;
};

// ---------------------------------------------------------------------------
// Custom options.

const char* ReadOption(const flexbuffers::Map& map, const char* key,
                       bool numeric, flexbuffers::Reference* value) {
  *value = map[key];
  if (value->IsNull()) return "custom option missing:";
  if (numeric ? !value->IsNumeric() : !(value->IsBool() || value->IsInt() ||
                                        value->IsUInt())) {
    return "custom option has the wrong type:";
  }
  return nullptr;
}

void ParseOptions(const char* buffer, size_t length, OpDataSparseLstm* data) {
  data->options_key = "";
  flexbuffers::Map map = flexbuffers::Map::EmptyMap();
  data->options_error = sparse::ReadOptionsMap(buffer, length, &map);
  if (data->options_error != nullptr) return;
  struct Key {
    const char* name;
    bool numeric;
  };
  static constexpr Key kKeys[] = {{"version", true},
                                  {"fused_activation_function", true},
                                  {"cell_clip", true},
                                  {"proj_clip", true},
                                  {"time_major", false},
                                  {"asymmetric_quantize_inputs", false},
                                  {"diagonal_recurrent_tensors", false}};
  flexbuffers::Reference values[7];
  for (int i = 0; i < 7; ++i) {
    const char* error = ReadOption(map, kKeys[i].name, kKeys[i].numeric,
                                   &values[i]);
    if (error != nullptr) {
      data->options_error = error;
      data->options_key = kKeys[i].name;
      return;
    }
  }
  if (values[0].AsInt64() != 1) {
    data->options_error = "unsupported options version (expected 1):";
    data->options_key = "version";
    return;
  }
  TfLiteUnidirectionalSequenceLSTMParams& p = data->params;
  p.activation = static_cast<TfLiteFusedActivation>(values[1].AsInt32());
  p.cell_clip = values[2].AsFloat();
  p.proj_clip = values[3].AsFloat();
  p.time_major = values[4].AsBool();
  p.asymmetric_quantize_inputs = values[5].AsBool();
  p.diagonal_recurrent_tensors = values[6].AsBool();
}

// ---------------------------------------------------------------------------
// Elementwise arithmetic, inlined and fused per element. Each helper
// reproduces one TFLM reference function's integer arithmetic exactly; TFLM's
// versions run as separate out-of-line passes through scratch buffers and
// call the out-of-line MultiplyByQuantizedMultiplier per element (about
// 36 k instructions per LSTM(128) step on Cortex-M4).

// reference_integer_ops::Logistic (int16) as lstm_internal::Sigmoid calls it
// (input_multiplier 0, input_left_shift 0, hence multiplier 3): Q3.12 in,
// Q0.15 out. |3x| >> 9 <= 192, so TFLM's saturation branch (index >= 255)
// cannot be taken and is left out.
inline int16_t Sigmoid16(int32_t x) {
  const int32_t in = x * 3;
  const uint32_t a = static_cast<uint32_t>(in < 0 ? -in : in);
  const uint32_t index = a >> 9;
  const uint32_t lo = tflite::sigmoid_table_uint16[index];
  const uint32_t hi = tflite::sigmoid_table_uint16[index + 1];
  const uint32_t result = (lo << 9) + (a & 0x1ff) * (hi - lo);
  // TFLM rounds a negative input's result as (2^25 - result + 2^9 - 1) >>
  // 10, which equals 2^15 - ((result + 2^9) >> 10): one rounding for both.
  const int32_t rounded = static_cast<int32_t>((result + (1u << 9)) >> 10);
  return static_cast<int16_t>(in >= 0 ? rounded : 32768 - rounded);
}

// reference_integer_ops::Tanh (int16) after its multiplier/shift set-up:
// in = (x * multiplier + round) >> shift, then the same table.
inline int16_t Tanh16(int32_t x, int32_t multiplier, int32_t shift,
                      int32_t round) {
  const int32_t in = (x * multiplier + round) >> shift;
  const uint32_t a = static_cast<uint32_t>(in < 0 ? -in : in);
  const uint32_t index = a >> 8;
  int32_t result;
  if (index >= 255) {
    result = 0xFFFF << 8;
  } else {
    const uint32_t lo = tflite::sigmoid_table_uint16[index];
    const uint32_t hi = tflite::sigmoid_table_uint16[index + 1];
    result = static_cast<int32_t>((lo << 8) + (a & 0xff) * (hi - lo));
  }
  result = in >= 0 ? result - (1 << 23) + (1 << 7)
                   : -result + (1 << 23) + (1 << 7) - 1;
  return static_cast<int16_t>(result >> 8);
}

// reference_integer_ops::MulElementwise's requantization for the inter-gate
// Muls (offsets 0, as CreateInterGateMulParams sets them for the symmetric
// gate outputs). One factor is a Sigmoid (0..32767) or Tanh (-32767..32767)
// output, so |product| < 2^30: with a right shift of 1..31 (Prepare checks)
// the fast requantization is exact.
template <bool kFast>
inline int32_t RequantizeProduct(int32_t product, const sparse::Requantizer& q,
                                 const sparse::FastRequantizer& fq) {
  if (kFast) return sparse::RequantizeFast<true>(product, fq);
  return sparse::Requantize(product, q);
}

// Cell update for n elements: TFLM's Sigmoid/Tanh of the three gate
// pre-activations, then UpdateLstmCell (Mul, Mul, AddElementWise, each to
// int16 with saturation, and Clipping).
template <bool kSigmoidCellGate, bool kFast>
void CellPass(const int16_t* forget, const int16_t* input, const int16_t* cell,
              int n, const OpDataSparseLstm& data, int16_t* cell_state) {
  const sparse::Requantizer fq = data.ew.forget_mul;
  const sparse::Requantizer iq = data.ew.input_mul;
  const sparse::FastRequantizer ffq = data.ew.forget_fast;
  const sparse::FastRequantizer ifq = data.ew.input_fast;
  for (int i = 0; i < n; ++i) {
    const int32_t f = Sigmoid16(forget[i]);
    const int32_t in = Sigmoid16(input[i]);
    // Cell gate pre-activations are Q3.12: Tanh with scale power -12, i.e.
    // multiplier 3, no shift.
    const int32_t g =
        kSigmoidCellGate ? Sigmoid16(cell[i]) : Tanh16(cell[i], 3, 0, 0);
    const int32_t kept = sparse::SaturateInt16(
        RequantizeProduct<kFast>(f * cell_state[i], fq, ffq));
    const int32_t added =
        sparse::SaturateInt16(RequantizeProduct<kFast>(in * g, iq, ifq));
    cell_state[i] = static_cast<int16_t>(sparse::SaturateInt16(kept + added));
  }
}

// UpdateLstmCell's Clipping, after the cell pass.
void ClipCellState(int n, const OpDataSparseLstm& data, int16_t* cell_state) {
  if (!data.ew.clip_cell) return;
  const int32_t clip = data.ew.cell_clip;
  for (int i = 0; i < n; ++i) {
    const int32_t c = cell_state[i];
    cell_state[i] =
        static_cast<int16_t>(c > clip ? clip : (c < -clip ? -clip : c));
  }
}

// Hidden update for n elements: Sigmoid of the output gate, UpdateLstmHidden
// (Tanh of the cell state, Mul to int8 with the hidden zero point). Also
// writes the output and the widened hidden state the next step's recurrent
// products read.
template <bool kFast>
void HiddenPass(const int16_t* output_gate, const int16_t* cell_state, int n,
                const OpDataSparseLstm& data, int32_t hidden_offset,
                int8_t* hidden, int8_t* output, int16_t* hidden16) {
  const sparse::Requantizer q = data.ew.output_mul;
  const sparse::FastRequantizer fq = data.ew.output_fast;
  const int32_t zp = data.ew.hidden_zero_point;
  const int32_t tm = data.ew.tanh_multiplier;
  const int32_t ts = data.ew.tanh_shift;
  const int32_t tr = data.ew.tanh_round;
  for (int i = 0; i < n; ++i) {
    const int32_t o = Sigmoid16(output_gate[i]);
    const int32_t t = Tanh16(cell_state[i], tm, ts, tr);
    int32_t h = zp + RequantizeProduct<kFast>(t * o, q, fq);
    h = h > 127 ? 127 : (h < -128 ? -128 : h);
    hidden[i] = static_cast<int8_t>(h);
    output[i] = static_cast<int8_t>(h);
    hidden16[i] = static_cast<int16_t>(h + hidden_offset);
  }
}

// ---------------------------------------------------------------------------
// Gate computation: the only part that differs from the stock kernel.

// One gate FC. TFLM's CreateGateParams gives both output zero point 0 and
// the full int16 range (Prepare checks it), so its clamp is a saturation to
// int16.
struct GateFc {
  SparseMatrix weights;
  sparse::Requantizer requant;
  sparse::FastRequantizer fast;
};

template <int kMode>
inline int32_t RequantizeFc(int32_t acc, const sparse::Requantizer& q,
                            const sparse::FastRequantizer& fq) {
  if (kMode == kFastLeft) return sparse::RequantizeFast<false>(acc, fq);
  if (kMode == kFastRight) return sparse::RequantizeFast<true>(acc, fq);
  return sparse::Requantize(acc, q);
}

#if KE_SPARSE_USE_ASM
GateRowsArgs RowsArgs(const GateFc& fc, const int16_t* x, int16_t* out,
                      const int32_t* bias) {
  return {fc.weights.row_counts, fc.weights.col_indices, fc.weights.values,
          x, out, out + fc.weights.rows, fc.fast.multiplier,
          fc.fast.pre_shift, fc.fast.half, fc.fast.right_shift, bias};
}
#endif

using InputPass = void (*)(const GateFc&, const int32_t*, const int16_t*,
                           int16_t*);
using RecurrentPass = void (*)(const GateFc&, const int16_t*, int16_t*);

struct Gate {
  GateFc input;
  GateFc recurrent;
  const int32_t* bias;
#if KE_SPARSE_USE_MVE
  // Effective biases of the MVE passes (input FC, recurrent FC), if they run,
  // and whether a row of the FC has more than 16 non-zeros.
  const int32_t* mve_bias[2];
  bool mve_long_rows[2];
#endif
  // Pass instances for this gate's index widths and requantization modes.
  InputPass input_pass;
  RecurrentPass recurrent_pass;
};

// The two FCs of a gate run as two passes over the rows rather than one pass
// doing both: on Cortex-M4 one pass had to keep two cursors and two
// requantizers live and spilled about 15 values per row to the stack.

// out[r] = sat16(requant(bias[r] + W_x[r] . x)): the stock input FC.
template <int W, int kMode>
void InputFcPass(const GateFc& fc, const int32_t* bias, const int16_t* x,
                 int16_t* out) {
#if KE_SPARSE_USE_ASM
  if constexpr (W == 1 && kMode != kGeneric) {
    const GateRowsArgs args = RowsArgs(fc, x, out, bias);
    (kMode == kFastRight ? ke_sparse_input_rows_right
                         : ke_sparse_input_rows_left)(&args);
    return;
  }
#endif
  const sparse::Requantizer q = fc.requant;
  const sparse::FastRequantizer fq = fc.fast;
  const uint8_t* counts = fc.weights.row_counts;
  const uint8_t* indices = fc.weights.col_indices;
  const int8_t* values = fc.weights.values;
  int16_t* const end = out + fc.weights.rows;
  while (out != end) {
    const int32_t acc =
        SparseRowDot<W>(indices, values, LoadIndex<W>(counts), x, *bias++);
    counts += W;
    *out++ = static_cast<int16_t>(
        sparse::SaturateInt16(RequantizeFc<kMode>(acc, q, fq)));
  }
}

// out[r] = sat16(out[r] + sat16(requant(W_h[r] . h))): the stock recurrent
// FC followed by AddElementWise.
template <int W, int kMode>
void RecurrentFcPass(const GateFc& fc, const int16_t* h, int16_t* out) {
#if KE_SPARSE_USE_ASM
  if constexpr (W == 1 && kMode != kGeneric) {
    const GateRowsArgs args = RowsArgs(fc, h, out, nullptr);
    (kMode == kFastRight ? ke_sparse_recurrent_rows_right
                         : ke_sparse_recurrent_rows_left)(&args);
    return;
  }
#endif
  const sparse::Requantizer q = fc.requant;
  const sparse::FastRequantizer fq = fc.fast;
  const uint8_t* counts = fc.weights.row_counts;
  const uint8_t* indices = fc.weights.col_indices;
  const int8_t* values = fc.weights.values;
  int16_t* const end = out + fc.weights.rows;
  while (out != end) {
    const uint32_t count = LoadIndex<W>(counts);
    counts += W;
    // An empty row adds requant(0) = 0: nothing to do (common above 95 %).
    if (count != 0) {
      const int32_t acc = SparseRowDot<W>(indices, values, count, h, 0);
      const int32_t fc_out =
          sparse::SaturateInt16(RequantizeFc<kMode>(acc, q, fq));
      *out = static_cast<int16_t>(sparse::SaturateInt16(*out + fc_out));
    }
    ++out;
  }
}

constexpr InputPass kInputPasses[2][3] = {
    {&InputFcPass<1, kGeneric>, &InputFcPass<1, kFastLeft>,
     &InputFcPass<1, kFastRight>},
    {&InputFcPass<2, kGeneric>, &InputFcPass<2, kFastLeft>,
     &InputFcPass<2, kFastRight>}};
constexpr RecurrentPass kRecurrentPasses[2][3] = {
    {&RecurrentFcPass<1, kGeneric>, &RecurrentFcPass<1, kFastLeft>,
     &RecurrentFcPass<1, kFastRight>},
    {&RecurrentFcPass<2, kGeneric>, &RecurrentFcPass<2, kFastLeft>,
     &RecurrentFcPass<2, kFastRight>}};

GateFc MakeGateFc(const TfLiteEvalTensor* blob,
                  const tflite::FullyConnectedParams& params) {
  GateFc fc;
  fc.weights = sparse::ViewSparseBlob(
      tflite::micro::GetTensorData<uint8_t>(blob), blob->dims->data[0]);
  fc.requant =
      sparse::MakeRequantizer(params.output_multiplier, params.output_shift);
  fc.fast = sparse::MakeFastRequantizer(params.output_multiplier,
                                        params.output_shift);
  return fc;
}

Gate MakeGate(const tflite::LSTMKernelContents& contents,
              const tflite::GateParameters& params,
              const OpDataSparseLstm& data, GateId id) {
  const RequantMode* modes = data.fc_modes[id];
  Gate gate;
  gate.input = MakeGateFc(contents.GetInternalTensor(kGateInputWeights[id]),
                          params.input_fc_params);
  gate.recurrent =
      MakeGateFc(contents.GetInternalTensor(kGateRecurrentWeights[id]),
                 params.recurrent_fc_params);
  gate.bias = tflite::micro::GetTensorData<int32_t>(
      contents.GetInternalTensor(kGateBias[id]));
  gate.input_pass =
      kInputPasses[gate.input.weights.index_bytes - 1][modes[0]];
  gate.recurrent_pass =
      kRecurrentPasses[gate.recurrent.weights.index_bytes - 1][modes[1]];
#if KE_SPARSE_USE_MVE
  for (int k = 0; k < 2; ++k) {
    gate.mve_bias[k] =
        data.mve ? data.mve_bias + (2 * id + k) * gate.input.weights.rows
                 : nullptr;
    gate.mve_long_rows[k] = data.mve_long_rows[id][k];
  }
#endif
  return gate;
}

// The mode a gate FC can use: fast when its worst-case accumulator (weights
// and bias are constant, so Prepare can bound it) is within the limit.
RequantMode ChooseRequantMode(const TfLiteTensor* blob,
                              const TfLiteTensor* bias,
                              const tflite::FullyConnectedParams& params) {
  if (bias != nullptr && !tflite::IsConstantTensor(bias)) return kGeneric;
  // Activations + input offset: int8 value minus its zero point.
  const int32_t offset = params.input_offset;
  const int32_t lo = -128 + offset;
  const int32_t hi = 127 + offset;
  const int32_t max_abs_x = (lo < 0 ? -lo : lo) > (hi < 0 ? -hi : hi)
                                ? (lo < 0 ? -lo : lo)
                                : (hi < 0 ? -hi : hi);
  const int64_t bound = sparse::MaxAbsRowAccumulator(
      sparse::ViewSparseBlob(blob->data.uint8, blob->bytes),
      bias != nullptr ? bias->data.i32 : nullptr, max_abs_x);
  if (bound > sparse::FastRequantizeLimit(params.output_shift)) {
    return kGeneric;
  }
  return params.output_shift < 0 ? kFastRight : kFastLeft;
}

// Gate pre-activations for the step's batch rows (the nonlinearity is
// applied in CellPass / HiddenPass).
void ComputeGate(const Gate& gate, const int16_t* x, const int16_t* h,
                 int n_batch, int n_input, int n_cell, int16_t* out) {
  for (int b = 0; b < n_batch; ++b) {
    gate.input_pass(gate.input, gate.bias, x + b * n_input, out + b * n_cell);
    gate.recurrent_pass(gate.recurrent, h + b * n_cell, out + b * n_cell);
  }
}

#if KE_SPARSE_USE_MVE
// One gate FC's rows through the MVE assembly; x as stored (int8).
void MveGateRows(const GateFc& fc, const int8_t* x, const int32_t* bias,
                 bool recurrent, bool long_rows, int16_t* out) {
  const MveRowsArgs args = {fc.weights.row_counts, fc.weights.col_indices,
                            fc.weights.values,     x,
                            out,                   out + fc.weights.rows,
                            fc.requant.multiplier, fc.requant.shift,
                            bias};
  kMveRows[recurrent][fc.requant.shift > 0][long_rows](&args);
}

// ComputeGate for the MVE passes: int8 input and hidden state, no widening.
void ComputeGateMve(const Gate& gate, const int8_t* x, const int8_t* h,
                    int n_batch, int n_input, int n_cell, int16_t* out) {
  for (int b = 0; b < n_batch; ++b) {
    MveGateRows(gate.input, x + b * n_input, gate.mve_bias[0], false,
                gate.mve_long_rows[0], out + b * n_cell);
    MveGateRows(gate.recurrent, h + b * n_cell, gate.mve_bias[1], true,
                gate.mve_long_rows[1], out + b * n_cell);
  }
}

// Decides whether the MVE passes run and computes their effective biases:
// bias[r] + input_offset * sum_c W[r][c] for the input FC (the stock FC's
// sum_c W[r][c] * (x[c] + input_offset) + bias[r], regrouped), and
// input_offset * sum_c W[r][c] for the recurrent FC (no bias). 8 * n_cell
// int32 of persistent arena, as CMSIS-NN's LSTM keeps for its kernel sums.
TfLiteStatus PrepareMve(TfLiteContext* context,
                        const tflite::LstmTensors& tensors,
                        const tflite::GateParameters* const* gate_params,
                        int n_cell, OpDataSparseLstm* data) {
  // Gate id's input (k = 0) or recurrent (k = 1) weight blob.
  const auto blob = [&](int id, int k) {
    const TfLiteTensor* t = tensors.GetInternalTensor(
        k == 0 ? kGateInputWeights[id] : kGateRecurrentWeights[id]);
    return sparse::ViewSparseBlob(t->data.uint8, t->bytes);
  };
  data->mve = n_cell % 4 == 0;
  for (int id = 0; id < 4 && data->mve; ++id) {
    data->mve = tflite::IsConstantTensor(
                    tensors.GetInternalTensor(kGateBias[id])) &&
                blob(id, 0).index_bytes == 1 && blob(id, 1).index_bytes == 1;
  }
  if (!data->mve) return kTfLiteOk;
  auto* bias = static_cast<int32_t*>(context->AllocatePersistentBuffer(
      context, sizeof(int32_t) * 8 * n_cell));
  TF_LITE_ENSURE(context, bias != nullptr);
  for (int id = 0; id < 4; ++id) {
    const int32_t* gate_bias =
        tensors.GetInternalTensor(kGateBias[id])->data.i32;
    const int32_t offsets[2] = {
        gate_params[id]->input_fc_params.input_offset,
        gate_params[id]->recurrent_fc_params.input_offset};
    for (int k = 0; k < 2; ++k) {
      const SparseMatrix m = blob(id, k);
      const int8_t* value = m.values;
      int32_t* out = bias + (2 * id + k) * n_cell;
      data->mve_long_rows[id][k] = false;
      for (int r = 0; r < n_cell; ++r) {
        data->mve_long_rows[id][k] |= m.row_counts[r] > 16;
        int32_t row_sum = 0;
        for (int i = m.row_counts[r]; i > 0; --i) row_sum += *value++;
        // Unsigned arithmetic: the stock int32 accumulator wraps the same.
        out[r] = static_cast<int32_t>(
            static_cast<uint32_t>(k == 0 ? gate_bias[r] : 0) +
            static_cast<uint32_t>(offsets[k]) *
                static_cast<uint32_t>(row_sum));
      }
    }
  }
  data->mve_bias = bias;
  return kTfLiteOk;
}
#endif

// One time step (all batch rows when time major), in the stock order:
// forget, input and cell gates, cell update, output gate, hidden update,
// copy of the hidden state to the output. `widen_hidden`: h16 does not yet
// hold this step's hidden state (first step of a sequence); otherwise the
// previous step's HiddenPass wrote it.
void SparseLstmStep(const LstmStepManager& step, const OpDataSparseLstm& data,
                    tflite::LSTMKernelContents& contents,
                    const tflite::LSTMBuffers<int16_t>& buffers,
                    const Gate* gates, int16_t* x16, bool widen_hidden) {
  const tflite::OpDataLSTM& lstm = data.lstm;
  const tflite::RuntimeShape state_shape = step.StateShape();
  const int n_batch = state_shape.Dims(0);
  const int n_cell = state_shape.Dims(1);
  const int n_input = lstm.size_info.input_dimension;

  // Widen the input once per step; all four gates share it. The stock
  // kernel's fourth buffer, its FC scratch, is free and holds the widened
  // hidden state.
  const int8_t* x = tflite::micro::GetTensorData<int8_t>(
                        contents.GetInternalTensor(tflite::kLstmInputTensor)) +
                    step.InputOffset();
  int8_t* h = tflite::micro::GetTensorData<int8_t>(
                  contents.HiddenStateTensor()) +
              step.HiddenStateOffset();
  int16_t* h16 = buffers.buffer3;
  const int32_t x_offset =
      lstm.forget_gate_parameters.input_fc_params.input_offset;
  const int32_t h_offset =
      lstm.forget_gate_parameters.recurrent_fc_params.input_offset;
  const auto compute_gate = [&](GateId id, int16_t* out) {
#if KE_SPARSE_USE_MVE
    if (data.mve) {
      ComputeGateMve(gates[id], x, h, n_batch, n_input, n_cell, out);
      return;
    }
#endif
    ComputeGate(gates[id], x16, h16, n_batch, n_input, n_cell, out);
  };
  if (!data.mve) {
    for (int i = 0; i < n_batch * n_input; ++i) {
      x16[i] = static_cast<int16_t>(x[i] + x_offset);
    }
    if (widen_hidden) {
      for (int i = 0; i < n_batch * n_cell; ++i) {
        h16[i] = static_cast<int16_t>(h[i] + h_offset);
      }
    }
  }

  int16_t* forget_gate = buffers.buffer0;
  int16_t* input_gate = buffers.buffer1;
  int16_t* cell_gate = buffers.buffer2;
  compute_gate(kForget, forget_gate);
  compute_gate(kInputGate, input_gate);
  compute_gate(kCell, cell_gate);

  int16_t* cell_state =
      tflite::micro::GetTensorData<int16_t>(contents.CellStateTensor()) +
      step.CellStateOffset();
  const int n = n_batch * n_cell;
  const bool sigmoid = lstm.cell_gate_nonlinear_type == kTfLiteActSigmoid;
#if KE_SPARSE_USE_ASM
  if (data.ew.cell_asm && !sigmoid) {
    const CellPassArgs args = {forget_gate,
                               input_gate,
                               cell_gate,
                               cell_state,
                               cell_state + n,
                               data.ew.cell_asm_round,
                               data.ew.cell_asm_shift,
                               kSigmoidPairs + kSigmoidPairsMid,
                               kTanhPairs + kTanhPairsMid,
                               data.ew.cell_clip};
    (data.ew.clip_cell ? ke_sparse_lstm_cell_pass_clip
                       : ke_sparse_lstm_cell_pass)(&args);
  } else  // NOLINT(readability/braces)
#endif
  {
    if (data.ew.fast_mul) {
      (sigmoid ? &CellPass<true, true> : &CellPass<false, true>)(
          forget_gate, input_gate, cell_gate, n, data, cell_state);
    } else {
      (sigmoid ? &CellPass<true, false> : &CellPass<false, false>)(
          forget_gate, input_gate, cell_gate, n, data, cell_state);
    }
    ClipCellState(n, data, cell_state);
  }

  int16_t* output_gate = buffers.buffer0;  // forget gate no longer needed
  compute_gate(kOutputGate, output_gate);
  int8_t* output =
      tflite::micro::GetTensorData<int8_t>(contents.output_tensor) +
      step.OutputOffset();
#if KE_SPARSE_USE_ASM
  if (data.ew.hidden_asm) {
    const HiddenPassArgs args = {output_gate,
                                 cell_state,
                                 output,
                                 h16,
                                 cell_state + n,
                                 data.ew.output_fast.right_shift,
                                 h_offset,
                                 data.ew.tanh_multiplier,
                                 data.ew.output_fast.multiplier,
                                 data.ew.hidden_asm_rounding,
                                 kSigmoidPairs + kSigmoidPairsMid,
                                 kTanhPairs + kTanhPairsMid};
    ke_sparse_lstm_hidden_pass(&args);
    std::memcpy(h, output, n);
    return;
  }
#endif
  (data.ew.fast_mul ? &HiddenPass<true> : &HiddenPass<false>)(
      output_gate, cell_state, n, data, h_offset, h, output, h16);
}

// ---------------------------------------------------------------------------
// Kernel entry points.

void* SparseLstmInit(TfLiteContext* context, const char* buffer,
                     size_t length) {
  TFLITE_DCHECK(context->AllocatePersistentBuffer != nullptr);
  void* raw =
      context->AllocatePersistentBuffer(context, sizeof(OpDataSparseLstm));
  if (raw == nullptr) return nullptr;
  auto* data = static_cast<OpDataSparseLstm*>(raw);
  *data = OpDataSparseLstm{};
  ParseOptions(buffer, length, data);
  return data;
}

// The stock ValidateTensorSize, minus the 2-D weight shapes (blobs here).
TfLiteStatus ValidateShapes(TfLiteContext* context,
                            const tflite::LstmTensors& tensors,
                            const tflite::LstmSizeInfo& size) {
  for (int i = tflite::kLstmInputGateBiasTensor;
       i <= tflite::kLstmOutputGateBiasTensor; ++i) {
    TF_LITE_ENSURE_OK(context,
                      tflite::ValidateBiasTensorSize(
                          context, tensors.GetInternalTensor(i),
                          size.state_dimension));
  }
  TF_LITE_ENSURE_EQ(context, tflite::NumElements(tensors.HiddenStateTensor()),
                    size.batch_size * size.state_dimension);
  TF_LITE_ENSURE_EQ(context, tflite::NumElements(tensors.CellStateTensor()),
                    size.batch_size * size.state_dimension);
  const TfLiteTensor* input =
      tensors.GetInternalTensor(tflite::kLstmInputTensor);
  const TfLiteTensor* output = tensors.OutputTensor();
  TF_LITE_ENSURE_EQ(context, output->dims->size, 3);
  TF_LITE_ENSURE_EQ(context, input->dims->data[0], output->dims->data[0]);
  TF_LITE_ENSURE_EQ(context, input->dims->data[1], output->dims->data[1]);
  TF_LITE_ENSURE_EQ(context, output->dims->data[2], size.state_dimension);
  return kTfLiteOk;
}

TfLiteStatus SparseLstmPrepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE(context, node->user_data != nullptr);
  auto* data = static_cast<OpDataSparseLstm*>(node->user_data);
  if (data->options_error != nullptr) {
    MicroPrintf("%s: %s %s", kSparseLstmOpName, data->options_error,
                data->options_key);
    return kTfLiteError;
  }
  const TfLiteUnidirectionalSequenceLSTMParams& params = data->params;
  if (params.asymmetric_quantize_inputs || params.diagonal_recurrent_tensors) {
    MicroPrintf("%s: asymmetric_quantize_inputs and "
                "diagonal_recurrent_tensors must be false",
                kSparseLstmOpName);
    return kTfLiteError;
  }
  if (params.activation != kTfLiteActTanh &&
      params.activation != kTfLiteActSigmoid) {
    MicroPrintf("%s: cell activation %d unsupported (tanh or sigmoid only)",
                kSparseLstmOpName, static_cast<int>(params.activation));
    return kTfLiteError;
  }
  TF_LITE_ENSURE_EQ(context, node->outputs->size, 1);
  TF_LITE_ENSURE_EQ(context, node->inputs->size, 24);

  // Temp tensors are released by the destructor on every return path.
  tflite::LstmTensors tensors(context, node);
  // Presence, types and variable state, as the stock kernel checks them.
  TF_LITE_ENSURE_OK(context, tensors.ValidateTensorStatus(context));

  const TfLiteTensor* input =
      tensors.GetInternalTensor(tflite::kLstmInputTensor);
  const TfLiteTensor* hidden = tensors.HiddenStateTensor();
  const TfLiteTensor* cell = tensors.CellStateTensor();
  if (input->type != kTfLiteInt8 || cell->type != kTfLiteInt16 ||
      tensors.GetInternalTensor(tflite::kLstmForgetGateBiasTensor)->type !=
          kTfLiteInt32) {
    MicroPrintf("%s: only int8 input/output, int16 cell state and int32 "
                "bias are supported (got %s, %s, %s)",
                kSparseLstmOpName, TfLiteTypeGetName(input->type),
                TfLiteTypeGetName(cell->type),
                TfLiteTypeGetName(tensors
                                      .GetInternalTensor(
                                          tflite::kLstmForgetGateBiasTensor)
                                      ->type));
    return kTfLiteError;
  }
  TF_LITE_ENSURE_EQ(context, input->dims->size, 3);
  TF_LITE_ENSURE_EQ(context, hidden->dims->size, 2);

  tflite::OpDataLSTM& lstm = data->lstm;
  lstm.cell_gate_nonlinear_type = params.activation;
  lstm.size_info = tflite::CreateLstmSizeInfo(params.time_major, input->dims,
                                              hidden->dims);
  TF_LITE_ENSURE_OK(context, ValidateShapes(context, tensors, lstm.size_info));

  const int n_cell = lstm.size_info.state_dimension;
  const int n_input = lstm.size_info.input_dimension;
  for (int i = tflite::kLstmInputToInputWeightsTensor;
       i <= tflite::kLstmRecurrentToOutputWeightsTensor; ++i) {
    const int cols =
        i <= tflite::kLstmInputToOutputWeightsTensor ? n_input : n_cell;
    if (sparse::ValidateSparseWeightTensor(tensors.GetInternalTensor(i),
                                           n_cell, cols,
                                           /*allow_per_channel=*/false,
                                           kWeightNames[i]) != kTfLiteOk) {
      MicroPrintf("%s: input %d (%s) is not a valid sparse weight blob",
                  kSparseLstmOpName, i, kWeightNames[i]);
      return kTfLiteError;
    }
  }

  lstm.cell_state_info =
      tflite::CreateLstmCellStateInfo(cell->params.scale, params.cell_clip);
  // The blobs carry the dense tensors' scales, which is all the FC
  // parameter computation reads from a per-tensor weight tensor.
  TF_LITE_ENSURE_OK(context, tflite::PrepareGateParametersInteger(
                                 context, tensors, &lstm));
  // The gate passes saturate to int16 instead of clamping to a general range.
  const tflite::GateParameters* gate_params[4] = {
      &lstm.forget_gate_parameters, &lstm.input_gate_parameters,
      &lstm.cell_gate_parameters, &lstm.output_gate_parameters};
  for (const tflite::GateParameters* g : gate_params) {
    for (const tflite::FullyConnectedParams* fc :
         {&g->input_fc_params, &g->recurrent_fc_params}) {
      TF_LITE_ENSURE_MSG(
          context,
          fc->output_offset == 0 &&
              fc->quantized_activation_min ==
                  std::numeric_limits<int16_t>::min() &&
              fc->quantized_activation_max ==
                  std::numeric_limits<int16_t>::max(),
          "gate FC parameters are not int16, zero point 0");
    }
  }

  for (int id = 0; id < 4; ++id) {
    const tflite::GateParameters& g = *gate_params[id];
    data->fc_modes[id][0] = ChooseRequantMode(
        tensors.GetInternalTensor(kGateInputWeights[id]),
        tensors.GetInternalTensor(kGateBias[id]), g.input_fc_params);
    data->fc_modes[id][1] = ChooseRequantMode(
        tensors.GetInternalTensor(kGateRecurrentWeights[id]), nullptr,
        g.recurrent_fc_params);
  }
  data->mve = false;
#if KE_SPARSE_USE_MVE
  TF_LITE_ENSURE_OK(context,
                    PrepareMve(context, tensors, gate_params, n_cell, data));
#endif

  // Inter-gate Mul and Tanh parameters for the fused elementwise passes.
  const tflite::InterGateParameters& inter = lstm.inter_gate_parameters;
  data->ew.forget_mul = sparse::MakeRequantizer(
      inter.forget_cell_mul_params.output_multiplier,
      inter.forget_cell_mul_params.output_shift);
  data->ew.input_mul =
      sparse::MakeRequantizer(inter.input_mul_params.output_multiplier,
                              inter.input_mul_params.output_shift);
  data->ew.output_mul =
      sparse::MakeRequantizer(inter.output_mul_params.output_multiplier,
                              inter.output_mul_params.output_shift);
  data->ew.hidden_zero_point = inter.output_mul_params.output_offset;
  data->ew.fast_mul = true;
  const tflite::ArithmeticParams* muls[3] = {&inter.forget_cell_mul_params,
                                             &inter.input_mul_params,
                                             &inter.output_mul_params};
  sparse::FastRequantizer* fast[3] = {
      &data->ew.forget_fast, &data->ew.input_fast, &data->ew.output_fast};
  for (int i = 0; i < 3; ++i) {
    *fast[i] = sparse::MakeFastRequantizer(muls[i]->output_multiplier,
                                           muls[i]->output_shift);
    data->ew.fast_mul &=
        muls[i]->output_shift <= -1 && muls[i]->output_shift >= -31;
  }
  // The passes hard-wire the Mul offsets and output ranges TFLM sets.
  TF_LITE_ENSURE_MSG(
      context,
      inter.forget_cell_mul_params.output_offset == 0 &&
          inter.input_mul_params.output_offset == 0 &&
          inter.output_mul_params.input1_offset == 0 &&
          inter.output_mul_params.input2_offset == 0 &&
          inter.output_mul_params.quantized_activation_min == -128 &&
          inter.output_mul_params.quantized_activation_max == 127 &&
          inter.input_mul_params.quantized_activation_min ==
              std::numeric_limits<int16_t>::min() &&
          inter.input_mul_params.quantized_activation_max ==
              std::numeric_limits<int16_t>::max(),
      "inter-gate Mul parameters are not the int8/int16 ones");
  // lstm_internal::Tanh's set-up for the cell state's scale power, followed
  // by reference_integer_ops::Tanh's power-of-two case.
  const int32_t tanh_left_shift =
      15 + lstm.cell_state_info.cell_state_scale_power - 3;
  if (tanh_left_shift >= 0) {
    data->ew.tanh_multiplier = 3 << tanh_left_shift;
    data->ew.tanh_shift = 0;
    data->ew.tanh_round = 0;
  } else {
    data->ew.tanh_multiplier = 3;
    data->ew.tanh_shift = -tanh_left_shift;
    data->ew.tanh_round = 1 << (-tanh_left_shift - 1);
  }
  data->ew.clip_cell = lstm.cell_state_info.cell_clip > 0;
#if KE_SPARSE_USE_ASM
  // The assembly's Muls: by 2^30, the forget Mul shifting right by 14 and
  // the input Mul by r <= 29 (so 2^r + 1 + |i * g| < 2^31).
  const int32_t input_mul_shift = -inter.input_mul_params.output_shift;
  data->ew.cell_asm =
      data->ew.fast_mul &&
      inter.forget_cell_mul_params.output_multiplier == (1 << 30) &&
      inter.forget_cell_mul_params.output_shift == -14 &&
      inter.input_mul_params.output_multiplier == (1 << 30) &&
      input_mul_shift <= 29 && PairsMatchTflm();
  if (data->ew.cell_asm) {
    data->ew.cell_asm_round = (1 << input_mul_shift) + 1;
    data->ew.cell_asm_shift = input_mul_shift + 1;
  }
  // |SMMLAR(2p, M, rounding)| < 2^30 + |rounding| must fit in int32.
  const int output_shift = data->ew.output_fast.right_shift;
  const int64_t hidden_rounding =
      data->ew.fast_mul
          ? (int64_t{1} << (output_shift - 1)) +
                static_cast<int64_t>(data->ew.hidden_zero_point) *
                    (int64_t{1} << output_shift)
          : 0;
  data->ew.hidden_asm = data->ew.fast_mul && data->ew.tanh_shift == 0 &&
                        hidden_rounding < (int64_t{1} << 30) &&
                        hidden_rounding > -(int64_t{1} << 30) &&
                        PairsMatchTflm();
  data->ew.hidden_asm_rounding = static_cast<int32_t>(hidden_rounding);
#endif
  data->ew.cell_clip = lstm.cell_state_info.quantized_cell_clip;

  // The stock kernel's four gate/scratch buffers, same sizes.
  const size_t state_bytes = static_cast<size_t>(lstm.size_info.batch_size) *
                             n_cell * sizeof(int16_t);
  for (int i = 0; i < 4; ++i) {
    TF_LITE_ENSURE_OK(context, context->RequestScratchBufferInArena(
                                   context, state_bytes,
                                   &lstm.buffer_indices[i]));
  }
  const int rows_per_step =
      lstm.size_info.time_major ? lstm.size_info.batch_size : 1;
  TF_LITE_ENSURE_OK(context,
                    context->RequestScratchBufferInArena(
                        context,
                        static_cast<size_t>(rows_per_step) * n_input *
                            sizeof(int16_t),
                        &data->input_scratch_index));
  return kTfLiteOk;
}

TfLiteStatus SparseLstmEval(TfLiteContext* context, TfLiteNode* node) {
  TFLITE_DCHECK(node->user_data != nullptr);
  const auto& data = *static_cast<const OpDataSparseLstm*>(node->user_data);
  const tflite::OpDataLSTM& lstm = data.lstm;

  tflite::LSTMKernelContents contents =
      tflite::CreateLSTMKernelContent(context, node);
  const tflite::LSTMBuffers<int16_t> buffers =
      tflite::CreateLSTMBuffers<int16_t>(context, lstm.buffer_indices);
  int16_t* x16 = static_cast<int16_t*>(
      context->GetScratchBuffer(context, data.input_scratch_index));

  const Gate gates[4] = {
      MakeGate(contents, lstm.forget_gate_parameters, data, kForget),
      MakeGate(contents, lstm.input_gate_parameters, data, kInputGate),
      MakeGate(contents, lstm.cell_gate_parameters, data, kCell),
      MakeGate(contents, lstm.output_gate_parameters, data, kOutputGate)};

  // Same walk over time and batch as the stock EvalLstm.
  LstmStepManager step(&lstm.size_info);
  const tflite::LstmSizeInfo& size = lstm.size_info;
  if (size.time_major) {
    for (int t = 0; t < size.time_steps; ++t) {
      SparseLstmStep(step, data, contents, buffers, gates, x16, t == 0);
      step.UpdateTime();
    }
  } else {
    for (int b = 0; b < size.batch_size; ++b) {
      for (int t = 0; t < size.time_steps; ++t) {
        SparseLstmStep(step, data, contents, buffers, gates, x16, t == 0);
        step.UpdateTime();
      }
      step.UpdateBatch();
      step.ResetTime();
    }
  }
  return kTfLiteOk;
}

}  // namespace

TFLMRegistration Register_SPARSE_UNIDIRECTIONAL_SEQUENCE_LSTM() {
  return tflite::micro::RegisterOp(SparseLstmInit, SparseLstmPrepare,
                                   SparseLstmEval);
}

}  // namespace keras_expander
