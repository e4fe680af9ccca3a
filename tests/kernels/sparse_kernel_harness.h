// Shared by the host differential test and the Cortex-M4 bench: tensor
// builders, the blob encoder, and stock-vs-sparse runners.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "flatbuffers/flexbuffers.h"
#include "sparse_ops.h"
#include "sparse_weights.h"
#include "tensorflow/lite/c/builtin_op_data.h"
#include "tensorflow/lite/kernels/internal/common.h"
#include "tensorflow/lite/micro/kernels/fully_connected.h"
#include "tensorflow/lite/micro/kernels/kernel_runner.h"

namespace tflite {
TFLMRegistration Register_UNIDIRECTIONAL_SEQUENCE_LSTM();
}

// Called around every Invoke (the M4 bench counts instructions there).
inline void (*g_before_invoke)() = nullptr;
inline void (*g_after_invoke)() = nullptr;

namespace {

[[maybe_unused]] int g_failures = 0;
[[maybe_unused]] int g_checks = 0;

#define CHECK(cond, ...)                        \
  do {                                          \
    ++g_checks;                                 \
    if (!(cond)) {                              \
      ++g_failures;                             \
      printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      printf(__VA_ARGS__);                      \
      printf("\n");                             \
    }                                           \
  } while (0)

// ---------------------------------------------------------------------------
// Storage that outlives the tensors pointing into it.
struct Arena {
  std::vector<std::unique_ptr<std::vector<uint8_t>>> blocks;
  template <typename T>
  T* Alloc(size_t n) {
    blocks.emplace_back(new std::vector<uint8_t>(n * sizeof(T) + 16, 0));
    return reinterpret_cast<T*>(blocks.back()->data());
  }
  TfLiteIntArray* Ints(std::initializer_list<int> v) {
    int* p = Alloc<int>(v.size() + 1);
    p[0] = static_cast<int>(v.size());
    int i = 1;
    for (int x : v) p[i++] = x;
    return reinterpret_cast<TfLiteIntArray*>(p);
  }
  TfLiteIntArray* IntsVec(const std::vector<int>& v) {
    int* p = Alloc<int>(v.size() + 1);
    p[0] = static_cast<int>(v.size());
    for (size_t i = 0; i < v.size(); ++i) p[i + 1] = v[i];
    return reinterpret_cast<TfLiteIntArray*>(p);
  }
  TfLiteFloatArray* Floats(const std::vector<float>& v) {
    int* p = Alloc<int>(v.size() + 1);
    p[0] = static_cast<int>(v.size());
    std::memcpy(p + 1, v.data(), v.size() * sizeof(float));
    return reinterpret_cast<TfLiteFloatArray*>(p);
  }
};

TfLiteTensor MakeTensor(Arena& arena, TfLiteType type, void* data,
                        TfLiteIntArray* dims, size_t bytes, float scale,
                        int zero_point, bool constant = false,
                        bool is_variable = false) {
  TfLiteTensor t = {};
  t.type = type;
  t.data.raw = static_cast<char*>(data);
  t.dims = dims;
  t.bytes = bytes;
  t.params.scale = scale;
  t.params.zero_point = zero_point;
  t.allocation_type = constant ? kTfLiteMmapRo : kTfLiteArenaRw;
  t.is_variable = is_variable;
  auto* q = arena.Alloc<TfLiteAffineQuantization>(1);
  q->scale = arena.Floats({scale});
  q->zero_point = arena.Ints({zero_point});
  q->quantized_dimension = 0;
  t.quantization.type = kTfLiteAffineQuantization;
  t.quantization.params = q;
  return t;
}

void SetPerChannel(Arena& arena, TfLiteTensor* t,
                   const std::vector<float>& scales) {
  auto* q = arena.Alloc<TfLiteAffineQuantization>(1);
  q->scale = arena.Floats(scales);
  q->zero_point = arena.IntsVec(std::vector<int>(scales.size(), 0));
  q->quantized_dimension = 0;
  t->quantization.params = q;
  t->params.scale = scales[0];
}

// ---------------------------------------------------------------------------
// The blob encoder (what the Python exporter writes).
std::vector<uint8_t> EncodeBlob(const std::vector<int8_t>& dense, int rows,
                                int cols, int force_width = 0,
                                bool keep_explicit_zeros = false,
                                uint32_t zero_keep_seed = 0) {
  const int w = force_width ? force_width : (cols <= 255 ? 1 : 2);
  std::vector<uint8_t> counts, indices, values;
  std::mt19937 rng(zero_keep_seed);
  auto put = [&](std::vector<uint8_t>& v, int x) {
    v.push_back(static_cast<uint8_t>(x & 0xff));
    if (w == 2) v.push_back(static_cast<uint8_t>(x >> 8));
  };
  for (int r = 0; r < rows; ++r) {
    int count = 0;
    for (int c = 0; c < cols; ++c) {
      const int8_t v = dense[r * cols + c];
      const bool keep = v != 0 || (keep_explicit_zeros && rng() % 7 == 0);
      if (!keep) continue;
      put(indices, c);
      values.push_back(static_cast<uint8_t>(v));
      ++count;
    }
    put(counts, count);
  }
  std::vector<uint8_t> blob = {
      static_cast<uint8_t>(rows & 0xff), static_cast<uint8_t>(rows >> 8),
      static_cast<uint8_t>(cols & 0xff), static_cast<uint8_t>(cols >> 8),
      static_cast<uint8_t>(w), 0, 0, 0};
  blob.insert(blob.end(), counts.begin(), counts.end());
  blob.insert(blob.end(), indices.begin(), indices.end());
  blob.insert(blob.end(), values.begin(), values.end());
  return blob;
}

// Mask patterns.
enum class Pattern { kRandom, kZeroRows, kZeroCols, kZeroRowsAndCols };

std::vector<int8_t> RandomWeights(std::mt19937& rng, int rows, int cols,
                                  double sparsity, Pattern pattern,
                                  bool extreme = false) {
  std::vector<int8_t> w(rows * cols);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::uniform_int_distribution<int> v(-127, 127);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      int value = 0;
      if (u(rng) >= sparsity) {
        do {
          value = extreme ? ((rng() & 1) ? 127 : -128) : v(rng);
        } while (value == 0);
      }
      const bool zero_row =
          (pattern == Pattern::kZeroRows ||
           pattern == Pattern::kZeroRowsAndCols) &&
          (r % 3 == 1 || r == rows - 1);
      const bool zero_col =
          (pattern == Pattern::kZeroCols ||
           pattern == Pattern::kZeroRowsAndCols) &&
          (c % 4 == 2 || c == 0);
      if (zero_row || zero_col) value = 0;
      w[r * cols + c] = static_cast<int8_t>(value);
    }
  }
  return w;
}

