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
// accumulator; requantization, clamping, the saturating add, the gate
// nonlinearities and the cell/hidden updates use TFLM's own parameters
// (PrepareGateParametersInteger) and helpers (lstm_internal::Sigmoid, Tanh,
// UpdateLstmCell, UpdateLstmHidden), so every output byte and the final state
// match the stock kernel.
//
// Work. Once per time step the input and hidden activations plus their input
// offsets (-zero point) are widened to int16, so the inner loop per non-zero
// is one index load, one value load, one activation load and one
// multiply-accumulate (sparse_weights.h). The recurrent product is added into
// the gate buffer in place, so the stock kernel's fourth scratch buffer (its
// recurrent FC output) is free to hold the widened hidden state.
// Measured on Cortex-M4 (GCC 12 -O2, QEMU instruction count), LSTM(128) over
// 28 inputs, 28 steps: 3.1 M instructions per inference at 90 % sparsity,
// 1.6 M at 100 % (reference kernel 25.2 M, CMSIS-NN dense 6.1 M). Of these,
// about 1.0 M are TFLM's elementwise helpers (Sigmoid, Tanh, Mul) and about
// 30 per gate row and FC (two requantizations per row), independent of
// sparsity; each non-zero weight costs about 4.7.
//
// Arena: the stock kernel's four n_batch x n_cell int16 scratch buffers plus
// n_input int16 (times n_batch when time major) for the widened input.

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
  data->options_error = nullptr;
  data->options_key = "";
  // The smallest FlexBuffer is 3 bytes (value, type, width).
  if (buffer == nullptr || length < 3) {
    data->options_error = "custom options (FlexBuffer map) missing";
    return;
  }
  const flexbuffers::Reference root =
      flexbuffers::GetRoot(reinterpret_cast<const uint8_t*>(buffer), length);
  if (!root.IsMap()) {
    data->options_error = "custom options are not a FlexBuffer map";
    return;
  }
  const flexbuffers::Map map = root.AsMap();
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
// Gate computation: the only part that differs from the stock kernel.

// One gate's two sparse FCs. TFLM's CreateGateParams gives both output zero
// point 0 and the full int16 range (Prepare checks it), so their clamp is a
// saturation to int16.
struct Gate {
  SparseMatrix input_weights;
  SparseMatrix recurrent_weights;
  const int32_t* bias;
  sparse::Requantizer input_requant;
  sparse::Requantizer recurrent_requant;
  // Pass instances for this gate's index widths and shift directions.
  void (*input_pass)(const SparseMatrix&, const int32_t*, const int16_t*,
                     const sparse::Requantizer&, int16_t*);
  void (*recurrent_pass)(const SparseMatrix&, const int16_t*,
                         const sparse::Requantizer&, int16_t*);
};

// The two FCs of a gate run as two passes over the rows rather than one pass
// doing both: on Cortex-M4 one pass had to keep two cursors and two
// requantizers live and spilled about 15 values per row to the stack.

// out[r] = sat16(requant(bias[r] + W_x[r] . x)): the stock input FC.
template <int W, bool kLeftShift>
void InputFcPass(const SparseMatrix& m, const int32_t* bias, const int16_t* x,
                 const sparse::Requantizer& requant, int16_t* out) {
  const sparse::Requantizer q = requant;
  const uint8_t* counts = m.row_counts;
  const uint8_t* indices = m.col_indices;
  const int8_t* values = m.values;
  int16_t* const end = out + m.rows;
  while (out != end) {
    const int32_t acc =
        SparseRowDot<W>(indices, values, LoadIndex<W>(counts), x, *bias++);
    counts += W;
    *out++ = static_cast<int16_t>(
        sparse::SaturateInt16(sparse::Requantize<kLeftShift>(acc, q)));
  }
}

