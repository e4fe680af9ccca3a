// Fused int8 SimpleRNN and GRU TFLM kernels of keras-expander: one op runs a
// whole recurrent layer over the sequence, in place of the graph that the
// TFLite converter unrolls per time step (TFLite has no fused SimpleRNN or
// GRU op). Dense and sparse weight variants; formats in fused_rnn.cc.
//
// Registration in a firmware (AddCustom copies the registration; the name
// must outlive the resolver, which these constants do):
//
//   static const TFLMRegistration gru =
//       keras_expander::Register_SPARSE_GRU();
//   resolver.AddCustom(keras_expander::kSparseGruOpName, &gru);

#ifndef KERAS_EXPANDER_FIRMWARE_KERNELS_FUSED_RNN_H_
#define KERAS_EXPANDER_FIRMWARE_KERNELS_FUSED_RNN_H_

#include "tensorflow/lite/micro/micro_common.h"

namespace keras_expander {

// Custom op codes the exporter writes into the model.
constexpr char kSimpleRnnOpName[] = "KE_SIMPLE_RNN_V1";
constexpr char kSparseSimpleRnnOpName[] = "KE_SPARSE_SIMPLE_RNN_V1";
constexpr char kGruOpName[] = "KE_GRU_V1";
constexpr char kSparseGruOpName[] = "KE_SPARSE_GRU_V1";

// SimpleRNN: one gate block (W_x [H, I], W_h [H, H]); dense int8 weights or
// sparse blobs (sparse_weights.h).
TFLMRegistration Register_SIMPLE_RNN();
TFLMRegistration Register_SPARSE_SIMPLE_RNN();

// GRU (reset_after=True): three gate blocks z, r, h (W_x [3H, I],
// W_h [3H, H]); dense int8 weights or sparse blobs.
TFLMRegistration Register_GRU();
TFLMRegistration Register_SPARSE_GRU();

}  // namespace keras_expander

#endif  // KERAS_EXPANDER_FIRMWARE_KERNELS_FUSED_RNN_H_