// ---------------------------------------------------------------------------
// Registration wrappers that tally persistent and scratch arena bytes.
struct Tally {
  size_t persistent = 0;
  size_t scratch = 0;
};
Tally g_tally;
const TFLMRegistration* g_inner = nullptr;
void* (*g_orig_persistent)(TfLiteContext*, size_t) = nullptr;
TfLiteStatus (*g_orig_scratch)(TfLiteContext*, size_t, int*) = nullptr;

void* TallyPersistent(TfLiteContext* c, size_t bytes) {
  g_tally.persistent += bytes;
  return g_orig_persistent(c, bytes);
}
TfLiteStatus TallyScratch(TfLiteContext* c, size_t bytes, int* index) {
  g_tally.scratch += bytes;
  return g_orig_scratch(c, bytes, index);
}
void* WrapInit(TfLiteContext* c, const char* b, size_t l) {
  g_orig_persistent = c->AllocatePersistentBuffer;
  c->AllocatePersistentBuffer = TallyPersistent;
  void* r = g_inner->init(c, b, l);
  c->AllocatePersistentBuffer = g_orig_persistent;
  return r;
}
TfLiteStatus WrapPrepare(TfLiteContext* c, TfLiteNode* n) {
  g_orig_persistent = c->AllocatePersistentBuffer;
  g_orig_scratch = c->RequestScratchBufferInArena;
  c->AllocatePersistentBuffer = TallyPersistent;
  c->RequestScratchBufferInArena = TallyScratch;
  TfLiteStatus s = g_inner->prepare(c, n);
  c->AllocatePersistentBuffer = g_orig_persistent;
  c->RequestScratchBufferInArena = g_orig_scratch;
  return s;
}
TFLMRegistration Wrapped(const TFLMRegistration& inner) {
  g_inner = &inner;
  g_tally = Tally();
  TFLMRegistration r = inner;
  r.init = WrapInit;
  r.prepare = WrapPrepare;
  return r;
}

