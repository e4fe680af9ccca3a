// Compressed sparse int8 weight matrices for the keras-expander TFLM kernels:
// blob parsing and validation, and the sparse dot-product loops.
//
// Blob layout (little-endian, no padding, no alignment assumed), encoding a
// dense int8 matrix of shape [rows, cols] (TFLite layout: rows = output
// units, cols = input units):
//   bytes 0..1  uint16 rows
//   bytes 2..3  uint16 cols
//   byte  4     index width W in bytes (1 or 2; the exporter writes 1 when
//               cols <= 255, else 2)
//   bytes 5..7  reserved, must be 0 (format version 1)
//   rows x W    per-row non-zero counts (unsigned)
//   nnz x W     column indices (unsigned, strictly ascending within a row,
//               rows in order)
//   nnz x 1     int8 non-zero values, same order
// Byte cost: 8 + W * (rows + nnz) + nnz (dense int8: rows * cols).
//
// The values keep the original tensor's (symmetric, zero point 0)
// quantization, so a dropped weight contributes exactly 0 to an accumulator
// and a sparse dot product equals the dense one bit for bit.

#ifndef KERAS_EXPANDER_FIRMWARE_KERNELS_SPARSE_WEIGHTS_H_
#define KERAS_EXPANDER_FIRMWARE_KERNELS_SPARSE_WEIGHTS_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "flatbuffers/flexbuffers.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/kernels/internal/common.h"

// Cortex-M4 DSP extension: SXTB16 unpacks two int8 weights per
// instruction and SMLA<x>B multiplies a 16-bit lane into the accumulator.
// The 4-values-per-word unpacking assumes little-endian byte order.
#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32) && \
    defined(__ARM_FEATURE_SAT) && !defined(__ARM_BIG_ENDIAN)
#include <arm_acle.h>
#define KE_SPARSE_USE_DSP 1
#else
#define KE_SPARSE_USE_DSP 0
#endif

namespace keras_expander {
namespace sparse {

constexpr int kBlobHeaderBytes = 8;

// A view into a blob validated in Prepare; owns nothing.
struct SparseMatrix {
  const uint8_t* row_counts;   // rows entries of index_bytes each
  const uint8_t* col_indices;  // nnz entries of index_bytes each
  const int8_t* values;        // nnz entries
  int rows;
  int cols;
  int index_bytes;  // W: 1 or 2
};

// Checks a blob completely (header, size, counts, ascending indices < cols)
// against the shape the rest of the op implies; on failure logs a message
// naming `what` and returns kTfLiteError. `nnz` may be null.
TfLiteStatus ValidateSparseBlob(const uint8_t* blob, size_t blob_bytes,
                                int expected_rows, int expected_cols,
                                const char* what, int* nnz);

// Checks that `tensor` can carry a blob (constant int8 1-D tensor, symmetric
// quantization), then validates the blob. `allow_per_channel` permits
// per-channel scales on axis 0 (FULLY_CONNECTED); the LSTM needs per-tensor.
TfLiteStatus ValidateSparseWeightTensor(const TfLiteTensor* tensor,
                                        int expected_rows, int expected_cols,
                                        bool allow_per_channel,
                                        const char* what);

// Eval-time view of a blob already validated in Prepare (no checks, O(1)).
SparseMatrix ViewSparseBlob(const uint8_t* blob, size_t blob_bytes);

// Reads one W-byte little-endian unsigned field without alignment
// assumptions (GCC merges the two byte loads into one unaligned LDRH on
// Cortex-M4).
template <int W>
inline uint32_t LoadIndex(const uint8_t* p) {
  if (W == 1) return p[0];
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8);
}

#if KE_SPARSE_USE_DSP
// SXTB16 of the word rotated right by 8 (bytes 1 and 3 as two int16 lanes).
// GCC does not fold the rotation into SXTB16's ROR operand by itself; CMSIS-NN
// uses the same one-instruction asm.
inline int32_t Sxtb16Ror8(uint32_t word) {
  int32_t result;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(result) : "r"(word));
  return result;
}
#endif