// out[r] = sat16(out[r] + sat16(requant(W_h[r] . h))): the stock recurrent
// FC followed by AddElementWise.
template <int W, bool kLeftShift>
void RecurrentFcPass(const SparseMatrix& m, const int16_t* h,
                     const sparse::Requantizer& requant, int16_t* out) {
  const sparse::Requantizer q = requant;
  const uint8_t* counts = m.row_counts;
  const uint8_t* indices = m.col_indices;
  const int8_t* values = m.values;
  int16_t* const end = out + m.rows;
  while (out != end) {
    const uint32_t count = LoadIndex<W>(counts);
    counts += W;
    // An empty row adds requant(0) = 0: nothing to do (common above 95 %).
    if (count != 0) {
      const int32_t acc = SparseRowDot<W>(indices, values, count, h, 0);
      const int32_t fc =
          sparse::SaturateInt16(sparse::Requantize<kLeftShift>(acc, q));
      *out = static_cast<int16_t>(sparse::SaturateInt16(*out + fc));
    }
    ++out;
  }
}

Gate MakeGate(const tflite::LSTMKernelContents& contents,
              const tflite::GateParameters& params, GateId id) {
  Gate gate;
  const TfLiteEvalTensor* wx = contents.GetInternalTensor(kGateInputWeights[id]);
  const TfLiteEvalTensor* wh =
      contents.GetInternalTensor(kGateRecurrentWeights[id]);
  gate.input_weights = sparse::ViewSparseBlob(
      tflite::micro::GetTensorData<uint8_t>(wx), wx->dims->data[0]);
  gate.recurrent_weights = sparse::ViewSparseBlob(
      tflite::micro::GetTensorData<uint8_t>(wh), wh->dims->data[0]);
  gate.bias = tflite::micro::GetTensorData<int32_t>(
      contents.GetInternalTensor(kGateBias[id]));
  gate.input_requant =
      sparse::MakeRequantizer(params.input_fc_params.output_multiplier,
                              params.input_fc_params.output_shift);
  gate.recurrent_requant =
      sparse::MakeRequantizer(params.recurrent_fc_params.output_multiplier,
                              params.recurrent_fc_params.output_shift);
  const bool wide_x = gate.input_weights.index_bytes == 2;
  const bool left_x = gate.input_requant.left_shift > 0;
  gate.input_pass = wide_x ? (left_x ? &InputFcPass<2, true>
                                     : &InputFcPass<2, false>)
                           : (left_x ? &InputFcPass<1, true>
                                     : &InputFcPass<1, false>);
  const bool wide_h = gate.recurrent_weights.index_bytes == 2;
  const bool left_h = gate.recurrent_requant.left_shift > 0;
  gate.recurrent_pass = wide_h ? (left_h ? &RecurrentFcPass<2, true>
                                         : &RecurrentFcPass<2, false>)
                               : (left_h ? &RecurrentFcPass<1, true>
                                         : &RecurrentFcPass<1, false>);
  return gate;
}

// Gate pre-activations for the step's batch rows, then the nonlinearity
// through TFLM's own helper (in place, as the stock kernel does).
void ComputeGate(const Gate& gate, const int16_t* x, const int16_t* h,
                 int n_batch, int n_input, int n_cell,
                 TfLiteFusedActivation activation,
                 const tflite::RuntimeShape& state_shape, int16_t* out) {
  for (int b = 0; b < n_batch; ++b) {
    const int16_t* xb = x + b * n_input;
    const int16_t* hb = h + b * n_cell;
    int16_t* ob = out + b * n_cell;
    gate.input_pass(gate.input_weights, gate.bias, xb, gate.input_requant,
                    ob);
    gate.recurrent_pass(gate.recurrent_weights, hb, gate.recurrent_requant,
                        ob);
  }
  if (activation == kTfLiteActSigmoid) {
    tflite::lstm_internal::Sigmoid(state_shape, out);
  } else {
    // Scale power -12: gate pre-activations are Q3.12, as in the stock kernel.
    tflite::lstm_internal::Tanh(/*cell_state_scale_power=*/-12, state_shape,
                                out, state_shape, out);
  }
}