// ---------------------------------------------------------------------------
// LSTM.
struct LstmCase {
  std::string name;
  int batch = 1, time = 3, n_input = 5, n_cell = 7;
  bool time_major = false;
  double sparsity[8] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
  Pattern pattern = Pattern::kRandom;
  TfLiteFusedActivation activation = kTfLiteActTanh;
  float cell_clip = 0.0f;
  float input_scale = 0.02f, hidden_scale = 1.0f / 128;
  int input_zp = -3, hidden_zp = 5;
  float weight_scale = 0.004f;  // per matrix, multiplied by (1 + i/10)
  float cell_scale = 1.0f / 2048;
  int bias_range = 3000;
  bool extreme = false;
  bool explicit_zeros = false;
  int force_width = 0;
  uint32_t seed = 1;
};

struct LstmData {
  std::vector<int8_t> dense[8];
  std::vector<std::vector<uint8_t>> blobs;
  std::vector<int32_t> bias[4];
  std::vector<std::vector<int8_t>> inputs;  // sequences
};

LstmData MakeLstmData(const LstmCase& c) {
  std::mt19937 rng(c.seed);
  LstmData d;
  for (int i = 0; i < 8; ++i) {
    const int cols = i < 4 ? c.n_input : c.n_cell;
    d.dense[i] = RandomWeights(rng, c.n_cell, cols, c.sparsity[i], c.pattern,
                               c.extreme);
    d.blobs.push_back(EncodeBlob(d.dense[i], c.n_cell, cols, c.force_width,
                                 c.explicit_zeros, c.seed + i));
  }
  std::uniform_int_distribution<int> b(-c.bias_range, c.bias_range);
  for (int g = 0; g < 4; ++g) {
    d.bias[g].resize(c.n_cell);
    for (auto& x : d.bias[g]) x = b(rng);
  }
  std::uniform_int_distribution<int> in(-128, 127);
  for (int s = 0; s < 3; ++s) {
    std::vector<int8_t> seq(c.batch * c.time * c.n_input);
    for (auto& x : seq) x = static_cast<int8_t>(in(rng));
    d.inputs.push_back(seq);
  }
  return d;
}

struct LstmResult {
  bool prepared = false;
  std::vector<std::vector<uint8_t>> records;  // per sequence: out|h|c
  Tally tally;
};