// acc + sum over one row's `count` non-zeros of value * x[index], where x
// already holds activation + input offset as int16. Advances `indices` and
// `values` past the row, so successive calls walk a matrix row by row.
// Blocks of 4 first, then the count % 4 leftovers by two bit tests (cheaper
// per row than a remainder loop or a switch). On Cortex-M4 (GCC 12 -O2) a
// block is 17-18 instructions: 4 LDRB/LDRH (index), 4 LDRSH (activation),
// one LDR and two SXTB16 for the 4 values, 4 SMLABB/SMLATB, compare, branch.
template <int W>
inline int32_t SparseRowDot(const uint8_t*& indices, const int8_t*& values,
                            uint32_t count, const int16_t* x, int32_t acc) {
  const uint8_t* idx = indices;
  const int8_t* val = values;
  const int8_t* const blocks_end = val + (count & ~3u);
  while (val != blocks_end) {
    const int32_t x0 = x[LoadIndex<W>(idx)];
    const int32_t x1 = x[LoadIndex<W>(idx + W)];
    const int32_t x2 = x[LoadIndex<W>(idx + 2 * W)];
    const int32_t x3 = x[LoadIndex<W>(idx + 3 * W)];
    idx += 4 * W;
#if KE_SPARSE_USE_DSP
    uint32_t packed;
    std::memcpy(&packed, val, 4);  // one unaligned LDR
    const int32_t w02 = __sxtb16(static_cast<int32_t>(packed));  // v0, v2
    const int32_t w13 = Sxtb16Ror8(packed);                        // v1, v3
    acc = __smlabb(w02, x0, acc);
    acc = __smlatb(w02, x2, acc);
    acc = __smlabb(w13, x1, acc);
    acc = __smlatb(w13, x3, acc);
#else
    acc += val[0] * x0 + val[1] * x1 + val[2] * x2 + val[3] * x3;
#endif
    val += 4;
  }
  if (count & 2) {
    acc += val[0] * x[LoadIndex<W>(idx)];
    acc += val[1] * x[LoadIndex<W>(idx + W)];
    idx += 2 * W;
    val += 2;
  }
  if (count & 1) {
    acc += *val++ * x[LoadIndex<W>(idx)];
    idx += W;
  }
  indices = idx;
  values = val;
  return acc;
}

// As SparseRowDot for raw int8 activations; also returns the sum of the
// row's weights so the caller adds input_offset * weight_sum once per row
// (exact in int32: sum(w * (x + o)) = sum(w * x) + o * sum(w)). Used where
// no scratch buffer for offset activations is wanted (FULLY_CONNECTED).
template <int W>
inline int32_t SparseRowDotInt8(const uint8_t*& indices, const int8_t*& values,
                                uint32_t count, const int8_t* x,
                                int32_t* weight_sum) {
  const uint8_t* idx = indices;
  const int8_t* val = values;
  int32_t acc = 0;
  int32_t sum = 0;
  for (uint32_t n = count; n != 0; --n) {
    const int32_t w = *val++;
    acc += w * x[LoadIndex<W>(idx)];
    sum += w;
    idx += W;
  }
  indices = idx;
  values = val;
  *weight_sum = sum;
  return acc;
}

// Clamp to [-32768, 32767] (one SSAT on Cortex-M4).
inline int32_t SaturateInt16(int32_t v) {
#if KE_SPARSE_USE_DSP
  return __ssat(v, 16);
#else
  return v < -32768 ? -32768 : (v > 32767 ? 32767 : v);
#endif
}

// TFLM's requantization (tflite::MultiplyByQuantizedMultiplier, int32
// overload) with the shift split and the rounding mask precomputed, inlined
// for the per-row loops: TFLM's function is out of line (TFLITE_NOINLINE) and
// costs about 20 instructions more per call on Cortex-M4. The host and
// Cortex-M4 tests check the two bit-identical; define
// KE_SPARSE_USE_TFLM_REQUANTIZE to call TFLM's function instead (it is always
// used when TFLITE_SINGLE_ROUNDING is set).
struct Requantizer {
  int32_t multiplier;
  int shift;        // as TFLM stores it: > 0 left, < 0 right
  int left_shift;   // max(shift, 0)
  int right_shift;  // max(-shift, 0)
  int32_t mask;     // (1 << right_shift) - 1
};

Requantizer MakeRequantizer(int32_t multiplier, int shift);

