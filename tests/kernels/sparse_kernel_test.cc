// Differential test: TFLM stock int8 UNIDIRECTIONAL_SEQUENCE_LSTM and
// FULLY_CONNECTED on dense weights vs keras-expander's sparse kernels on the
// same weights as sparse blobs. Every output byte (and the LSTM's hidden and
// cell state after every sequence) must be equal.
#include "sparse_kernel_harness.h"

namespace {

// ---------------------------------------------------------------------------
// Requantize vs tflite::MultiplyByQuantizedMultiplier.
void TestRequantize() {
  std::mt19937 rng(7);
  long n = 0, bad = 0;
  const int32_t edge_x[] = {0, 1, -1, 2, -2, 127, -128, 32767, -32768,
                            (1 << 20) + 1, -(1 << 20) - 1, 2147483647,
                            -2147483647 - 1};
  for (int shift = -31; shift <= 7; ++shift) {
    for (int k = 0; k < 20000; ++k) {
      int32_t m;
      switch (k % 4) {
        case 0: m = (1 << 30) + static_cast<int32_t>(rng() % (1u << 30)); break;
        case 1: m = 2147483647; break;
        case 2: m = 1 << 30; break;
        default: m = static_cast<int32_t>(rng() % 2147483647u); break;
      }
      int32_t x;
      if (k < 13) {
        x = edge_x[k];
      } else {
        const int bits = 1 + rng() % 31;
        x = static_cast<int32_t>(rng() % (1u << bits)) *
            ((rng() & 1) ? 1 : -1);
      }
      // Skip inputs for which TFLM's own x * 2^shift overflows (UB there).
      if (shift > 0) {
        const int64_t wide = static_cast<int64_t>(x) * (int64_t{1} << shift);
        if (wide > 2147483647LL || wide < -2147483648LL) continue;
      }
      const int32_t want = tflite::MultiplyByQuantizedMultiplier(x, m, shift);
      const int32_t got = keras_expander::sparse::Requantize(
          x, keras_expander::sparse::MakeRequantizer(m, shift));
      // The fast path, wherever its precondition holds.
      namespace ks = keras_expander::sparse;
      int32_t got_fast = want;
      const int64_t ax = x < 0 ? -int64_t{x} : x;
      if (ax <= ks::FastRequantizeLimit(shift)) {
        const ks::FastRequantizer fq = ks::MakeFastRequantizer(m, shift);
        got_fast = shift < 0 ? ks::RequantizeFast<true>(x, fq)
                             : ks::RequantizeFast<false>(x, fq);
      }
      ++n;
      if (want != got || want != got_fast) {
        if (bad < 5) {
          printf("requant mismatch x=%d m=%d shift=%d want %d got %d fast %d\n",
                 x, m, shift, want, got, got_fast);
        }
        ++bad;
      }
    }
  }
  CHECK(bad == 0, "Requantize differs on %ld of %ld", bad, n);
  printf("%-40s %s  %ld (x, multiplier, shift) triples\n",
         "Requantize == MultiplyByQuantizedMultiplier", bad ? "FAIL" : "PASS",
         n);
}

LstmCase Lstm(const char* name, int batch, int time, int n_input, int n_cell,
              double sparsity, uint32_t seed) {
  LstmCase c;
  c.name = name;
  c.batch = batch;
  c.time = time;
  c.n_input = n_input;
  c.n_cell = n_cell;
  for (double& s : c.sparsity) s = sparsity;
  c.seed = seed;
  return c;
}

}  // namespace