std::vector<uint8_t> LstmOptions(const LstmCase& c,
                                 const char* drop_key = nullptr,
                                 int version = 1, bool asym = false) {
  flexbuffers::Builder fbb;
  fbb.Map([&]() {
    auto skip = [&](const char* k) {
      return drop_key != nullptr && std::strcmp(k, drop_key) == 0;
    };
    if (!skip("version")) fbb.Int("version", version);
    if (!skip("fused_activation_function"))
      fbb.Int("fused_activation_function", c.activation);
    if (!skip("cell_clip")) fbb.Float("cell_clip", c.cell_clip);
    if (!skip("proj_clip")) fbb.Float("proj_clip", 0.0f);
    if (!skip("time_major")) fbb.Bool("time_major", c.time_major);
    if (!skip("asymmetric_quantize_inputs"))
      fbb.Bool("asymmetric_quantize_inputs", asym);
    if (!skip("diagonal_recurrent_tensors"))
      fbb.Bool("diagonal_recurrent_tensors", false);
  });
  fbb.Finish();
  return fbb.GetBuffer();
}

// Optional hook to corrupt the sparse setup for negative tests.
struct LstmMutation {
  int blob_index = -1;  // 0..7: which weight input
  std::vector<uint8_t> blob;
  bool per_channel = false;
  int weight_zp = 0;
  bool non_constant = false;
  std::vector<uint8_t> options;
};

