// Validation of compressed sparse int8 weight blobs (Prepare time only).
//
// Blob (little-endian, unaligned): uint16 rows, uint16 cols, uint8 index
// width W (1 or 2), 3 reserved zero bytes; rows counts of W bytes; nnz
// ascending column indices of W bytes; nnz int8 values.
// Byte cost: 8 + W * (rows + nnz) + nnz (dense int8: rows * cols).

#include "sparse_weights.h"

#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace keras_expander {
namespace sparse {

namespace {

uint32_t ReadField(const uint8_t* p, int width) {
  return width == 1 ? LoadIndex<1>(p) : LoadIndex<2>(p);
}

}  // namespace

TfLiteStatus ValidateSparseBlob(const uint8_t* blob, size_t blob_bytes,
                                int expected_rows, int expected_cols,
                                const char* what, int* nnz_out) {
  if (blob == nullptr || blob_bytes < static_cast<size_t>(kBlobHeaderBytes)) {
    MicroPrintf("%s: sparse blob has %d bytes, fewer than its 8-byte header",
                what, static_cast<int>(blob_bytes));
    return kTfLiteError;
  }
  const int rows = static_cast<int>(LoadIndex<2>(blob));
  const int cols = static_cast<int>(LoadIndex<2>(blob + 2));
  const int width = blob[4];
  if (blob[5] != 0 || blob[6] != 0 || blob[7] != 0) {
    MicroPrintf("%s: sparse blob header bytes 5..7 must be 0 (format v1)",
                what);
    return kTfLiteError;
  }
  if (width != 1 && width != 2) {
    MicroPrintf("%s: sparse blob index width %d, expected 1 or 2", what,
                width);
    return kTfLiteError;
  }
  if (rows != expected_rows || cols != expected_cols) {
    MicroPrintf("%s: sparse blob encodes a %dx%d matrix, the op needs %dx%d",
                what, rows, cols, expected_rows, expected_cols);
    return kTfLiteError;
  }
  const size_t counts_end =
      static_cast<size_t>(kBlobHeaderBytes) + static_cast<size_t>(width) * rows;
  if (blob_bytes < counts_end) {
    MicroPrintf("%s: sparse blob of %d bytes too short for %d row counts",
                what, static_cast<int>(blob_bytes), rows);
    return kTfLiteError;
  }
  const uint8_t* counts = blob + kBlobHeaderBytes;
  int64_t nnz = 0;  // up to 65535 * 65535: wider than int
  for (int r = 0; r < rows; ++r) {
    const int count = static_cast<int>(ReadField(counts + r * width, width));
    if (count > cols) {
      MicroPrintf("%s: row %d has %d non-zeros but only %d columns", what, r,
                  count, cols);
      return kTfLiteError;
    }
    nnz += count;
  }
  const int64_t expected_bytes =
      kBlobHeaderBytes + int64_t{width} * (rows + nnz) + nnz;
  if (static_cast<int64_t>(blob_bytes) != expected_bytes) {
    MicroPrintf(
        "%s: sparse blob has %d bytes, its counts (%d non-zeros, W=%d) "
        "imply 8 + W*(rows+nnz) + nnz = %d",
        what, static_cast<int>(blob_bytes), static_cast<int>(nnz), width,
        static_cast<int>(expected_bytes));
    return kTfLiteError;
  }
  const uint8_t* indices = counts + static_cast<size_t>(width) * rows;
  for (int r = 0; r < rows; ++r) {
    const int count = static_cast<int>(ReadField(counts + r * width, width));
    int previous = -1;
    for (int k = 0; k < count; ++k) {
      const int column = static_cast<int>(ReadField(indices, width));
      indices += width;
      if (column >= cols) {
        MicroPrintf("%s: row %d column index %d out of range (cols %d)", what,
                    r, column, cols);
        return kTfLiteError;
      }
      if (column <= previous) {
        MicroPrintf("%s: row %d column indices not ascending (%d after %d)",
                    what, r, column, previous);
        return kTfLiteError;
      }
      previous = column;
    }
  }
  if (nnz_out != nullptr) *nnz_out = static_cast<int>(nnz);
  return kTfLiteOk;
}

TfLiteStatus ValidateSparseWeightTensor(const TfLiteTensor* tensor,
                                        int expected_rows, int expected_cols,
                                        bool allow_per_channel,
                                        const char* what) {
  if (tensor == nullptr) {
    MicroPrintf("%s: sparse weight tensor is missing", what);
    return kTfLiteError;
  }
  if (tensor->type != kTfLiteInt8) {
    MicroPrintf("%s: sparse weight blob must be int8, got %s", what,
                TfLiteTypeGetName(tensor->type));
    return kTfLiteError;
  }
  if (tensor->dims == nullptr || tensor->dims->size != 1) {
    MicroPrintf("%s: sparse weight blob must be 1-D [blob_bytes]", what);
    return kTfLiteError;
  }
  // The kernel reads the blob in place every Eval: it must be constant data
  // from the model, present already at Prepare.
  if (!tflite::IsConstantTensor(tensor) || tensor->data.raw == nullptr) {
    MicroPrintf("%s: sparse weight blob must be a constant tensor", what);
    return kTfLiteError;
  }
  // A dropped weight contributes nothing only if the zero point is 0.
  if (tensor->params.zero_point != 0) {
    MicroPrintf("%s: sparse weights must be symmetric (zero point %d)", what,
                static_cast<int>(tensor->params.zero_point));
    return kTfLiteError;
  }
  if (tensor->quantization.type == kTfLiteAffineQuantization &&
      tensor->quantization.params != nullptr) {
    const auto* affine = static_cast<const TfLiteAffineQuantization*>(
        tensor->quantization.params);
    if (affine->zero_point != nullptr) {
      for (int i = 0; i < affine->zero_point->size; ++i) {
        if (affine->zero_point->data[i] != 0) {
          MicroPrintf("%s: sparse weights must be symmetric (channel %d "
                      "zero point %d)",
                      what, i, affine->zero_point->data[i]);
          return kTfLiteError;
        }
      }
    }
    if (affine->scale != nullptr && affine->scale->size > 1) {
      if (!allow_per_channel) {
        MicroPrintf("%s: per-channel weight scales are not supported here",
                    what);
        return kTfLiteError;
      }
      if (affine->quantized_dimension != 0 ||
          affine->scale->size != expected_rows) {
        MicroPrintf("%s: per-channel scales must be %d, on axis 0 (rows); "
                    "got %d on axis %d",
                    what, expected_rows, affine->scale->size,
                    static_cast<int>(affine->quantized_dimension));
        return kTfLiteError;
      }
    }
  }
  const size_t blob_bytes = tensor->bytes;
  if (static_cast<size_t>(tensor->dims->data[0]) != blob_bytes) {
    MicroPrintf("%s: sparse blob shape [%d] disagrees with its %d bytes", what,
                tensor->dims->data[0], static_cast<int>(blob_bytes));
    return kTfLiteError;
  }
  return ValidateSparseBlob(tensor->data.uint8, blob_bytes, expected_rows,
                            expected_cols, what, nullptr);
}

SparseMatrix ViewSparseBlob(const uint8_t* blob, size_t blob_bytes) {
  SparseMatrix m;
  m.rows = static_cast<int>(LoadIndex<2>(blob));
  m.cols = static_cast<int>(LoadIndex<2>(blob + 2));
  m.index_bytes = blob[4];
  m.row_counts = blob + kBlobHeaderBytes;
  m.col_indices = m.row_counts + m.index_bytes * m.rows;
  // The values are the last nnz bytes: O(1) instead of summing the counts.
  const size_t nnz = (blob_bytes - kBlobHeaderBytes -
                      static_cast<size_t>(m.index_bytes) * m.rows) /
                     (m.index_bytes + 1);
  m.values = reinterpret_cast<const int8_t*>(blob + blob_bytes - nnz);
  return m;
}

Requantizer MakeRequantizer(int32_t multiplier, int shift) {
  Requantizer q;
  q.multiplier = multiplier;
  q.shift = shift;
  q.left_shift = shift > 0 ? shift : 0;
  q.right_shift = shift > 0 ? 0 : -shift;
  q.mask = static_cast<int32_t>((int64_t{1} << q.right_shift) - 1);
  return q;
}

FastRequantizer MakeFastRequantizer(int32_t multiplier, int shift) {
  FastRequantizer q;
  q.multiplier = multiplier;
  q.pre_shift = (shift > 0 ? shift : 0) + 1;
  q.right_shift = shift < 0 ? -shift : 0;
  q.half = shift < 0 ? static_cast<int32_t>(int64_t{1} << (-shift - 1)) : 0;
  return q;
}

int64_t FastRequantizeLimit(int shift) {
  // Right shifts beyond 31 stay with the generic code.
  if (shift < -31) return -1;
  const int left = shift > 0 ? shift : 0;
  // |acc| * 2^(left + 1) < 2^31.
  return left >= 30 ? 0 : (int64_t{1} << (30 - left)) - 1;
}

int64_t MaxAbsRowAccumulator(const SparseMatrix& m, const int32_t* bias,
                             int32_t max_abs_x) {
  const uint8_t* counts = m.row_counts;
  const int8_t* values = m.values;
  int64_t worst = 0;
  for (int r = 0; r < m.rows; ++r) {
    const uint32_t count =
        m.index_bytes == 1 ? LoadIndex<1>(counts) : LoadIndex<2>(counts);
    counts += m.index_bytes;
    int64_t l1 = 0;
    for (uint32_t k = 0; k < count; ++k) {
      l1 += values[k] < 0 ? -values[k] : values[k];
    }
    values += count;
    int64_t bound = l1 * max_abs_x;
    if (bias != nullptr) bound += bias[r] < 0 ? -int64_t{bias[r]} : bias[r];
    if (bound > worst) worst = bound;
  }
  return worst;
}

}  // namespace sparse
}  // namespace keras_expander
