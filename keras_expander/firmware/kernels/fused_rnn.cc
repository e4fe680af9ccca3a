// KE_SIMPLE_RNN_V1, KE_SPARSE_SIMPLE_RNN_V1, KE_GRU_V1, KE_SPARSE_GRU_V1:
// one int8 op per recurrent layer that replays, step by step, the int8
// arithmetic of the graph the TFLite converter unrolls for a SimpleRNN or a
// GRU layer (FULLY_CONNECTED, SPLIT, ADD, SUB, MUL, TANH, LOGISTIC,
// QUANTIZE per time step), with the scales and zero points that graph was
// calibrated with (keras_expander/fused_rnn.py builds the op from it).
//
// Inputs (all constant but 0):
//   0 input sequence, int8, T * I elements in time order ([T, 1, I]).
//   1 input weights W_x: dense int8 [G*H, I], or (sparse ops) a sparse blob
//     (sparse_weights.h), per-tensor scale, zero point 0.
//   2 recurrent weights W_h: dense int8 [G*H, H], or a sparse blob.
//   3 biases, int32 [B, G*H] (optional, -1): the distinct FULLY_CONNECTED
//     biases of the unrolled graph, or bases from which a step's bias is
//     rescaled (below).
//   4 program, int32 (format below).
//   5 tables, int8 [bytes] (optional): 256-entry lookup tables of the
//     unrolled graph's elementwise unary ops (TANH, LOGISTIC, QUANTIZE, SUB
//     or MUL of a scalar constant, and chains of them): entry q + 128 is the
//     op's int8 output for the int8 input q, as TFLM computes it. A table
//     is one encoding byte, then either (0) its 256 values, or (1, 2, 4:
//     bits per step, + 0x10 when the table decreases) its first value and
//     255 steps |t[q + 1] - t[q]| packed LSB first: 2 + 32 * bits bytes.
//   6 constant vectors, int8 [C, H] (optional): operands the converter
//     folded into constants (the GRU's step-0 recurrent bias blocks).
//   7 bias residuals, int8 [E, G*H] (optional).
// Output 0: int8 [T, 1, H] (the whole sequence) or [1, H] (the last state).
//
// Program (int32, little-endian). Header: version 1, cell (1 SimpleRNN,
// 2 GRU), steps T, input size I, units H, gate blocks G (1 or 3),
// temporaries K, flags (bit 0: the output is the whole sequence). Then one
// record per step, in processing order: input slot (the [I] slice of input
// 0 it reads), output slot (its [H] slice of a sequence output),
// instruction count n, and n instructions: a word
// opcode | dst << 8 | a << 16 | b << 24 followed by the opcode's parameters,
// all as TFLM's Prepare of the unrolled op computes them (i16/i8: fields
// of a word, least significant first):
//   1 FC_INPUT      X = FC(x_t)   i16 input offset, i16 output offset;
//   2 FC_RECURRENT  R = FC(a)     multiplier; i8 shift, i8 act_min,
//                                 i8 act_max, i8 bias shift; i16 bias row
//                                 (-1: none), i16 residual row (-1: none);
//                                 bias multiplier
//   3 ADD, 4 SUB    dst = a +- b  i16 input1 offset, i16 input2 offset;
//                                 input1, input2 and output multipliers;
//                                 i8 input1 shift, i8 input2 shift, i8
//                                 output shift, i8 output offset; i8
//                                 act_min, i8 act_max
//   5 MUL           dst = a * b   i16 input1 offset, i16 input2 offset;
//                                 multiplier; i8 shift, i8 act_min, i8
//                                 act_max, i8 output offset
//   6 LUT           dst = t[a]    byte offset of the table in input 5
// A FULLY_CONNECTED's bias is its bias row, or, with a bias multiplier,
// requant(bias row, bias multiplier, bias shift) + residual row: a GRU's
// recurrent bias differs from step to step only through the scale of the
// previous state, so each step stores one int8 residual per row (exact by
// construction) instead of its own int32 row.
// Operands: 0x00 + g input gate block g of X; 0x10 + g recurrent gate
// block g of R; 0x20 the previous step's hidden state; 0x21 this step's
// hidden state; 0x40 + k temporary k; 0x80 + c constant vector c. Every
// operand but X and R (the FC outputs, G*H) is H int8 values. Prepare
// checks every index and table, that every operand is written before it
// is read within a step, and that each step writes its hidden state.
//
// Byte cost (flash): the weights (dense G*H*(I+H); sparse blobs
// 8 + W (rows + nnz) + nnz each), 4 G*H bytes per bias row, per step
// G*H bytes of residuals (GRU), 2 + 32 * bits bytes per table (usually 2
// bits: 66 bytes; 1 table a step for a SimpleRNN, 4 for a GRU), and about
// 24 (SimpleRNN) or 63 (GRU) program words. Example, GRU(128) over 28 x 28
// at 90 % sparsity (results/mcu_footprint.md).
//
// Arena: one scratch buffer: X, R, K temporaries, two alternating states
// (when only the last state is output) and a decoded table as int8,
// max(I, H) widened activations as int16 and one bias row as int32; no
// per-step tensors.
//
// Exactness. Each instruction is the integer arithmetic of TFLM's reference
// kernel for that op (reference_integer_ops::FullyConnected, Add, Mul,
// reference_ops::Sub): requantization by TFLM's rounding doubling high
// multiply and rounding right shift, evaluated with SMMULR and shifts
// where the operand bounds make that exact (checked in Prepare for ADD,
// SUB and MUL; per FULLY_CONNECTED at Eval from a bound on its
// accumulators, else TFLM's generic arithmetic). A pruned weight adds
// exactly 0 to an accumulator, so a sparse dot product equals the dense
// one. The outputs equal the unrolled graph's on TFLM's reference kernels
// byte for byte (tests/test_fused_rnn.py, host and Cortex-M4).

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fused_rnn.h"
#include "sparse_weights.h"
#include "thumb_function.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace keras_expander {
namespace {

using sparse::LoadIndex;
using sparse::SparseMatrix;
using sparse::SparseRowDot;

constexpr int kInputTensor = 0;
constexpr int kInputWeightsTensor = 1;
constexpr int kRecurrentWeightsTensor = 2;
constexpr int kBiasTensor = 3;
constexpr int kProgramTensor = 4;
constexpr int kTablesTensor = 5;
constexpr int kConstantsTensor = 6;
constexpr int kResidualsTensor = 7;
constexpr int kInputCount = 8;
constexpr int kOutputTensor = 0;

constexpr int kCellSimpleRnn = 1;
constexpr int kCellGru = 2;

constexpr int kHeaderWords = 8;
constexpr int kStepWords = 3;
constexpr int kTableSize = 256;

enum Opcode : uint8_t {
  kFcInput = 1,
  kFcRecurrent = 2,
  kAdd = 3,
  kSub = 4,
  kMul = 5,
  kLut = 6,
};
constexpr int kParamWords[7] = {0, 5, 5, 6, 6, 3, 1};

constexpr uint8_t kOperandInputBlock = 0x00;
constexpr uint8_t kOperandRecurrentBlock = 0x10;
constexpr uint8_t kOperandPreviousState = 0x20;
constexpr uint8_t kOperandNewState = 0x21;
constexpr uint8_t kOperandTemporary = 0x40;
constexpr uint8_t kOperandConstant = 0x80;

// TFLM's requantization MultiplyByQuantizedMultiplier(v << extra_left,
// multiplier, shift) for values known to satisfy
// |v| * 2^(extra_left + max(shift, 0) + 1) < 2^31: the rounding doubling
// high multiply is then SMMULR(v << pre_shift, multiplier), and the
// rounding right shift (half away from zero) is
// (x + half - (x < 0)) >> right_shift, both branch-free.
struct Requant {
  int32_t multiplier;
  int32_t pre_shift;   // extra_left + max(shift, 0) + 1
  int32_t half;        // 2^(right_shift - 1), or 0
  int32_t round_mask;  // -1 with a right shift, else 0
  int32_t right_shift;
};

Requant MakeRequant(int32_t multiplier, int32_t shift, int extra_left) {
  Requant q;
  q.multiplier = multiplier;
  q.pre_shift = extra_left + (shift > 0 ? shift : 0) + 1;
  q.right_shift = shift < 0 ? -shift : 0;
  q.half = q.right_shift > 0 ? static_cast<int32_t>(1) << (q.right_shift - 1)
                             : 0;
  q.round_mask = q.right_shift > 0 ? -1 : 0;
  return q;
}

inline int32_t Apply(int32_t v, const Requant& q) {
  const int32_t x = sparse::MulHighRounded(
      static_cast<int32_t>(static_cast<uint32_t>(v) << q.pre_shift),
      q.multiplier);
  return (x + ((x >> 31) & q.round_mask) + q.half) >> q.right_shift;
}

inline int8_t Clamp(int32_t v, int32_t lo, int32_t hi) {
  return static_cast<int8_t>(v < lo ? lo : (v > hi ? hi : v));
}

// Signed fields of a parameter word, least significant first.
inline int32_t Byte(int32_t word, int index) {
  return static_cast<int8_t>(static_cast<uint32_t>(word) >> (8 * index));
}
inline int32_t Half(int32_t word, int index) {
  return static_cast<int16_t>(static_cast<uint32_t>(word) >> (16 * index));
}

// The parameters of one instruction, unpacked (format at the top).
struct FcParams {
  int32_t input_offset, output_offset, multiplier, shift, act_min, act_max;
  int32_t bias_row, residual_row, bias_multiplier, bias_shift;
};
FcParams UnpackFc(const int32_t* p) {
  return {Half(p[0], 0), Half(p[0], 1), p[1],          Byte(p[2], 0),
          Byte(p[2], 1), Byte(p[2], 2), Half(p[3], 0), Half(p[3], 1),
          p[4],          Byte(p[2], 3)};
}

struct AddParams {
  int32_t input1_offset, input2_offset, multiplier1, multiplier2,
      output_multiplier, shift1, shift2, output_shift, output_offset,
      act_min, act_max;
};
AddParams UnpackAdd(const int32_t* p) {
  return {Half(p[0], 0), Half(p[0], 1), p[1],          p[2],
          p[3],          Byte(p[4], 0), Byte(p[4], 1), Byte(p[4], 2),
          Byte(p[4], 3), Byte(p[5], 0), Byte(p[5], 1)};
}

struct MulParams {
  int32_t input1_offset, input2_offset, multiplier, shift, act_min, act_max,
      output_offset;
};
MulParams UnpackMul(const int32_t* p) {
  return {Half(p[0], 0), Half(p[0], 1), p[1],         Byte(p[2], 0),
          Byte(p[2], 1), Byte(p[2], 2), Byte(p[2], 3)};
}

struct OpDataFusedRnn {
  int steps;
  int input_size;
  int units;
  int gates;
  int temporaries;
  bool sequence_output;
  int table_bytes;
  int constants;
  int biases;
  int residuals;
  int scratch_index;
  // Byte offsets in the scratch buffer of the int16 activations and the
  // int32 bias row.
  int widened_offset;
  int bias_offset;
  // Largest |accumulator| of each matrix without its bias: 255 times the
  // largest row L1 norm (|x - zero point| <= 255 for int8 x); and the
  // largest |bias| (Prepare computes every step's bias once). A
  // FULLY_CONNECTED takes the fast requantization when their sum is within
  // sparse::FastRequantizeLimit of its shift.
  int64_t input_bound;
  int64_t recurrent_bound;
  int64_t max_abs_bias;
};

// A weight matrix as the Eval loops read it: dense rows or a sparse blob.
struct Matrix {
  const int8_t* dense;  // rows x cols, or nullptr for a sparse matrix
  SparseMatrix sparse;
  int rows;
  int cols;
};

const char* OpName(int cell, bool sparse_weights) {
  if (cell == kCellGru) return sparse_weights ? kSparseGruOpName : kGruOpName;
  return sparse_weights ? kSparseSimpleRnnOpName : kSimpleRnnOpName;
}

// ---------------------------------------------------------------------------
// Tables and biases (shared by Prepare's checks and Eval).

// Bytes of the encoded table at `table` (at most `available`), or -1 when
// the encoding is unknown or runs past the tensor.
int TableBytes(const uint8_t* table, int available) {
  if (available < 1) return -1;
  const int bits = table[0] & 0x0f;
  const int bytes = table[0] == 0 ? 1 + kTableSize
                    : (bits == 1 || bits == 2 || bits == 4) &&
                            (table[0] & ~0x1f) == 0
                        ? 2 + (255 * bits + 7) / 8
                        : -1;
  return bytes <= available ? bytes : -1;
}

// Decodes the 255 packed steps of a monotone table after its first value
// (about 4 instructions an entry on Cortex-M4: the loop over a byte's
// steps is unrolled). Returns false when a value leaves int8.
template <int kBits, bool kDecreasing>
bool DecodeSteps(const uint8_t* steps, int32_t value, int8_t* out) {
  constexpr int kPerByte = 8 / kBits;
  constexpr uint32_t kMask = (1u << kBits) - 1;
  const int32_t first = value;
  out[0] = static_cast<int8_t>(value);
  int i = 1;
  for (; i + kPerByte <= kTableSize; ++steps) {
    const uint32_t packed = *steps;
    for (int k = 0; k < kPerByte; ++k, ++i) {
      const int32_t step = static_cast<int32_t>((packed >> (k * kBits)) & kMask);
      value = kDecreasing ? value - step : value + step;
      out[i] = static_cast<int8_t>(value);
    }
  }
  for (int k = 0; i < kTableSize; ++k, ++i) {  // the last byte's first steps
    const int32_t step = static_cast<int32_t>((*steps >> (k * kBits)) & kMask);
    value = kDecreasing ? value - step : value + step;
    out[i] = static_cast<int8_t>(value);
  }
  // Monotone: the extremes are the first and the last value.
  const int32_t lowest = kDecreasing ? value : first;
  const int32_t highest = kDecreasing ? first : value;
  return lowest >= -128 && highest <= 127;
}

// The 256 entries of an encoded table: in place when stored raw, else
// decoded into `scratch`. Returns false when a decoded value leaves int8.
bool DecodeTable(const uint8_t* table, int8_t* scratch, const int8_t** out) {
  *out = scratch;
  const int32_t first = static_cast<int8_t>(table[1]);
  switch (table[0]) {
    case 0x01: return DecodeSteps<1, false>(table + 2, first, scratch);
    case 0x02: return DecodeSteps<2, false>(table + 2, first, scratch);
    case 0x04: return DecodeSteps<4, false>(table + 2, first, scratch);
    case 0x11: return DecodeSteps<1, true>(table + 2, first, scratch);
    case 0x12: return DecodeSteps<2, true>(table + 2, first, scratch);
    case 0x14: return DecodeSteps<4, true>(table + 2, first, scratch);
    default:  // 0: raw (TableBytes admits no other encoding)
      *out = reinterpret_cast<const int8_t*>(table + 1);
      return true;
  }
}

// Row r of one FULLY_CONNECTED's bias (it has one: bias_row >= 0).
inline int32_t BiasAt(const FcParams& fc, const int32_t* base,
                      const sparse::Requantizer& q, const int8_t* residual,
                      int r) {
  return fc.bias_multiplier == 0
             ? base[r]
             : sparse::Requantize(base[r], q) + residual[r];
}

// The bias of one FULLY_CONNECTED: its bias row, or computed into `out`
// ([G*H] int32) when rescaled; nullptr when it has none. `bound` bounds
// |bias row| (the fast requantization is exact within its limit).
const int32_t* ComputeBias(const FcParams& fc, const int32_t* biases,
                           const int8_t* residuals, int rows, int64_t bound,
                           int32_t* out) {
  if (fc.bias_row < 0) return nullptr;
  const int32_t* base = biases + fc.bias_row * rows;
  if (fc.bias_multiplier == 0) return base;
  const int8_t* residual = residuals + fc.residual_row * rows;
  if (bound <= sparse::FastRequantizeLimit(fc.bias_shift)) {
    const Requant q = MakeRequant(fc.bias_multiplier, fc.bias_shift, 0);
    for (int r = 0; r < rows; ++r) out[r] = Apply(base[r], q) + residual[r];
  } else {
    const sparse::Requantizer q =
        sparse::MakeRequantizer(fc.bias_multiplier, fc.bias_shift);
    for (int r = 0; r < rows; ++r) out[r] = BiasAt(fc, base, q, residual, r);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Prepare: validation of the program against the tensors.

// Whether an operand is defined at a point of a step: a bit per temporary,
// then X, R, the previous and this step's state.
constexpr uint32_t kDefinedInput = 1u << 16;
constexpr uint32_t kDefinedRecurrent = 1u << 17;
constexpr uint32_t kDefinedPrevious = 1u << 18;
constexpr uint32_t kDefinedNew = 1u << 19;

// Returns nullptr when `operand` can be read, else what is wrong.
const char* CheckRead(uint8_t operand, uint32_t defined,
                      const OpDataFusedRnn& data) {
  if (operand < kOperandRecurrentBlock) {
    if (operand >= data.gates) return "input gate block out of range";
    return (defined & kDefinedInput) ? nullptr : "X read before FC_INPUT";
  }
  if (operand < kOperandPreviousState) {
    if (operand - kOperandRecurrentBlock >= data.gates) {
      return "recurrent gate block out of range";
    }
    return (defined & kDefinedRecurrent) ? nullptr
                                         : "R read before FC_RECURRENT";
  }
  if (operand == kOperandPreviousState) {
    return (defined & kDefinedPrevious) ? nullptr
                                        : "previous state read at step 0";
  }
  if (operand == kOperandNewState) {
    return (defined & kDefinedNew) ? nullptr : "state read before written";
  }
  if (operand >= kOperandConstant) {
    return operand - kOperandConstant < data.constants
               ? nullptr
               : "constant vector out of range";
  }
  if (operand >= kOperandTemporary &&
      operand - kOperandTemporary < data.temporaries) {
    return (defined & (1u << (operand - kOperandTemporary)))
               ? nullptr
               : "temporary read before written";
  }
  return "unknown operand";
}

// Marks `operand` written; nullptr when it may be written.
const char* MarkWritten(uint8_t operand, uint32_t* defined,
                        const OpDataFusedRnn& data) {
  if (operand == kOperandNewState) {
    *defined |= kDefinedNew;
    return nullptr;
  }
  if (operand >= kOperandTemporary && operand < kOperandConstant &&
      operand - kOperandTemporary < data.temporaries) {
    *defined |= 1u << (operand - kOperandTemporary);
    return nullptr;
  }
  return "instruction writes an operand that is not a temporary or the state";
}

bool ValidShift(int32_t shift) { return shift >= -31 && shift <= 30; }
bool ValidOffset(int32_t offset) { return offset >= -127 && offset <= 128; }

// Checks an instruction's parameters, including what the fast
// requantization relies on. `tables` is input 5 (for the table checks).
const char* CheckParams(uint8_t opcode, const int32_t* p,
                        const OpDataFusedRnn& data, const uint8_t* tables,
                        int8_t* table_scratch) {
  switch (opcode) {
    case kFcInput:
    case kFcRecurrent: {
      const FcParams fc = UnpackFc(p);
      if (fc.multiplier < 0 || !ValidShift(fc.shift) ||
          !ValidOffset(fc.input_offset) || fc.act_min > fc.act_max) {
        return "bad FC quantization parameters";
      }
      if (fc.bias_row < -1 || fc.bias_row >= data.biases) {
        return "FC bias row out of range";
      }
      if (fc.bias_multiplier != 0 &&
          (fc.bias_row < 0 || fc.bias_multiplier < 0 ||
           !ValidShift(fc.bias_shift) || fc.residual_row < 0 ||
           fc.residual_row >= data.residuals)) {
        return "FC bias rescaling out of range";
      }
      return nullptr;
    }
    case kAdd:
    case kSub: {
      // TFLM's QuantizeMultiplierSmallerThanOneExp: right shifts only, so
      // |(x + offset) << 20| * 2 < 2^31 and the fast path is exact.
      const AddParams add = UnpackAdd(p);
      if (add.multiplier1 < 0 || add.multiplier2 < 0 ||
          add.output_multiplier < 0 || add.shift1 > 0 || add.shift2 > 0 ||
          add.output_shift > 0 || add.shift1 < -31 || add.shift2 < -31 ||
          add.output_shift < -31) {
        return "ADD/SUB multipliers must be below one";
      }
      if (!ValidOffset(add.input1_offset) || !ValidOffset(add.input2_offset)) {
        return "ADD/SUB input offset out of the int8 range";
      }
      return add.act_min > add.act_max ? "activation range empty" : nullptr;
    }
    case kMul: {
      // |product| <= 255^2 < 2^16: exact for left shifts up to 13.
      const MulParams mul = UnpackMul(p);
      if (mul.multiplier < 0 || mul.shift < -31 || mul.shift > 13) {
        return "MUL shift out of range";
      }
      if (!ValidOffset(mul.input1_offset) || !ValidOffset(mul.input2_offset)) {
        return "MUL input offset out of the int8 range";
      }
      return mul.act_min > mul.act_max ? "activation range empty" : nullptr;
    }
    case kLut: {
      if (p[0] < 0 || TableBytes(tables + p[0], data.table_bytes - p[0]) < 0) {
        return "table offset or encoding invalid";
      }
      const int8_t* decoded;
      return DecodeTable(tables + p[0], table_scratch, &decoded)
                 ? nullptr
                 : "table decodes to values outside int8";
    }
    default:
      return "unknown opcode";
  }
}

TfLiteStatus ValidateProgram(const int32_t* program, int words,
                             const uint8_t* tables, OpDataFusedRnn* data,
                             const char* name) {
  int position = kHeaderWords;
  bool slot_written[1024] = {};
  int8_t table_scratch[kTableSize];
  for (int step = 0; step < data->steps; ++step) {
    if (position + kStepWords > words) {
      MicroPrintf("%s: program ends at step %d", name, step);
      return kTfLiteError;
    }
    const int input_slot = program[position];
    const int output_slot = program[position + 1];
    const int count = program[position + 2];
    position += kStepWords;
    if (input_slot < 0 || input_slot >= data->steps || output_slot < 0 ||
        output_slot >= data->steps || count < 1) {
      MicroPrintf("%s: step %d has slots %d/%d and %d instructions", name,
                  step, input_slot, output_slot, count);
      return kTfLiteError;
    }
    if (data->sequence_output) {
      if (slot_written[output_slot]) {
        MicroPrintf("%s: output slot %d written twice", name, output_slot);
        return kTfLiteError;
      }
      slot_written[output_slot] = true;
    }
    uint32_t defined = step > 0 ? kDefinedPrevious : 0;
    for (int i = 0; i < count; ++i) {
      if (position >= words) {
        MicroPrintf("%s: program ends inside step %d", name, step);
        return kTfLiteError;
      }
      const uint32_t word = static_cast<uint32_t>(program[position]);
      const uint8_t opcode = word & 0xff;
      const uint8_t dst = (word >> 8) & 0xff;
      const uint8_t a = (word >> 16) & 0xff;
      const uint8_t b = (word >> 24) & 0xff;
      const char* error =
          opcode >= kFcInput && opcode <= kLut ? nullptr : "unknown opcode";
      if (error == nullptr && position + 1 + kParamWords[opcode] > words) {
        error = "parameters run past the program";
      }
      if (error == nullptr) {
        error = CheckParams(opcode, program + position + 1, *data, tables,
                            table_scratch);
      }
      if (error == nullptr) {
        switch (opcode) {
          case kFcInput:
            defined |= kDefinedInput;
            break;
          case kFcRecurrent:
            error = CheckRead(a, defined, *data);
            defined |= kDefinedRecurrent;
            break;
          case kLut:
            error = CheckRead(a, defined, *data);
            if (error == nullptr) error = MarkWritten(dst, &defined, *data);
            break;
          default:  // binary
            error = CheckRead(a, defined, *data);
            if (error == nullptr) error = CheckRead(b, defined, *data);
            if (error == nullptr) error = MarkWritten(dst, &defined, *data);
        }
      }
      if (error != nullptr) {
        MicroPrintf("%s: step %d instruction %d (opcode %d): %s", name, step,
                    i, opcode, error);
        return kTfLiteError;
      }
      position += 1 + kParamWords[opcode];
    }
    if (!(defined & kDefinedNew)) {
      MicroPrintf("%s: step %d does not write its hidden state", name, step);
      return kTfLiteError;
    }
  }
  if (position != words) {
    MicroPrintf("%s: program has %d words, its steps use %d", name, words,
                position);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

// Largest |bias| over every FULLY_CONNECTED of the program (rescaled
// biases computed as Eval computes them).
int64_t MaxAbsBias(const int32_t* program, const int32_t* biases,
                   const int8_t* residuals, const OpDataFusedRnn& d) {
  int64_t worst = 0;
  const int rows = d.gates * d.units;
  const int32_t* word = program + kHeaderWords;
  for (int step = 0; step < d.steps; ++step) {
    const int count = word[2];
    word += kStepWords;
    for (int i = 0; i < count; ++i) {
      const uint8_t opcode = static_cast<uint32_t>(word[0]) & 0xff;
      const FcParams fc = UnpackFc(word + 1);
      if ((opcode == kFcInput || opcode == kFcRecurrent) && fc.bias_row >= 0) {
        const sparse::Requantizer q =
            sparse::MakeRequantizer(fc.bias_multiplier, fc.bias_shift);
        for (int r = 0; r < rows; ++r) {
          const int64_t bias = BiasAt(fc, biases + fc.bias_row * rows, q,
                                      residuals + fc.residual_row * rows, r);
          if ((bias < 0 ? -bias : bias) > worst) worst = bias < 0 ? -bias : bias;
        }
      }
      word += 1 + kParamWords[opcode];
    }
  }
  return worst;
}

// A weight input: dense [rows, cols] int8 or a sparse blob of that shape.
TfLiteStatus CheckWeights(const TfLiteTensor* tensor, int rows, int cols,
                          bool sparse_weights, const char* what,
                          const char* name) {
  if (sparse_weights) {
    if (sparse::ValidateSparseWeightTensor(tensor, rows, cols,
                                           /*allow_per_channel=*/false,
                                           what) != kTfLiteOk) {
      MicroPrintf("%s: %s is not a valid sparse weight blob", name, what);
      return kTfLiteError;
    }
    return kTfLiteOk;
  }
  if (tensor == nullptr || tensor->type != kTfLiteInt8 ||
      !tflite::IsConstantTensor(tensor) || tensor->dims->size != 2 ||
      tensor->dims->data[0] != rows || tensor->dims->data[1] != cols ||
      tensor->params.zero_point != 0) {
    MicroPrintf("%s: %s must be constant int8 [%d, %d] with zero point 0",
                name, what, rows, cols);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

// 255 times the largest L1 norm of a row (see OpDataFusedRnn).
int64_t AccumulatorBound(const TfLiteTensor* tensor, int rows, int cols,
                         bool sparse_weights) {
  if (sparse_weights) {
    const SparseMatrix m =
        sparse::ViewSparseBlob(tensor->data.uint8, tensor->bytes);
    return sparse::MaxAbsRowAccumulator(m, nullptr, 255);
  }
  int64_t worst = 0;
  const int8_t* w = tensor->data.int8;
  for (int r = 0; r < rows; ++r) {
    int64_t l1 = 0;
    for (int c = 0; c < cols; ++c) {
      const int v = w[r * cols + c];
      l1 += v < 0 ? -v : v;
    }
    if (l1 > worst) worst = l1;
  }
  return worst * 255;
}

// An optional constant tensor of `type`: 2-D [rows, cols] (cols > 0) or 1-D
// (cols == 0); sets *rows_out to its rows (bytes when 1-D), 0 when absent.
TfLiteStatus CheckConstant(const TfLiteTensor* tensor, TfLiteType type,
                           int cols, const char* what, const char* name,
                           int* rows_out) {
  *rows_out = 0;
  if (tensor == nullptr) return kTfLiteOk;
  const int rank = cols > 0 ? 2 : 1;
  if (tensor->type != type || !tflite::IsConstantTensor(tensor) ||
      tensor->dims->size != rank ||
      (cols > 0 && tensor->dims->data[1] != cols)) {
    MicroPrintf("%s: %s must be a constant %s tensor of rank %d (%d columns)",
                name, what, TfLiteTypeGetName(type), rank, cols);
    return kTfLiteError;
  }
  *rows_out = tensor->dims->data[0];
  return kTfLiteOk;
}

void* FusedRnnInit(TfLiteContext* context, const char* buffer,
                   size_t length) {
  TFLITE_DCHECK(context->AllocatePersistentBuffer != nullptr);
  void* raw =
      context->AllocatePersistentBuffer(context, sizeof(OpDataFusedRnn));
  if (raw == nullptr) return nullptr;
  *static_cast<OpDataFusedRnn*>(raw) = OpDataFusedRnn{};
  return raw;
}

// Sets the scratch offsets and returns the scratch bytes (see Arena above).
size_t LayOutScratch(OpDataFusedRnn* d) {
  const int rows = d->gates * d->units;
  const int int8_bytes = 2 * rows + d->temporaries * d->units +
                         (d->sequence_output ? 0 : 2 * d->units) + kTableSize;
  d->widened_offset = (int8_bytes + 3) & ~3;
  const int widest = d->input_size > d->units ? d->input_size : d->units;
  d->bias_offset =
      (d->widened_offset + static_cast<int>(sizeof(int16_t)) * widest + 3) &
      ~3;
  return d->bias_offset + sizeof(int32_t) * rows;
}

template <int kCell, bool kSparse>
TfLiteStatus FusedRnnPrepare(TfLiteContext* context, TfLiteNode* node) {
  const char* name = OpName(kCell, kSparse);
  TF_LITE_ENSURE(context, node->user_data != nullptr);
  auto* data = static_cast<OpDataFusedRnn*>(node->user_data);
  TF_LITE_ENSURE_EQ(context, node->inputs->size, kInputCount);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, 1);

  tflite::MicroContext* micro_context = tflite::GetMicroContext(context);
  TfLiteTensor* tensors[kInputCount];
  for (int i = 0; i < kInputCount; ++i) {
    tensors[i] = micro_context->AllocateTempInputTensor(node, i);
  }
  TfLiteTensor* output =
      micro_context->AllocateTempOutputTensor(node, kOutputTensor);

  TfLiteStatus status = kTfLiteError;
  do {  // single exit, so every temp tensor is released
    const TfLiteTensor* input = tensors[kInputTensor];
    const TfLiteTensor* program_tensor = tensors[kProgramTensor];
    if (input == nullptr || output == nullptr || program_tensor == nullptr ||
        tensors[kInputWeightsTensor] == nullptr ||
        tensors[kRecurrentWeightsTensor] == nullptr) {
      MicroPrintf("%s: input, weights, program and output are required",
                  name);
      break;
    }
    if (input->type != kTfLiteInt8 || output->type != kTfLiteInt8) {
      MicroPrintf("%s: int8 input and output only (got %s, %s)", name,
                  TfLiteTypeGetName(input->type),
                  TfLiteTypeGetName(output->type));
      break;
    }
    if (program_tensor->type != kTfLiteInt32 ||
        !tflite::IsConstantTensor(program_tensor) ||
        program_tensor->dims->size != 1 ||
        program_tensor->dims->data[0] < kHeaderWords) {
      MicroPrintf("%s: the program must be a constant int32 vector", name);
      break;
    }
    const int32_t* program = program_tensor->data.i32;
    const int words = program_tensor->dims->data[0];
    if (program[0] != 1 || program[1] != kCell) {
      MicroPrintf("%s: program version %d for cell %d; expected version 1 "
                  "for cell %d",
                  name, static_cast<int>(program[0]),
                  static_cast<int>(program[1]), kCell);
      break;
    }
    data->steps = program[2];
    data->input_size = program[3];
    data->units = program[4];
    data->gates = program[5];
    data->temporaries = program[6];
    data->sequence_output = (program[7] & 1) != 0;
    const int expected_gates = kCell == kCellGru ? 3 : 1;
    if (data->steps < 1 || data->steps > 1024 || data->input_size < 1 ||
        data->input_size > 0xffff || data->units < 1 ||
        data->gates != expected_gates || data->gates * data->units > 0xffff ||
        data->temporaries < 0 || data->temporaries > 16 ||
        (program[7] & ~1) != 0) {
      MicroPrintf("%s: bad program header (T %d, I %d, H %d, G %d, K %d, "
                  "flags %d)",
                  name, data->steps, data->input_size, data->units,
                  data->gates, data->temporaries,
                  static_cast<int>(program[7]));
      break;
    }
    const int rows = data->gates * data->units;
    if (tflite::NumElements(input) != data->steps * data->input_size) {
      MicroPrintf("%s: input has %d elements, the program needs T x I = %d",
                  name, static_cast<int>(tflite::NumElements(input)),
                  data->steps * data->input_size);
      break;
    }
    const int output_elements =
        data->sequence_output ? data->steps * data->units : data->units;
    if (tflite::NumElements(output) != output_elements) {
      MicroPrintf("%s: output has %d elements, expected %d", name,
                  static_cast<int>(tflite::NumElements(output)),
                  output_elements);
      break;
    }
    if (CheckWeights(tensors[kInputWeightsTensor], rows, data->input_size,
                     kSparse, "input weights", name) != kTfLiteOk ||
        CheckWeights(tensors[kRecurrentWeightsTensor], rows, data->units,
                     kSparse, "recurrent weights", name) != kTfLiteOk ||
        CheckConstant(tensors[kBiasTensor], kTfLiteInt32, rows, "biases",
                      name, &data->biases) != kTfLiteOk ||
        CheckConstant(tensors[kTablesTensor], kTfLiteInt8, 0, "tables", name,
                      &data->table_bytes) != kTfLiteOk ||
        CheckConstant(tensors[kConstantsTensor], kTfLiteInt8, data->units,
                      "constant vectors", name,
                      &data->constants) != kTfLiteOk ||
        CheckConstant(tensors[kResidualsTensor], kTfLiteInt8, rows,
                      "bias residuals", name, &data->residuals) != kTfLiteOk) {
      break;
    }
    const uint8_t* tables = tensors[kTablesTensor] != nullptr
                                ? tensors[kTablesTensor]->data.uint8
                                : nullptr;
    if (ValidateProgram(program, words, tables, data, name) != kTfLiteOk) {
      break;
    }
    data->input_bound = AccumulatorBound(tensors[kInputWeightsTensor], rows,
                                         data->input_size, kSparse);
    data->recurrent_bound = AccumulatorBound(tensors[kRecurrentWeightsTensor],
                                             rows, data->units, kSparse);
    data->max_abs_bias = MaxAbsBias(
        program,
        tensors[kBiasTensor] != nullptr ? tensors[kBiasTensor]->data.i32
                                        : nullptr,
        tensors[kResidualsTensor] != nullptr
            ? tensors[kResidualsTensor]->data.int8
            : nullptr,
        *data);
    status = context->RequestScratchBufferInArena(
        context, LayOutScratch(data), &data->scratch_index);
  } while (false);

  for (TfLiteTensor* tensor : tensors) {
    if (tensor != nullptr) micro_context->DeallocateTempTfLiteTensor(tensor);
  }
  micro_context->DeallocateTempTfLiteTensor(output);
  return status;
}

// ---------------------------------------------------------------------------
// Eval.

// x16[i] = source[i] + offset, the activations of one FULLY_CONNECTED.
inline void Widen(const int8_t* source, int n, int32_t offset, int16_t* x16) {
  for (int i = 0; i < n; ++i) {
    x16[i] = static_cast<int16_t>(source[i] + offset);
  }
}

inline int32_t DenseRowDot(const int8_t* w, const int16_t* x, int cols,
                           int32_t acc) {
  int c = 0;
  for (; c + 4 <= cols; c += 4) {
    acc += w[c] * x[c] + w[c + 1] * x[c + 1] + w[c + 2] * x[c + 2] +
           w[c + 3] * x[c + 3];
  }
  for (; c < cols; ++c) acc += w[c] * x[c];
  return acc;
}

// ---------------------------------------------------------------------------
// Cortex-M4 sparse FULLY_CONNECTED rows in Thumb-2 assembly, for the case
// every layer takes (index width 1, fast requantization with a right shift
// of 1..21, activation range the whole of int8; SparseFc handles the rest
// and the host). As in sparse_lstm.cc, the 32 most recent non-zeros of a
// row run as straight-line slots entered by a table branch (16 bytes per
// slot, 5 cycles per non-zero), every constant in a register. The output
// offset is folded into the rounding term: (x + (x < 0 ? -1 : 0) + half +
// (offset << shift)) >> shift is exactly Apply(acc) + offset when no sum
// leaves int32 (|x| < 2^30 and a shift <= 21 leave room), and SSAT clamps
// to [-128, 127].
#if KE_SPARSE_USE_DSP && !TFLITE_SINGLE_ROUNDING && \
    !defined(KE_SPARSE_USE_TFLM_REQUANTIZE)
#define KE_FUSED_RNN_USE_ASM 1

// Field offsets are fixed by the assembly below (static_assert checks them).
struct FcRowsArgs {
  const uint8_t* counts;   // 0: one count byte per row
  const uint8_t* indices;  // 4: column index bytes
  const int8_t* values;    // 8: int8 non-zeros
  const int16_t* x;        // 12: activations + input offset (int16)
  int8_t* out;             // 16: first output row
  int8_t* out_end;         // 20: one past the last output row
  int32_t multiplier;      // 24
  int32_t rounding;        // 28: half + (output offset << right shift)
  int32_t right_shift;     // 32: 1..21
  const int32_t* bias;     // 36: int32 per row (the bias variant only)
};
static_assert(offsetof(FcRowsArgs, bias) == 36, "assembly field offsets");
constexpr int kAsmMaxRightShift = 21;

extern "C" {
// out[r] = ssat8(requant(W[r] . x) + offset), without and with bias[r].
void ke_fused_rnn_fc_rows(const FcRowsArgs* args);
void ke_fused_rnn_fc_rows_bias(const FcRowsArgs* args);
}

// Registers: r0 counts, r1 indices, r2 values, r3 x, r4 out, r5 out_end,
// r6 multiplier, r7 rounding, r8 right shift, r9 accumulator, r10 row
// count, r11 index then activation, r12 bias, lr weight. TBH jumps to the
// slot that leaves `count` slots to run; rows of more than 32 non-zeros run
// the excess in a loop first.
__asm__(KE_THUMB_FUNCTION_MACRO R"(
  .macro KE_RNN_SLOT
    ldrb.w r11, [r1], #1
    ldrsb.w lr, [r2], #1
    ldrsh.w r11, [r3, r11, lsl #1]
    smlabb r9, lr, r11, r9
  .endm
  .macro KE_RNN_FC_ROWS name, bias
  KE_FUNCTION \name
  push {r4-r11, lr}
  ldr r1, [r0, #4]
  ldr r2, [r0, #8]
  ldr r3, [r0, #12]
  ldr r4, [r0, #16]
  ldr r5, [r0, #20]
  ldr r6, [r0, #24]
  ldr r7, [r0, #28]
  ldr r8, [r0, #32]
  ldr r12, [r0, #36]
  ldr r0, [r0, #0]
  cmp r4, r5
  beq 9f
  .align 2
1:
  ldrb r10, [r0], #1
  .if \bias
  ldr r9, [r12], #4
  .else
  mov.w r9, #0
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
  .align 2
.Lslots\@:
  .rept 32
  KE_RNN_SLOT
  .endr
  lsls r9, r9, #1
  smmulr r9, r9, r6
  add.w r9, r9, r9, asr #31
  add r9, r7
  asr.w r9, r9, r8
  ssat r9, #8, r9
  strb r9, [r4], #1
  cmp r4, r5
  bne 1b
9:
  pop {r4-r11, pc}
6:
  sub r10, r10, #32
7:
  KE_RNN_SLOT
  subs r10, #1
  bne 7b
  mov r10, #32
  b 2b
  .size \name, . - \name
  .endm
  KE_RNN_FC_ROWS ke_fused_rnn_fc_rows, 0
  KE_RNN_FC_ROWS ke_fused_rnn_fc_rows_bias, 1
  .purgem KE_RNN_SLOT
  .purgem KE_RNN_FC_ROWS
  .purgem KE_FUNCTION
  .text
)");
#else
#define KE_FUSED_RNN_USE_ASM 0
#endif

// out[r] = clamp(requant(bias[r] + W[r] . x16) + output_offset): the
// arithmetic of reference_integer_ops::FullyConnected (x16 = x + offset).
template <bool kFast, int W>
void SparseFc(const SparseMatrix& m, const int16_t* x16, const int32_t* bias,
              const FcParams& p, int8_t* out) {
  const uint8_t* counts = m.row_counts;
  const uint8_t* indices = m.col_indices;
  const int8_t* values = m.values;
  const Requant fast = MakeRequant(p.multiplier, p.shift, 0);
  const sparse::Requantizer generic =
      sparse::MakeRequantizer(p.multiplier, p.shift);
  for (int r = 0; r < m.rows; ++r) {
    const int32_t acc = SparseRowDot<W>(indices, values, LoadIndex<W>(counts),
                                        x16, bias != nullptr ? bias[r] : 0);
    counts += W;
    const int32_t scaled =
        kFast ? Apply(acc, fast) : sparse::Requantize(acc, generic);
    out[r] = Clamp(scaled + p.output_offset, p.act_min, p.act_max);
  }
}

template <bool kFast>
void DenseFc(const int8_t* w, int rows, int cols, const int16_t* x16,
             const int32_t* bias, const FcParams& p, int8_t* out) {
  const Requant fast = MakeRequant(p.multiplier, p.shift, 0);
  const sparse::Requantizer generic =
      sparse::MakeRequantizer(p.multiplier, p.shift);
  for (int r = 0; r < rows; ++r) {
    const int32_t acc = DenseRowDot(w + r * cols, x16, cols,
                                    bias != nullptr ? bias[r] : 0);
    const int32_t scaled =
        kFast ? Apply(acc, fast) : sparse::Requantize(acc, generic);
    out[r] = Clamp(scaled + p.output_offset, p.act_min, p.act_max);
  }
}

void FullyConnected(const Matrix& m, int64_t bound, const int16_t* x16,
                    const int32_t* bias, const FcParams& p, int8_t* out) {
  const bool fast = bound <= sparse::FastRequantizeLimit(p.shift);
  if (m.dense != nullptr) {
    (fast ? &DenseFc<true> : &DenseFc<false>)(m.dense, m.rows, m.cols, x16,
                                              bias, p, out);
  } else if (m.sparse.index_bytes == 1) {
#if KE_FUSED_RNN_USE_ASM
    if (fast && p.shift < 0 && p.shift >= -kAsmMaxRightShift &&
        p.act_min == -128 && p.act_max == 127) {
      const int32_t right_shift = -p.shift;
      const FcRowsArgs args = {
          m.sparse.row_counts, m.sparse.col_indices, m.sparse.values, x16,
          out, out + m.rows, p.multiplier,
          (1 << (right_shift - 1)) + p.output_offset * (1 << right_shift),
          right_shift, bias};
      (bias != nullptr ? ke_fused_rnn_fc_rows_bias : ke_fused_rnn_fc_rows)(
          &args);
      return;
    }
#endif
    (fast ? &SparseFc<true, 1> : &SparseFc<false, 1>)(m.sparse, x16, bias, p,
                                                      out);
  } else {
    (fast ? &SparseFc<true, 2> : &SparseFc<false, 2>)(m.sparse, x16, bias, p,
                                                      out);
  }
}

#if KE_FUSED_RNN_USE_ASM
// ADD / SUB in assembly (21 cycles an element instead of about 60: GCC
// spilled the three requantizations' constants). TFLM rescales the input
// at the larger scale by exactly 1/2 (multiplier 2^30, shift 0), which
// turns (v << 20) into v << 19 with no rounding: its "unit" term is one
// shifted add. The other, "general" input takes Apply with a right shift;
// the unit input's offset is folded into its rounding term and the output
// offset into the output's, as in the FC rows above.
struct AddRowsArgs {
  const int8_t* general;       // 0: the input at the smaller scale
  const int8_t* unit;          // 4: the input at the larger scale
  int8_t* out;                 // 8
  int8_t* out_end;             // 12
  int32_t general_offset;      // 16: input offset << 21
  int32_t general_multiplier;  // 20
  int32_t general_rounding;    // 24: half +- (unit offset << (19 + shift))
  int32_t general_shift;       // 28: right shift, 1..31
  int32_t output_multiplier;   // 32
  int32_t output_rounding;     // 36: half + (output offset << shift)
  int32_t output_shift;        // 40: right shift, 1..21
};
static_assert(offsetof(AddRowsArgs, output_shift) == 40,
              "assembly field offsets");

extern "C" {
// out = ssat8(requant(general +- unit)): g + u, g - u, u - g.
void ke_fused_rnn_add(const AddRowsArgs* args);
void ke_fused_rnn_sub(const AddRowsArgs* args);
void ke_fused_rnn_sub_reversed(const AddRowsArgs* args);
}

// Registers: r0 general, r1 unit, r2 out, r3 out_end, r4-r7 the general
// input's offset, multiplier, rounding and shift, r8-r10 the output's
// multiplier, rounding and shift, r12 and lr the element.
__asm__(KE_THUMB_FUNCTION_MACRO R"(
  .macro KE_RNN_ADD name, combine
  KE_FUNCTION \name
  push {r4-r10, lr}
  ldr r1, [r0, #4]
  ldr r2, [r0, #8]
  ldr r3, [r0, #12]
  ldr r4, [r0, #16]
  ldr r5, [r0, #20]
  ldr r6, [r0, #24]
  ldr r7, [r0, #28]
  ldr r8, [r0, #32]
  ldr r9, [r0, #36]
  ldr r10, [r0, #40]
  ldr r0, [r0, #0]
  cmp r2, r3
  beq 9f
  .align 2
1:
  ldrsb r12, [r0], #1
  ldrsb lr, [r1], #1
  add.w r12, r4, r12, lsl #21
  smmulr r12, r12, r5
  add.w r12, r12, r12, asr #31
  add r12, r6
  asr.w r12, r12, r7
  \combine r12, r12, lr, lsl #19
  lsls r12, r12, #1
  smmulr r12, r12, r8
  add.w r12, r12, r12, asr #31
  add r12, r9
  asr.w r12, r12, r10
  ssat r12, #8, r12
  strb r12, [r2], #1
  cmp r2, r3
  bne 1b
9:
  pop {r4-r10, pc}
  .size \name, . - \name
  .endm
  KE_RNN_ADD ke_fused_rnn_add, add.w
  KE_RNN_ADD ke_fused_rnn_sub, sub.w
  KE_RNN_ADD ke_fused_rnn_sub_reversed, rsb.w
  .purgem KE_RNN_ADD
  .purgem KE_FUNCTION
  .text
)");

// Runs AddSub in assembly where the parameters allow (returns whether it
// did): one input at multiplier 2^30, shift 0; the other shifting right;
// an output right shift of 1..21 and no activation clamp. |general
// multiply| < 2^28, so the folded rounding terms may reach 2^30.
bool AddSubAsm(bool subtract, const int8_t* a, const int8_t* b, int n,
               const AddParams& p, int8_t* out) {
  constexpr int32_t kUnit = 1 << 30;
  const bool unit2 = p.multiplier2 == kUnit && p.shift2 == 0;
  if (!unit2 && !(p.multiplier1 == kUnit && p.shift1 == 0)) return false;
  const int32_t general_shift = unit2 ? -p.shift1 : -p.shift2;
  const int32_t output_shift = -p.output_shift;
  if (general_shift < 1 || output_shift < 1 ||
      output_shift > kAsmMaxRightShift || p.act_min != -128 ||
      p.act_max != 127) {
    return false;
  }
  const int32_t unit_offset = unit2 ? p.input2_offset : p.input1_offset;
  // x_general + x_unit adds the unit offset, the subtractions take it away.
  const int64_t general_rounding =
      (int64_t{1} << (general_shift - 1)) +
      (subtract ? -1 : 1) *
          (static_cast<int64_t>(unit_offset) << (19 + general_shift));
  if (general_rounding > (int64_t{1} << 30) ||
      general_rounding < -(int64_t{1} << 30)) {
    return false;
  }
  const AddRowsArgs args = {
      unit2 ? a : b,
      unit2 ? b : a,
      out,
      out + n,
      (unit2 ? p.input1_offset : p.input2_offset) * (1 << 21),
      unit2 ? p.multiplier1 : p.multiplier2,
      static_cast<int32_t>(general_rounding),
      general_shift,
      p.output_multiplier,
      (1 << (output_shift - 1)) + p.output_offset * (1 << output_shift),
      output_shift};
  (!subtract ? ke_fused_rnn_add
   : unit2   ? ke_fused_rnn_sub
             : ke_fused_rnn_sub_reversed)(&args);
  return true;
}
#endif

// reference_ops::Add / Sub on int8: both inputs rescaled to 2 x the larger
// input scale with 20 extra bits, summed, rescaled to the output.
template <bool kSubtract>
void AddSub(const int8_t* a, const int8_t* b, int n, const AddParams& p,
            int8_t* out) {
#if KE_FUSED_RNN_USE_ASM
  if (AddSubAsm(kSubtract, a, b, n, p, out)) return;
#endif
  const Requant q1 = MakeRequant(p.multiplier1, p.shift1, 20);
  const Requant q2 = MakeRequant(p.multiplier2, p.shift2, 20);
  const Requant qo = MakeRequant(p.output_multiplier, p.output_shift, 0);
  for (int i = 0; i < n; ++i) {
    const int32_t x = Apply(a[i] + p.input1_offset, q1);
    const int32_t y = Apply(b[i] + p.input2_offset, q2);
    out[i] = Clamp(Apply(kSubtract ? x - y : x + y, qo) + p.output_offset,
                   p.act_min, p.act_max);
  }
}

#if KE_FUSED_RNN_USE_ASM
// MUL in assembly when it shifts right by 1..21 with no activation clamp
// (17 cycles an element instead of about 32); |product| < 2^16, so the
// output offset folds into the rounding term as in the FC rows.
struct MulRowsArgs {
  const int8_t* a;     // 0
  const int8_t* b;     // 4
  int8_t* out;         // 8
  int8_t* out_end;     // 12
  int32_t offset1;     // 16
  int32_t offset2;     // 20
  int32_t multiplier;  // 24
  int32_t rounding;    // 28: half + (output offset << shift)
  int32_t shift;       // 32: right shift, 1..21
};
static_assert(offsetof(MulRowsArgs, shift) == 32, "assembly field offsets");

extern "C" void ke_fused_rnn_mul(const MulRowsArgs* args);

// Registers: r0 a, r1 b, r2 out, r3 out_end, r4 and r5 the input offsets,
// r6-r8 multiplier, rounding and shift, r12 and lr the element.
__asm__(KE_THUMB_FUNCTION_MACRO R"(
  KE_FUNCTION ke_fused_rnn_mul
  push {r4-r8, lr}
  ldr r1, [r0, #4]
  ldr r2, [r0, #8]
  ldr r3, [r0, #12]
  ldr r4, [r0, #16]
  ldr r5, [r0, #20]
  ldr r6, [r0, #24]
  ldr r7, [r0, #28]
  ldr r8, [r0, #32]
  ldr r0, [r0, #0]
  cmp r2, r3
  beq 9f
  .align 2
1:
  ldrsb r12, [r0], #1
  ldrsb lr, [r1], #1
  add r12, r4
  add lr, r5
  mul r12, r12, lr
  lsls r12, r12, #1
  smmulr r12, r12, r6
  add.w r12, r12, r12, asr #31
  add r12, r7
  asr.w r12, r12, r8
  ssat r12, #8, r12
  strb r12, [r2], #1
  cmp r2, r3
  bne 1b
9:
  pop {r4-r8, pc}
  .size ke_fused_rnn_mul, . - ke_fused_rnn_mul
  .purgem KE_FUNCTION
  .text
)");
#endif

// reference_integer_ops::Mul on int8.
void Mul(const int8_t* a, const int8_t* b, int n, const MulParams& p,
         int8_t* out) {
#if KE_FUSED_RNN_USE_ASM
  if (p.shift < 0 && p.shift >= -kAsmMaxRightShift && p.act_min == -128 &&
      p.act_max == 127) {
    const int32_t shift = -p.shift;
    const MulRowsArgs args = {
        a, b, out, out + n, p.input1_offset, p.input2_offset, p.multiplier,
        (1 << (shift - 1)) + p.output_offset * (1 << shift), shift};
    ke_fused_rnn_mul(&args);
    return;
  }
#endif
  const Requant q = MakeRequant(p.multiplier, p.shift, 0);
  for (int i = 0; i < n; ++i) {
    const int32_t product = (a[i] + p.input1_offset) * (b[i] + p.input2_offset);
    out[i] = Clamp(Apply(product, q) + p.output_offset, p.act_min, p.act_max);
  }
}

void Lut(const int8_t* a, int n, const int8_t* table, int8_t* out) {
  for (int i = 0; i < n; ++i) {
    out[i] = table[static_cast<uint8_t>(a[i]) ^ 0x80];
  }
}

struct Registers {
  int8_t* input_full;       // X, G*H
  int8_t* recurrent_full;   // R, G*H
  int8_t* temporaries;      // K*H
  const int8_t* previous;   // previous state, H
  int8_t* state;            // this step's state, H
  const int8_t* constants;  // C*H
  int units;
};

inline const int8_t* Read(uint8_t operand, const Registers& reg) {
  if (operand < kOperandRecurrentBlock) {
    return reg.input_full + operand * reg.units;
  }
  if (operand < kOperandPreviousState) {
    return reg.recurrent_full + (operand - kOperandRecurrentBlock) * reg.units;
  }
  if (operand == kOperandPreviousState) return reg.previous;
  if (operand == kOperandNewState) return reg.state;
  if (operand >= kOperandConstant) {
    return reg.constants + (operand - kOperandConstant) * reg.units;
  }
  return reg.temporaries + (operand - kOperandTemporary) * reg.units;
}

// Prepare admits only the state and temporaries as destinations.
inline int8_t* Write(uint8_t operand, const Registers& reg) {
  return operand == kOperandNewState
             ? reg.state
             : reg.temporaries + (operand - kOperandTemporary) * reg.units;
}

Matrix MakeMatrix(const TfLiteEvalTensor* tensor, int rows, int cols,
                  bool sparse_weights) {
  Matrix m{};
  m.rows = rows;
  m.cols = cols;
  if (sparse_weights) {
    m.sparse = sparse::ViewSparseBlob(
        tflite::micro::GetTensorData<uint8_t>(tensor), tensor->dims->data[0]);
  } else {
    m.dense = tflite::micro::GetTensorData<int8_t>(tensor);
  }
  return m;
}

template <bool kSparse>
TfLiteStatus FusedRnnEval(TfLiteContext* context, TfLiteNode* node) {
  TFLITE_DCHECK(node->user_data != nullptr);
  const auto& d = *static_cast<const OpDataFusedRnn*>(node->user_data);
  const int rows = d.gates * d.units;
  const auto input_data = [&](int index) {
    return tflite::micro::GetEvalInput(context, node, index);
  };
  const int8_t* input =
      tflite::micro::GetTensorData<int8_t>(input_data(kInputTensor));
  const Matrix input_weights = MakeMatrix(input_data(kInputWeightsTensor),
                                          rows, d.input_size, kSparse);
  const Matrix recurrent_weights = MakeMatrix(
      input_data(kRecurrentWeightsTensor), rows, d.units, kSparse);
  const int32_t* biases =
      tflite::micro::GetOptionalTensorData<int32_t>(input_data(kBiasTensor));
  const int32_t* program =
      tflite::micro::GetTensorData<int32_t>(input_data(kProgramTensor));
  const uint8_t* tables =
      tflite::micro::GetOptionalTensorData<uint8_t>(input_data(kTablesTensor));
  const int8_t* residuals = tflite::micro::GetOptionalTensorData<int8_t>(
      input_data(kResidualsTensor));
  int8_t* output = tflite::micro::GetTensorData<int8_t>(
      tflite::micro::GetEvalOutput(context, node, kOutputTensor));

  auto* scratch =
      static_cast<int8_t*>(context->GetScratchBuffer(context, d.scratch_index));
  Registers reg;
  reg.units = d.units;
  reg.input_full = scratch;
  reg.recurrent_full = scratch + rows;
  reg.temporaries = scratch + 2 * rows;
  reg.constants = tflite::micro::GetOptionalTensorData<int8_t>(
      input_data(kConstantsTensor));
  int8_t* alternate = reg.temporaries + d.temporaries * d.units;
  int8_t* table_scratch =
      alternate + (d.sequence_output ? 0 : 2 * d.units);
  auto* x16 = reinterpret_cast<int16_t*>(scratch + d.widened_offset);
  auto* bias_row = reinterpret_cast<int32_t*>(scratch + d.bias_offset);
  const int64_t input_bound = d.input_bound + d.max_abs_bias;
  const int64_t recurrent_bound = d.recurrent_bound + d.max_abs_bias;

  reg.previous = nullptr;
  const int32_t* word = program + kHeaderWords;
  for (int step = 0; step < d.steps; ++step) {
    const int8_t* x = input + word[0] * d.input_size;
    if (d.sequence_output) {
      reg.state = output + word[1] * d.units;
    } else {
      reg.state =
          step == d.steps - 1 ? output : alternate + (step & 1) * d.units;
    }
    const int count = word[2];
    word += kStepWords;
    for (int i = 0; i < count; ++i) {
      const uint32_t head = static_cast<uint32_t>(word[0]);
      const uint8_t opcode = head & 0xff;
      const int32_t* p = word + 1;
      const int8_t* a = Read((head >> 16) & 0xff, reg);
      switch (opcode) {
        case kFcInput:
        case kFcRecurrent: {
          const FcParams fc = UnpackFc(p);
          const bool recurrent = opcode == kFcRecurrent;
          Widen(recurrent ? a : x, recurrent ? d.units : d.input_size,
                fc.input_offset, x16);
          FullyConnected(recurrent ? recurrent_weights : input_weights,
                         recurrent ? recurrent_bound : input_bound, x16,
                         ComputeBias(fc, biases, residuals, rows,
                                     d.max_abs_bias, bias_row),
                         fc, recurrent ? reg.recurrent_full : reg.input_full);
          break;
        }
        case kAdd:
          AddSub<false>(a, Read(head >> 24, reg), d.units, UnpackAdd(p),
                        Write((head >> 8) & 0xff, reg));
          break;
        case kSub:
          AddSub<true>(a, Read(head >> 24, reg), d.units, UnpackAdd(p),
                       Write((head >> 8) & 0xff, reg));
          break;
        case kMul:
          Mul(a, Read(head >> 24, reg), d.units, UnpackMul(p),
              Write((head >> 8) & 0xff, reg));
          break;
        default: {  // kLut (Prepare admits no other opcode)
          const int8_t* table;
          DecodeTable(tables + p[0], table_scratch, &table);
          Lut(a, d.units, table, Write((head >> 8) & 0xff, reg));
        }
      }
      word += 1 + kParamWords[opcode];
    }
    reg.previous = reg.state;
  }
  return kTfLiteOk;
}

}  // namespace

TFLMRegistration Register_SIMPLE_RNN() {
  return tflite::micro::RegisterOp(FusedRnnInit,
                                   FusedRnnPrepare<kCellSimpleRnn, false>,
                                   FusedRnnEval<false>);
}

TFLMRegistration Register_SPARSE_SIMPLE_RNN() {
  return tflite::micro::RegisterOp(FusedRnnInit,
                                   FusedRnnPrepare<kCellSimpleRnn, true>,
                                   FusedRnnEval<true>);
}

TFLMRegistration Register_GRU() {
  return tflite::micro::RegisterOp(
      FusedRnnInit, FusedRnnPrepare<kCellGru, false>, FusedRnnEval<false>);
}

TFLMRegistration Register_SPARSE_GRU() {
  return tflite::micro::RegisterOp(
      FusedRnnInit, FusedRnnPrepare<kCellGru, true>, FusedRnnEval<true>);
}

}  // namespace keras_expander