LstmResult RunLstm(const LstmCase& c, const LstmData& d, bool sparse,
                   const LstmMutation* mutation = nullptr) {
  Arena arena;
  LstmResult result;
  const int B = c.batch, T = c.time, I = c.n_input, N = c.n_cell;
  TfLiteIntArray* in_dims =
      c.time_major ? arena.Ints({T, B, I}) : arena.Ints({B, T, I});
  TfLiteIntArray* out_dims =
      c.time_major ? arena.Ints({T, B, N}) : arena.Ints({B, T, N});
  int8_t* input = arena.Alloc<int8_t>(B * T * I);
  int8_t* output = arena.Alloc<int8_t>(B * T * N);
  int8_t* hidden = arena.Alloc<int8_t>(B * N);
  int16_t* cell = arena.Alloc<int16_t>(B * N);

  std::vector<TfLiteTensor> t;
  t.push_back(MakeTensor(arena, kTfLiteInt8, input, in_dims, B * T * I,
                         c.input_scale, c.input_zp));
  for (int i = 0; i < 8; ++i) {
    const int cols = i < 4 ? I : N;
    const float scale = c.weight_scale * (1.0f + i / 10.0f);
    if (!sparse) {
      int8_t* w = arena.Alloc<int8_t>(N * cols);
      std::memcpy(w, d.dense[i].data(), N * cols);
      t.push_back(MakeTensor(arena, kTfLiteInt8, w, arena.Ints({N, cols}),
                             N * cols, scale, 0, true));
    } else {
      const std::vector<uint8_t>& blob =
          (mutation && mutation->blob_index == i) ? mutation->blob
                                                  : d.blobs[i];
      uint8_t* w = arena.Alloc<uint8_t>(blob.size() + 1) + 1;  // unaligned
      std::memcpy(w, blob.data(), blob.size());
      TfLiteTensor tensor = MakeTensor(
          arena, kTfLiteInt8, w, arena.Ints({static_cast<int>(blob.size())}),
          blob.size(), scale, 0, !(mutation && mutation->non_constant));
      if (mutation && mutation->per_channel && i == 2) {
        SetPerChannel(arena, &tensor, std::vector<float>(N, scale));
      }
      if (mutation && mutation->weight_zp != 0 && i == 3) {
        tensor.params.zero_point = mutation->weight_zp;
      }
      t.push_back(tensor);
    }
  }
  // Gate biases: scale input_scale * weight_scale as the converter writes.
  for (int g = 0; g < 4; ++g) {
    int32_t* b = arena.Alloc<int32_t>(N);
    std::memcpy(b, d.bias[g].data(), N * sizeof(int32_t));
    t.push_back(MakeTensor(arena, kTfLiteInt32, b, arena.Ints({N}),
                           N * sizeof(int32_t),
                           c.input_scale * c.weight_scale, 0, true));
  }
  const int hidden_index = static_cast<int>(t.size());
  t.push_back(MakeTensor(arena, kTfLiteInt8, hidden, arena.Ints({B, N}), B * N,
                         c.hidden_scale, c.hidden_zp, false, true));
  t.push_back(MakeTensor(arena, kTfLiteInt16, cell, arena.Ints({B, N}),
                         B * N * 2, c.cell_scale, 0, false, true));
  const int output_index = static_cast<int>(t.size());
  t.push_back(MakeTensor(arena, kTfLiteInt8, output, out_dims, B * T * N,
                         c.hidden_scale, c.hidden_zp));
  // Stock layout: 0 input, 1-8 weights, 9-11 peephole (absent), 12-15 bias,
  // 16-17 projection (absent), 18 hidden, 19 cell, 20-23 layer norm (absent).
  TfLiteIntArray* inputs = arena.Ints({0, 1, 2, 3, 4, 5, 6, 7, 8, -1, -1, -1, 9,
                                       10, 11, 12, -1, -1, hidden_index,
                                       hidden_index + 1, -1, -1, -1, -1});
  TfLiteIntArray* outputs = arena.Ints({output_index});

  TfLiteUnidirectionalSequenceLSTMParams params = {};
  params.activation = c.activation;
  params.cell_clip = c.cell_clip;
  params.time_major = c.time_major;

  const TFLMRegistration inner =
      sparse ? keras_expander::Register_SPARSE_UNIDIRECTIONAL_SEQUENCE_LSTM()
             : tflite::Register_UNIDIRECTIONAL_SEQUENCE_LSTM();
  const TFLMRegistration reg = Wrapped(inner);
  std::vector<uint8_t> options = (mutation && !mutation->options.empty())
                                     ? mutation->options
                                     : LstmOptions(c);
  tflite::micro::KernelRunner runner(reg, t.data(), static_cast<int>(t.size()),
                                     inputs, outputs,
                                     sparse ? nullptr : &params);
  TfLiteStatus s =
      sparse ? runner.InitAndPrepare(
                   reinterpret_cast<const char*>(options.data()),
                   options.size())
             : runner.InitAndPrepare();
  result.tally = g_tally;
  if (s != kTfLiteOk) return result;
  result.prepared = true;
  auto reset_state = [&]() {
    // What MicroInterpreter::ResetVariableTensors does: fill with zero point.
    std::memset(hidden, static_cast<uint8_t>(c.hidden_zp), B * N);
    std::memset(cell, 0, B * N * 2);
  };
  reset_state();
  // Sequence 0 from reset, 1 continuing the state, 2 after a reset.
  for (size_t seq = 0; seq < d.inputs.size(); ++seq) {
    if (seq == 2) reset_state();
    std::memcpy(input, d.inputs[seq].data(), B * T * I);
    std::memset(output, 0x5a, B * T * N);
    if (g_before_invoke) g_before_invoke();
    const TfLiteStatus invoked = runner.Invoke();
    if (g_after_invoke) g_after_invoke();
    if (invoked != kTfLiteOk) {
      result.prepared = false;
      return result;
    }
    std::vector<uint8_t> rec(output, output + B * T * N);
    rec.insert(rec.end(), reinterpret_cast<uint8_t*>(hidden),
               reinterpret_cast<uint8_t*>(hidden) + B * N);
    rec.insert(rec.end(), reinterpret_cast<uint8_t*>(cell),
               reinterpret_cast<uint8_t*>(cell) + B * N * 2);
    result.records.push_back(rec);
  }
  return result;
}

size_t BlobTotal(const LstmData& d) {
  size_t n = 0;
  for (auto& b : d.blobs) n += b.size();
  return n;
}

// FNV-1a over our outputs: equal across builds iff our bytes are equal.
uint32_t Fnv(const std::vector<std::vector<uint8_t>>& records) {
  uint32_t h = 2166136261u;
  for (const auto& r : records)
    for (uint8_t b : r) h = (h ^ b) * 16777619u;
  return h;
}