int main() {
  TestRequantize();

  // --- LSTM differential cases.
  const double levels[] = {0.0, 0.5, 0.9, 0.99, 1.0};
  uint32_t seed = 100;
  for (double s : levels) {
    char name[64];
    snprintf(name, sizeof(name), "lstm 5x7 b1 t4 sparsity %.2f", s);
    TestLstm(Lstm(name, 1, 4, 5, 7, s, seed++));
    snprintf(name, sizeof(name), "lstm 28x128 b1 t28 sparsity %.2f", s);
    TestLstm(Lstm(name, 1, 28, 28, 128, s, seed++));
    snprintf(name, sizeof(name), "lstm 13x300 b1 t5 sparsity %.2f", s);
    TestLstm(Lstm(name, 1, 5, 13, 300, s, seed++));
  }
  {
    LstmCase c = Lstm("lstm 5x7 zero rows", 1, 6, 5, 7, 0.3, seed++);
    c.pattern = Pattern::kZeroRows;
    TestLstm(c);
    c = Lstm("lstm 28x128 zero cols", 1, 10, 28, 128, 0.5, seed++);
    c.pattern = Pattern::kZeroCols;
    TestLstm(c);
    c = Lstm("lstm 28x128 zero rows+cols 90%", 1, 10, 28, 128, 0.9, seed++);
    c.pattern = Pattern::kZeroRowsAndCols;
    TestLstm(c);
    c = Lstm("lstm 300x20 (W=2 input) 70%", 1, 4, 300, 20, 0.7, seed++);
    TestLstm(c);
    c = Lstm("lstm 5x7 forced W=2", 1, 4, 5, 7, 0.4, seed++);
    c.force_width = 2;
    TestLstm(c);
    c = Lstm("lstm 11x9 explicit zero values", 1, 4, 11, 9, 0.6, seed++);
    c.explicit_zeros = true;
    TestLstm(c);
    c = Lstm("lstm mixed sparsity per matrix", 1, 7, 28, 128, 0.0, seed++);
    const double mix[8] = {0.0, 0.5, 0.9, 0.99, 1.0, 0.9, 0.5, 0.99};
    for (int i = 0; i < 8; ++i) c.sparsity[i] = mix[i];
    TestLstm(c);
    c = Lstm("lstm batch-major b2 28x128 90%", 2, 6, 28, 128, 0.9, seed++);
    TestLstm(c);
    c = Lstm("lstm time-major b2 28x128 90%", 2, 6, 28, 128, 0.9, seed++);
    c.time_major = true;
    TestLstm(c);
    c = Lstm("lstm time-major b3 5x7 50%", 3, 5, 5, 7, 0.5, seed++);
    c.time_major = true;
    TestLstm(c);
    c = Lstm("lstm time-major b2 13x300 90%", 2, 3, 13, 300, 0.9, seed++);
    c.time_major = true;
    TestLstm(c);
    c = Lstm("lstm cell_clip 28x128 50%", 1, 12, 28, 128, 0.5, seed++);
    c.cell_clip = 0.5f;
    TestLstm(c);
    c = Lstm("lstm sigmoid cell gate 9x16", 1, 6, 9, 16, 0.5, seed++);
    c.activation = kTfLiteActSigmoid;
    TestLstm(c);
    c = Lstm("lstm saturating (extreme w, big scale)", 1, 8, 28, 64, 0.5,
             seed++);
    c.extreme = true;
    c.weight_scale = 0.5f;  // positive left shift in the gate multipliers
    c.bias_range = 2000000;
    TestLstm(c);
    c = Lstm("lstm input zp -128 hidden zp -128", 1, 8, 28, 64, 0.8, seed++);
    c.input_zp = -128;
    c.hidden_zp = -128;
    TestLstm(c);
    c = Lstm("lstm input zp 127 hidden zp 0", 1, 8, 28, 64, 0.8, seed++);
    c.input_zp = 127;
    c.hidden_zp = 0;
    c.input_scale = 0.3f;
    c.cell_scale = 1.0f / 4096;
    TestLstm(c);
    c = Lstm("lstm tiny scales (large right shift)", 1, 8, 28, 64, 0.5,
             seed++);
    c.weight_scale = 1e-6f;
    TestLstm(c);
    // Cell scale powers other than -11/-12: Tanh of the cell state with a
    // rounding right shift (-13, -14) and a larger multiplier (-9).
    c = Lstm("lstm cell scale 2^-13", 1, 8, 28, 64, 0.5, seed++);
    c.cell_scale = 1.0f / 8192;
    TestLstm(c);
    c = Lstm("lstm cell scale 2^-14 clip", 1, 8, 28, 64, 0.5, seed++);
    c.cell_scale = 1.0f / 16384;
    c.cell_clip = 1.5f;
    TestLstm(c);
    c = Lstm("lstm cell scale 2^-9", 1, 8, 28, 64, 0.5, seed++);
    c.cell_scale = 1.0f / 512;
    TestLstm(c);
    c = Lstm("lstm cell clip below one step", 1, 6, 9, 16, 0.5, seed++);
    c.cell_clip = 1e-5f;  // quantizes to 0: clipping to 0
    TestLstm(c);
    // Biases too large for the fast requantization bound: generic path.
    c = Lstm("lstm huge bias (generic requant)", 1, 6, 28, 64, 0.5, seed++);
    c.bias_range = 1500000000;
    TestLstm(c);
    c = Lstm("lstm 1x1", 1, 3, 1, 1, 0.0, seed++);
    TestLstm(c);
    // W = 2 on both matrices with left-shift requantization.
    c = Lstm("lstm 260x280 W=2 left shift 90%", 1, 3, 260, 280, 0.9, seed++);
    c.weight_scale = 0.3f;
    c.bias_range = 200000;
    TestLstm(c);
    c = Lstm("lstm 260x280 W=2 right shift 97%", 1, 3, 260, 280, 0.97,
             seed++);
    c.weight_scale = 0.002f;
    TestLstm(c);
  }

  // --- LSTM negative cases: Prepare must reject.
  {
    LstmCase c = Lstm("neg", 1, 2, 5, 7, 0.5, 999);
    LstmData d = MakeLstmData(c);
    auto mutate = [&](int index, std::vector<uint8_t> blob) {
      LstmMutation m;
      m.blob_index = index;
      m.blob = std::move(blob);
      return m;
    };
    std::vector<uint8_t> b = d.blobs[1];
    b.push_back(0);
    ExpectLstmRejected("lstm blob one byte too long", c, mutate(1, b));
    b = d.blobs[1];
    b.pop_back();
    ExpectLstmRejected("lstm blob one byte too short", c, mutate(1, b));
    b = d.blobs[5];
    b[5] = 1;
    ExpectLstmRejected("lstm blob reserved byte set", c, mutate(5, b));
    b = d.blobs[0];
    b[4] = 3;
    ExpectLstmRejected("lstm blob index width 3", c, mutate(0, b));
    b = EncodeBlob(d.dense[0], 7, 5);
    b[2] = 6;  // claims 6 columns, the input has 5
    ExpectLstmRejected("lstm blob wrong cols", c, mutate(0, b));
    b = d.blobs[6];
    b[0] = 8;  // claims 8 rows
    ExpectLstmRejected("lstm blob wrong rows", c, mutate(6, b));
    {
      // First stored index of the recurrent matrix set out of range.
      b = d.blobs[5];
      b[8 + 7] = 7;
      ExpectLstmRejected("lstm blob index >= cols", c, mutate(5, b));
    }
    {
      std::vector<int8_t> dense(7 * 7, 0);
      dense[0] = 3;
      dense[1] = 4;
      b = EncodeBlob(dense, 7, 7);
      std::swap(b[8 + 7], b[8 + 7 + 1]);  // indices 1, 0
      ExpectLstmRejected("lstm blob indices not ascending", c, mutate(5, b));
      b = EncodeBlob(dense, 7, 7);
      b[8 + 7 + 1] = 0;  // indices 0, 0
      ExpectLstmRejected("lstm blob duplicate index", c, mutate(5, b));
    }
    LstmMutation m;
    m.per_channel = true;
    ExpectLstmRejected("lstm per-channel weight scales", c, m);
    m = LstmMutation();
    m.weight_zp = 2;
    ExpectLstmRejected("lstm weight zero point != 0", c, m);
    m = LstmMutation();
    m.non_constant = true;
    ExpectLstmRejected("lstm non-constant blob", c, m);
    m = LstmMutation();
    m.options = LstmOptions(c, "time_major");
    ExpectLstmRejected("lstm option time_major missing", c, m);
    m.options = LstmOptions(c, nullptr, 2);
    ExpectLstmRejected("lstm options version 2", c, m);
    m.options = LstmOptions(c, nullptr, 1, true);
    ExpectLstmRejected("lstm asymmetric_quantize_inputs", c, m);
    m.options = {1, 2};
    ExpectLstmRejected("lstm options 2 bytes", c, m);
    LstmCase relu = c;
    relu.activation = kTfLiteActRelu;
    m = LstmMutation();
    m.options = LstmOptions(relu);
    ExpectLstmRejected("lstm cell activation relu", c, m);
  }

  // --- FULLY_CONNECTED differential cases.
  seed = 500;
  struct FcShape {
    const char* label;
    int batch, cols, rows;
  };
  const FcShape shapes[] = {{"fc 5->7", 1, 5, 7},
                            {"fc 128->10 b3", 3, 128, 10},
                            {"fc 300->33 (W=2)", 1, 300, 33}};
  for (double s : levels) {
    for (int pc = 0; pc < 2; ++pc) {
      for (const FcShape& shape : shapes) {
        char name[64];
        snprintf(name, sizeof(name), "%s %s sparsity %.2f", shape.label,
                 pc ? "per-channel" : "per-tensor", s);
        FcCase c;
        c.name = name;
        c.sparsity = s;
        c.per_channel = pc;
        c.input_shape = {shape.batch, shape.cols};
        c.output_shape = {shape.batch, shape.rows};
        c.cols = shape.cols;
        c.rows = shape.rows;
        c.seed = seed++;
        TestFc(c);
      }
    }
  }
  {
    FcCase c;
    c.name = "fc zero rows+cols 64->17";
    c.input_shape = {2, 64};
    c.output_shape = {2, 17};
    c.cols = 64;
    c.rows = 17;
    c.pattern = Pattern::kZeroRowsAndCols;
    c.seed = seed++;
    TestFc(c);
    const TfLiteFusedActivation acts[] = {kTfLiteActRelu, kTfLiteActRelu6,
                                          kTfLiteActReluN1To1};
    const char* act_names[] = {"relu", "relu6", "relu_n1_to_1"};
    for (int a = 0; a < 3; ++a) {
      for (int pc = 0; pc < 2; ++pc) {
        char name[64];
        snprintf(name, sizeof(name), "fc %s %s 64->17", act_names[a],
                 pc ? "per-channel" : "per-tensor");
        c.name = name;
        c.pattern = Pattern::kRandom;
        c.activation = acts[a];
        c.per_channel = pc;
        c.output_scale = 0.02f;
        c.seed = seed++;
        TestFc(c);
      }
    }
    c = FcCase();
    c.name = "fc no bias 40->9 per-tensor";
    c.input_shape = {1, 40};
    c.output_shape = {1, 9};
    c.cols = 40;
    c.rows = 9;
    c.bias = false;
    c.seed = seed++;
    TestFc(c);
    c.name = "fc no bias 40->9 per-channel";
    c.per_channel = true;
    c.seed = seed++;
    TestFc(c);
    c = FcCase();
    c.name = "fc keep_num_dims [2,3,16]->[2,3,6]";
    c.input_shape = {2, 3, 16};
    c.output_shape = {2, 3, 6};
    c.cols = 16;
    c.rows = 6;
    c.keep_num_dims = true;
    c.seed = seed++;
    TestFc(c);
    c = FcCase();
    c.name = "fc flatten [1,4,8]->[1,5]";
    c.input_shape = {1, 4, 8};
    c.output_shape = {1, 5};
    c.cols = 32;
    c.rows = 5;
    c.seed = seed++;
    TestFc(c);
    c = FcCase();
    c.name = "fc input zp 0, extreme weights";
    c.input_shape = {1, 200};
    c.output_shape = {1, 12};
    c.cols = 200;
    c.rows = 12;
    c.input_zp = 0;
    c.extreme = true;
    c.output_scale = 5.0f;
    c.seed = seed++;
    TestFc(c);
    c.name = "fc input zp -128, saturating";
    c.input_zp = -128;
    c.output_scale = 0.5f;
    c.seed = seed++;
    TestFc(c);
    c = FcCase();
    c.name = "fc left shift (output scale 2e-5)";
    c.input_shape = {2, 50};
    c.output_shape = {2, 8};
    c.cols = 50;
    c.rows = 8;
    c.sparsity = 0.97;
    c.output_scale = 2e-5f;
    c.output_zp = 0;
    c.input_zp = 0;
    c.seed = seed++;
    TestFc(c);
    c.name = "fc left shift per-channel";
    c.per_channel = true;
    c.seed = seed++;
    TestFc(c);
    c = FcCase();
    c.name = "fc 1->1";
    c.input_shape = {1, 1};
    c.output_shape = {1, 1};
    c.cols = 1;
    c.rows = 1;
    c.sparsity = 0.0;
    c.seed = seed++;
    TestFc(c);
  }
  // --- FC negative cases.
  {
    FcCase c;
    c.input_shape = {1, 12};
    c.output_shape = {1, 6};
    c.cols = 12;
    c.rows = 6;
    const FcData d = MakeFcData(c);
    std::vector<uint8_t> b = EncodeBlob(d.dense, 6, 12);
    b.push_back(0);
    ExpectFcRejected("fc blob too long", c, &b, nullptr);
    b = EncodeBlob(d.dense, 6, 11);  // 12 cols of data read as 11: bad cols
    ExpectFcRejected("fc blob cols != input", c, &b, nullptr);
    std::vector<int8_t> five(5 * 12, 1);
    b = EncodeBlob(five, 5, 12);
    ExpectFcRejected("fc blob rows != output units", c, &b, nullptr);
    std::vector<uint8_t> o = FcOptions(c, "keep_num_dims");
    ExpectFcRejected("fc option keep_num_dims missing", c, nullptr, &o);
    o = FcOptions(c, nullptr, 1, true);
    ExpectFcRejected("fc asymmetric_quantize_inputs", c, nullptr, &o);
    o = FcOptions(c, nullptr, 3);
    ExpectFcRejected("fc options version 3", c, nullptr, &o);
  }

  printf("\n%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
