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
// with one-byte indices run Thumb-2 assembly (below): about 17 instructions
// per gate row and matrix (count, table branch, requantization, saturation,
// store) plus 4 per non-zero. The recurrent product is added into the gate
// buffer in place, so the stock kernel's fourth scratch buffer (its recurrent
// FC output) is free to hold the widened hidden state. Per step: forget,
// input and cell gate pre-activations, one fused pass for their
// nonlinearities and the cell update, the output gate, one fused pass for the
// hidden update and output (about 160 instructions per cell and step).
// Measured (results/mcu_footprint.md: GCC 12 -O2, QEMU instruction counts,
// sequential-MNIST LSTM(128), 28 steps): 1.95 M instructions per inference
// at 90 % sparsity and 1.51 M at 95 %, against 6.14 M for CMSIS-NN's dense
// kernel and 25.2 M for TFLM's reference kernel.
//
// Arena: the stock kernel's four n_batch x n_cell int16 scratch buffers plus
// n_input int16 (times n_batch when time major) for the widened input.

#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <limits>

#include "flatbuffers/flexbuffers.h"
#include "sparse_ops.h"
#include "sparse_weights.h"
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
// so a row costs about 17 instructions plus 4 per non-zero, with every
// constant in a register. Rows with more than 32 non-zeros run the excess in
// a loop first. The arithmetic is that of InputFcPass / RecurrentFcPass with
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
// lr weight. TBH jumps to the slot that leaves `count` slots to run.
__asm__(R"(
  .syntax unified
  .thumb
  .macro KE_SLOT
    ldrb.w r11, [r1], #1
    ldrsb.w lr, [r2], #1
    ldrsh.w r11, [r3, r11, lsl #1]
    smlabb r9, lr, r11, r9
  .endm
  .macro KE_ROWS name, recurrent, right
  .section .text.\name, "ax", %progbits
  .align 2
  .global \name
  .type \name, %function
  .thumb_func
\name:
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
1:
  ldrb r10, [r0], #1
  .if \recurrent
  mov.w r9, #0
  .else
  ldr r9, [r12], #4
  .endif
  cmp r10, #32
  bhi 6f
2:
  tbh [pc, r10, lsl #1]
.Ltable\@:
  .set ke_count, 0
  .rept 33
  .short ((.Lslots\@ - .Ltable\@) + 16 * (32 - ke_count)) / 2
  .set ke_count, ke_count + 1
  .endr
.Lslots\@:
  .rept 32
  KE_SLOT
  .endr
  .if \right
  lsls.w r9, r9, #1
  smmulr r9, r9, r6
  add.w r9, r9, r9, asr #31
  add r9, r7
  asr.w r9, r9, r8
  .else
  lsl.w r9, r9, r7
  smmulr r9, r9, r6
  .endif
  ssat r9, #16, r9
  .if \recurrent
  ldrsh.w r10, [r4]
  add r9, r10
  ssat r9, #16, r9
  .endif
  strh r9, [r4], #2
  cmp r4, r5
  bne 1b
9:
  pop {r4-r11, pc}
6:
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
  .purgem KE_ROWS
  .text
)");
#else
#define KE_SPARSE_USE_ASM 0
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
  // n_input int16 per batch row of a step: input + input offset.
  int input_scratch_index;
  // Per gate (GateId order): input FC and recurrent FC requantization mode.
  RequantMode fc_modes[4][2];
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
  if (data.ew.clip_cell) {
    const int32_t clip = data.ew.cell_clip;
    for (int i = 0; i < n; ++i) {
      const int32_t c = cell_state[i];
      cell_state[i] =
          static_cast<int16_t>(c > clip ? clip : (c < -clip ? -clip : c));
    }
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
              const tflite::GateParameters& params, const RequantMode* modes,
              GateId id) {
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
  for (int i = 0; i < n_batch * n_input; ++i) {
    x16[i] = static_cast<int16_t>(x[i] + x_offset);
  }
  if (widen_hidden) {
    for (int i = 0; i < n_batch * n_cell; ++i) {
      h16[i] = static_cast<int16_t>(h[i] + h_offset);
    }
  }

  int16_t* forget_gate = buffers.buffer0;
  int16_t* input_gate = buffers.buffer1;
  int16_t* cell_gate = buffers.buffer2;
  ComputeGate(gates[kForget], x16, h16, n_batch, n_input, n_cell, forget_gate);
  ComputeGate(gates[kInputGate], x16, h16, n_batch, n_input, n_cell,
              input_gate);
  ComputeGate(gates[kCell], x16, h16, n_batch, n_input, n_cell, cell_gate);

  int16_t* cell_state =
      tflite::micro::GetTensorData<int16_t>(contents.CellStateTensor()) +
      step.CellStateOffset();
  const int n = n_batch * n_cell;
  const bool sigmoid = lstm.cell_gate_nonlinear_type == kTfLiteActSigmoid;
  if (data.ew.fast_mul) {
    (sigmoid ? &CellPass<true, true> : &CellPass<false, true>)(
        forget_gate, input_gate, cell_gate, n, data, cell_state);
  } else {
    (sigmoid ? &CellPass<true, false> : &CellPass<false, false>)(
        forget_gate, input_gate, cell_gate, n, data, cell_state);
  }

  int16_t* output_gate = buffers.buffer0;  // forget gate no longer needed
  ComputeGate(gates[kOutputGate], x16, h16, n_batch, n_input, n_cell,
              output_gate);
  int8_t* output =
      tflite::micro::GetTensorData<int8_t>(contents.output_tensor) +
      step.OutputOffset();
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
      MakeGate(contents, lstm.forget_gate_parameters, data.fc_modes[kForget],
               kForget),
      MakeGate(contents, lstm.input_gate_parameters,
               data.fc_modes[kInputGate], kInputGate),
      MakeGate(contents, lstm.cell_gate_parameters, data.fc_modes[kCell],
               kCell),
      MakeGate(contents, lstm.output_gate_parameters,
               data.fc_modes[kOutputGate], kOutputGate)};

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