// One time step (all batch rows when time major), in the stock order:
// forget, input and cell gates, cell update, output gate, hidden update,
// copy of the hidden state to the output.
void SparseLstmStep(const LstmStepManager& step, const OpDataSparseLstm& data,
                    tflite::LSTMKernelContents& contents,
                    const tflite::LSTMBuffers<int16_t>& buffers,
                    const Gate* gates, int16_t* x16) {
  const tflite::OpDataLSTM& lstm = data.lstm;
  const tflite::RuntimeShape state_shape = step.StateShape();
  const int n_batch = state_shape.Dims(0);
  const int n_cell = state_shape.Dims(1);
  const int n_input = lstm.size_info.input_dimension;

  // Widen input and hidden state once per step; all four gates share them
  // (the hidden state changes only in UpdateLstmHidden below). The stock
  // kernel's fourth buffer, its FC scratch, is free and holds the hidden.
  const int8_t* x = tflite::micro::GetTensorData<int8_t>(
                        contents.GetInternalTensor(tflite::kLstmInputTensor)) +
                    step.InputOffset();
  const int8_t* h = tflite::micro::GetTensorData<int8_t>(
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
  for (int i = 0; i < n_batch * n_cell; ++i) {
    h16[i] = static_cast<int16_t>(h[i] + h_offset);
  }

  int16_t* forget_gate = buffers.buffer0;
  int16_t* input_gate = buffers.buffer1;
  int16_t* cell_gate = buffers.buffer2;
  ComputeGate(gates[kForget], x16, h16, n_batch, n_input, n_cell,
              kTfLiteActSigmoid, state_shape, forget_gate);
  ComputeGate(gates[kInputGate], x16, h16, n_batch, n_input, n_cell,
              kTfLiteActSigmoid, state_shape, input_gate);
  ComputeGate(gates[kCell], x16, h16, n_batch, n_input, n_cell,
              lstm.cell_gate_nonlinear_type, state_shape, cell_gate);

  const tflite::InterGateParameters& inter = lstm.inter_gate_parameters;
  tflite::lstm_internal::UpdateLstmCell<int16_t>(
      step, contents.CellStateTensor(), forget_gate, input_gate, cell_gate,
      inter.forget_cell_mul_params, inter.input_mul_params,
      lstm.cell_state_info, /*buffer=*/input_gate);

  int16_t* output_gate = buffers.buffer1;  // input gate no longer needed
  ComputeGate(gates[kOutputGate], x16, h16, n_batch, n_input, n_cell,
              kTfLiteActSigmoid, state_shape, output_gate);
  tflite::lstm_internal::UpdateLstmHidden<int16_t, int8_t>(
      step, contents.CellStateTensor(), contents.HiddenStateTensor(),
      output_gate, inter.output_mul_params,
      lstm.cell_state_info.cell_state_scale_power, /*buffer=*/forget_gate);

  int8_t* output =
      tflite::micro::GetTensorData<int8_t>(contents.output_tensor);
  std::memcpy(output + step.OutputOffset(),
              tflite::micro::GetTensorData<int8_t>(
                  contents.HiddenStateTensor()) +
                  step.HiddenStateOffset(),
              n_batch * n_cell);
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
      MakeGate(contents, lstm.forget_gate_parameters, kForget),
      MakeGate(contents, lstm.input_gate_parameters, kInputGate),
      MakeGate(contents, lstm.cell_gate_parameters, kCell),
      MakeGate(contents, lstm.output_gate_parameters, kOutputGate)};

  // Same walk over time and batch as the stock EvalLstm.
  LstmStepManager step(&lstm.size_info);
  const tflite::LstmSizeInfo& size = lstm.size_info;
  if (size.time_major) {
    for (int t = 0; t < size.time_steps; ++t) {
      SparseLstmStep(step, data, contents, buffers, gates, x16);
      step.UpdateTime();
    }
  } else {
    for (int b = 0; b < size.batch_size; ++b) {
      for (int t = 0; t < size.time_steps; ++t) {
        SparseLstmStep(step, data, contents, buffers, gates, x16);
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