void TestLstm(const LstmCase& c) {
  const LstmData d = MakeLstmData(c);
#ifdef KE_SKIP_STOCK
  // Tree without TFLM's reference kernels (CMSIS-NN): hash ours only, to be
  // compared with a run where ours matched the reference byte for byte.
  const LstmResult ours_only = RunLstm(c, d, true);
  CHECK(ours_only.prepared, "%s: sparse kernel failed", c.name.c_str());
  printf("HASH %-40s %08lx\n", c.name.c_str(),
         (unsigned long)Fnv(ours_only.records));
  return;
#endif
  const LstmResult stock = RunLstm(c, d, false);
  const LstmResult ours = RunLstm(c, d, true);
  printf("HASH %-40s %08lx\n", c.name.c_str(),
         (unsigned long)Fnv(ours.records));
  CHECK(stock.prepared, "%s: stock kernel failed", c.name.c_str());
  CHECK(ours.prepared, "%s: sparse kernel failed", c.name.c_str());
  if (!stock.prepared || !ours.prepared) return;
  size_t compared = 0, differing = 0;
  for (size_t s = 0; s < stock.records.size(); ++s) {
    for (size_t i = 0; i < stock.records[s].size(); ++i) {
      ++compared;
      if (stock.records[s][i] != ours.records[s][i]) ++differing;
    }
  }
  // Sanity: the sequences differ from each other (so state carries matter)
  // and the record after a reset differs from the continued one.
  CHECK(differing == 0, "%s: %zu of %zu bytes differ", c.name.c_str(),
        differing, compared);
  size_t nnz = 0, dense = 0;
  for (int i = 0; i < 8; ++i) {
    dense += d.dense[i].size();
    for (int8_t v : d.dense[i]) nnz += v != 0;
  }
  printf("%-40s %s  %6zu bytes compared  nnz %6zu/%6zu  blobs %6zu B (dense "
         "%6zu)  arena stock p%zu+s%zu ours p%zu+s%zu\n",
         c.name.c_str(), differing == 0 ? "PASS" : "FAIL", compared, nnz,
         dense, BlobTotal(d), dense, stock.tally.persistent,
         stock.tally.scratch, ours.tally.persistent, ours.tally.scratch);
}

void ExpectLstmRejected(const char* what, const LstmCase& c,
                        const LstmMutation& m) {
  const LstmData d = MakeLstmData(c);
  const LstmResult r = RunLstm(c, d, true, &m);
  CHECK(!r.prepared, "sparse LSTM accepted %s", what);
  printf("%-40s %s (rejected in Prepare)\n", what, r.prepared ? "FAIL" : "PASS");
}

// ---------------------------------------------------------------------------
// FULLY_CONNECTED.
struct FcCase {
  std::string name;
  std::vector<int> input_shape = {1, 5};
  std::vector<int> output_shape = {1, 7};
  int cols = 5, rows = 7;
  double sparsity = 0.5;
  Pattern pattern = Pattern::kRandom;
  bool per_channel = false;
  bool bias = true;
  bool keep_num_dims = false;
  TfLiteFusedActivation activation = kTfLiteActNone;
  int input_zp = -7, output_zp = 3;
  float input_scale = 0.05f, output_scale = 0.1f, weight_scale = 0.01f;
  bool extreme = false;
  uint32_t seed = 1;
};

std::vector<uint8_t> FcOptions(const FcCase& c, const char* drop = nullptr,
                               int version = 1, bool asym = false) {
  flexbuffers::Builder fbb;
  fbb.Map([&]() {
    auto skip = [&](const char* k) {
      return drop != nullptr && std::strcmp(k, drop) == 0;
    };
    if (!skip("version")) fbb.Int("version", version);
    if (!skip("fused_activation_function"))
      fbb.Int("fused_activation_function", c.activation);
    if (!skip("keep_num_dims")) fbb.Bool("keep_num_dims", c.keep_num_dims);
    if (!skip("asymmetric_quantize_inputs"))
      fbb.Bool("asymmetric_quantize_inputs", asym);
  });
  fbb.Finish();
  return fbb.GetBuffer();
}

