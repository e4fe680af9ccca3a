// Sparse int8 TFLM kernels of keras-expander, registered as custom ops.
//
// Each op has the inputs, outputs and semantics of TFLM's stock int8 kernel,
// except that every weight matrix input is a compressed sparse blob (format
// in sparse_weights.h; byte cost 8 + W * (rows + nnz) + nnz) and the
// builtin options come as a FlexBuffer map in the custom options. Outputs are
// bit-identical to the stock kernel on the dense weights.
//
// Registration in a firmware (AddCustom copies the registration; the name
// must outlive the resolver, which these constants do):
//
//   static tflite::MicroMutableOpResolver<2> resolver;
//   static const TFLMRegistration sparse_lstm =
//       keras_expander::Register_SPARSE_UNIDIRECTIONAL_SEQUENCE_LSTM();
//   static const TFLMRegistration sparse_fc =
//       keras_expander::Register_SPARSE_FULLY_CONNECTED();
//   resolver.AddCustom(keras_expander::kSparseLstmOpName, &sparse_lstm);
//   resolver.AddCustom(keras_expander::kSparseFullyConnectedOpName,
//                      &sparse_fc);

#ifndef KERAS_EXPANDER_FIRMWARE_KERNELS_SPARSE_OPS_H_
#define KERAS_EXPANDER_FIRMWARE_KERNELS_SPARSE_OPS_H_

#include "tensorflow/lite/micro/micro_common.h"

namespace keras_expander {

// Custom op codes the exporter writes into the model.
constexpr char kSparseLstmOpName[] = "KE_SPARSE_LSTM_V1";
constexpr char kSparseFullyConnectedOpName[] = "KE_SPARSE_FC_V1";

// int8 UNIDIRECTIONAL_SEQUENCE_LSTM (int16 cell state) with sparse inputs 1-8.
// Options: "version" (1), "fused_activation_function", "cell_clip",
// "proj_clip", "time_major", "asymmetric_quantize_inputs" (false),
// "diagonal_recurrent_tensors" (false).
TFLMRegistration Register_SPARSE_UNIDIRECTIONAL_SEQUENCE_LSTM();

// int8 FULLY_CONNECTED (per-tensor or per-channel weights, optional int32
// bias) with a sparse input 1. Options: "version" (1),
// "fused_activation_function", "keep_num_dims",
// "asymmetric_quantize_inputs" (false).
TFLMRegistration Register_SPARSE_FULLY_CONNECTED();

}  // namespace keras_expander

#endif  // KERAS_EXPANDER_FIRMWARE_KERNELS_SPARSE_OPS_H_