// Either shift direction without a branch: one of left_shift and
// right_shift is 0, and each step is the identity for a zero shift (for the
// right shift the mask is 0, so no rounding increment).
inline int32_t Requantize(int32_t acc, const Requantizer& q) {
#if TFLITE_SINGLE_ROUNDING || defined(KE_SPARSE_USE_TFLM_REQUANTIZE)
  return tflite::MultiplyByQuantizedMultiplier(acc, q.multiplier, q.shift);
#else
  // Double rounding: gemmlowp's SaturatingRoundingDoublingHighMul, then
  // RoundingDivideByPOT. Its nudge (2^30, or 1 - 2^30 for a negative product)
  // followed by truncating division by 2^31 equals floor((ab + 2^30) / 2^31)
  // for both signs, i.e. one SMLAL and a shift; the saturating case
  // (a == b == INT32_MIN) cannot occur because multipliers are >= 0.
  const int32_t shifted =
      static_cast<int32_t>(static_cast<uint32_t>(acc) << q.left_shift);
  const int64_t product =
      static_cast<int64_t>(shifted) * q.multiplier + (int64_t{1} << 30);
  const int32_t high = static_cast<int32_t>(product >> 31);
  const int32_t remainder = high & q.mask;
  const int32_t threshold = (q.mask >> 1) + (high < 0 ? 1 : 0);
  return (high >> q.right_shift) + (remainder > threshold ? 1 : 0);
#endif
}

// floor((a * b + 2^31) / 2^32): Cortex-M4 SMMULR, one instruction.
inline int32_t MulHighRounded(int32_t a, int32_t b) {
#if KE_SPARSE_USE_DSP
  int32_t result;
  __asm__("smmulr %0, %1, %2" : "=r"(result) : "r"(a), "r"(b));
  return result;
#else
  return static_cast<int32_t>(
      (static_cast<int64_t>(a) * b + (int64_t{1} << 31)) >> 32);
#endif
}

// The same requantization for accumulators known (from a bound computed in
// Prepare) to satisfy |acc| * 2^(left_shift + 1) < 2^31. Then TFLM's
// doubling high multiply of a = acc * 2^left_shift, floor((a M + 2^30) /
// 2^31), equals SMMULR(2a, M), and its rounding right shift by r >= 1
// (half away from zero) equals (x + 2^(r-1) - (x < 0)) >> r, which cannot
// overflow as |x| < 2^30. 2-5 instructions instead of about 11.
struct FastRequantizer {
  int32_t multiplier;
  int32_t pre_shift;    // left_shift + 1 (the doubling folded in)
  int32_t right_shift;  // 0 for a left (or zero) shift, else >= 1
  int32_t half;         // 2^(right_shift - 1), 0 when right_shift is 0
};

FastRequantizer MakeFastRequantizer(int32_t multiplier, int shift);

// Largest |acc| for which the fast path is exact under `shift` (-1: none).
int64_t FastRequantizeLimit(int shift);

// Bound on |accumulator| of any row: max over rows of |bias[r]| (bias may be
// null) + max_abs_x * sum |W[r, :]|. Walks the whole blob (Prepare only).
int64_t MaxAbsRowAccumulator(const SparseMatrix& m, const int32_t* bias,
                             int32_t max_abs_x);

template <bool kRightShift>
inline int32_t RequantizeFast(int32_t acc, const FastRequantizer& q) {
#if TFLITE_SINGLE_ROUNDING || defined(KE_SPARSE_USE_TFLM_REQUANTIZE)
  return tflite::MultiplyByQuantizedMultiplier(
      acc, q.multiplier, kRightShift ? -q.right_shift : q.pre_shift - 1);
#else
  // A right shift implies left_shift 0: pre_shift is the constant 1 then,
  // which frees a register in the callers' loops.
  const int32_t x = MulHighRounded(
      static_cast<int32_t>(static_cast<uint32_t>(acc)
                           << (kRightShift ? 1 : q.pre_shift)),
      q.multiplier);
  if (!kRightShift) return x;
  return (x + (x >> 31) + q.half) >> q.right_shift;
#endif
}

// The custom options as a FlexBuffer map: returns nullptr and sets *map, or the error message that Prepare
// reports (Init cannot fail).
inline const char* ReadOptionsMap(const char* buffer, size_t length, flexbuffers::Map* map) {
  // The smallest FlexBuffer is 3 bytes (value, type, width).
  if (buffer == nullptr || length < 3) return "custom options (FlexBuffer map) missing";
  const flexbuffers::Reference root =
      flexbuffers::GetRoot(reinterpret_cast<const uint8_t*>(buffer), length);
  if (!root.IsMap()) return "custom options are not a FlexBuffer map";
  *map = root.AsMap();
  return nullptr;
}

}  // namespace sparse
}  // namespace keras_expander

#endif  // KERAS_EXPANDER_FIRMWARE_KERNELS_SPARSE_WEIGHTS_H_