struct FcRun {
  bool ok = false;
  std::vector<uint8_t> out;
  Tally tally;
};

FcRun RunFc(const FcCase& c, const std::vector<int8_t>& dense,
            const std::vector<int32_t>& bias, const std::vector<int8_t>& x,
            bool sparse, const std::vector<uint8_t>* blob_override = nullptr,
            const std::vector<uint8_t>* options_override = nullptr) {
  Arena arena;
  FcRun run;
  const int in_n = static_cast<int>(x.size());
  int out_n = 1;
  for (int v : c.output_shape) out_n *= v;
  int8_t* input = arena.Alloc<int8_t>(in_n);
  std::memcpy(input, x.data(), in_n);
  int8_t* output = arena.Alloc<int8_t>(out_n);
  std::memset(output, 0x5a, out_n);
  std::vector<TfLiteTensor> t;
  t.push_back(MakeTensor(arena, kTfLiteInt8, input,
                         arena.IntsVec(c.input_shape), in_n, c.input_scale,
                         c.input_zp));
  std::vector<float> scales(c.rows);
  for (int r = 0; r < c.rows; ++r) {
    scales[r] = c.weight_scale * (0.5f + (r % 5) * 0.3f);
  }
  if (!sparse) {
    int8_t* w = arena.Alloc<int8_t>(dense.size());
    std::memcpy(w, dense.data(), dense.size());
    t.push_back(MakeTensor(arena, kTfLiteInt8, w,
                           arena.Ints({c.rows, c.cols}), dense.size(),
                           c.weight_scale, 0, true));
  } else {
    const std::vector<uint8_t> blob =
        blob_override ? *blob_override : EncodeBlob(dense, c.rows, c.cols);
    uint8_t* w = arena.Alloc<uint8_t>(blob.size() + 3) + 3;  // unaligned
    std::memcpy(w, blob.data(), blob.size());
    t.push_back(MakeTensor(arena, kTfLiteInt8, w,
                           arena.Ints({static_cast<int>(blob.size())}),
                           blob.size(), c.weight_scale, 0, true));
  }
  if (c.per_channel) SetPerChannel(arena, &t.back(), scales);
  int bias_index = -1;
  if (c.bias) {
    int32_t* b = arena.Alloc<int32_t>(c.rows);
    std::memcpy(b, bias.data(), c.rows * 4);
    bias_index = static_cast<int>(t.size());
    t.push_back(MakeTensor(arena, kTfLiteInt32, b, arena.Ints({c.rows}),
                           c.rows * 4, c.input_scale * c.weight_scale, 0,
                           true));
    if (c.per_channel) {
      std::vector<float> bs(c.rows);
      for (int r = 0; r < c.rows; ++r) bs[r] = c.input_scale * scales[r];
      SetPerChannel(arena, &t.back(), bs);
    }
  }
  const int output_index = static_cast<int>(t.size());
  t.push_back(MakeTensor(arena, kTfLiteInt8, output,
                         arena.IntsVec(c.output_shape), out_n, c.output_scale,
                         c.output_zp));
  TfLiteIntArray* inputs = arena.Ints({0, 1, bias_index});
  TfLiteIntArray* outputs = arena.Ints({output_index});
  TfLiteFullyConnectedParams params = {};
  params.activation = c.activation;
  params.keep_num_dims = c.keep_num_dims;
  const TFLMRegistration inner =
      sparse ? keras_expander::Register_SPARSE_FULLY_CONNECTED()
             : tflite::Register_FULLY_CONNECTED();
  const TFLMRegistration reg = Wrapped(inner);
  const std::vector<uint8_t> options =
      options_override ? *options_override : FcOptions(c);
  tflite::micro::KernelRunner runner(reg, t.data(), static_cast<int>(t.size()),
                                     inputs, outputs,
                                     sparse ? nullptr : &params);
  TfLiteStatus s =
      sparse ? runner.InitAndPrepare(
                   reinterpret_cast<const char*>(options.data()),
                   options.size())
             : runner.InitAndPrepare();
  run.tally = g_tally;
  if (s != kTfLiteOk) return run;
  if (g_before_invoke) g_before_invoke();
  const TfLiteStatus invoked = runner.Invoke();
  if (g_after_invoke) g_after_invoke();
  if (invoked != kTfLiteOk) return run;
  run.ok = true;
  run.out.assign(output, output + out_n);
  return run;
}

struct FcData {
  std::vector<int8_t> dense;
  std::vector<int32_t> bias;
  std::vector<int8_t> x;
};

FcData MakeFcData(const FcCase& c) {
  std::mt19937 rng(c.seed);
  FcData d;
  d.dense = RandomWeights(rng, c.rows, c.cols, c.sparsity, c.pattern,
                          c.extreme);
  std::uniform_int_distribution<int> b(-5000, 5000);
  d.bias.resize(c.rows);
  for (auto& v : d.bias) v = b(rng);
  int in_n = 1;
  for (int v : c.input_shape) in_n *= v;
  std::uniform_int_distribution<int> in(-128, 127);
  d.x.resize(in_n);
  for (auto& v : d.x) v = static_cast<int8_t>(in(rng));
  return d;
}

void TestFc(const FcCase& c) {
  const FcData d = MakeFcData(c);
#ifdef KE_SKIP_STOCK
  const FcRun ours_only = RunFc(c, d.dense, d.bias, d.x, true);
  CHECK(ours_only.ok, "%s: sparse FC failed", c.name.c_str());
  printf("HASH %-40s %08lx\n", c.name.c_str(),
         (unsigned long)Fnv({ours_only.out}));
  return;
#endif
  const FcRun stock = RunFc(c, d.dense, d.bias, d.x, false);
  const FcRun ours = RunFc(c, d.dense, d.bias, d.x, true);
  printf("HASH %-40s %08lx\n", c.name.c_str(), (unsigned long)Fnv({ours.out}));
  CHECK(stock.ok, "%s: stock FC failed", c.name.c_str());
  CHECK(ours.ok, "%s: sparse FC failed", c.name.c_str());
  if (!stock.ok || !ours.ok) return;
  size_t differing = 0;
  for (size_t i = 0; i < stock.out.size(); ++i) {
    differing += stock.out[i] != ours.out[i];
  }
  // Outputs that are all one value would hide errors; report spread.
  int distinct = 0;
  {
    bool seen[256] = {};
    for (uint8_t v : stock.out) {
      if (!seen[v]) ++distinct;
      seen[v] = true;
    }
  }
  CHECK(differing == 0, "%s: %zu of %zu bytes differ", c.name.c_str(),
        differing, stock.out.size());
  printf("%-40s %s  %4zu bytes compared (%3d distinct)  arena stock p%zu+s%zu "
         "ours p%zu+s%zu\n",
         c.name.c_str(), differing == 0 ? "PASS" : "FAIL", stock.out.size(),
         distinct, stock.tally.persistent, stock.tally.scratch,
         ours.tally.persistent, ours.tally.scratch);
}

void ExpectFcRejected(const char* what, const FcCase& c,
                      const std::vector<uint8_t>* blob,
                      const std::vector<uint8_t>* options) {
  const FcData d = MakeFcData(c);
  const FcRun r = RunFc(c, d.dense, d.bias, d.x, true, blob, options);
  CHECK(!r.ok, "sparse FC accepted %s", what);
  printf("%-40s %s (rejected in Prepare)\n", what, r.ok ? "FAIL" : "PASS");
}

}  // namespace
