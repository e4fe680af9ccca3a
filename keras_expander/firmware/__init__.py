"""Firmware for TFLite Micro: rewrite a `.tflite` for our kernels, generate a project from it, build it for the host
or a Cortex-M4F, run it (Cortex-M4 under QEMU), verify its outputs against the pip TFLite Micro interpreter, and
measure flash, RAM, stack and instructions per inference.

    from keras_expander.firmware import deploy
    report = deploy.deploy(open("int8.tflite", "rb").read(), x_test, y_test, target="cortex-m4",
                           kernels="cmsis_nn", out_dir="firmware_out")

Modules, in data-flow order: `rewrites` (the `.tflite` -> `.tflite` entry point by encoding) over `decode_prune`
(TFLM's DECODE pruning), `sparse_rewrite` (sparse LSTM / FULLY_CONNECTED) and `fused_rnn` (fused SimpleRNN / GRU),
which share `model_edit` (TFLM's flatbuffer editor); `ops` (the one table of our custom ops, whose C++ kernels are in
`kernels/`); `toolchain` (compilers, TFLM trees, compiling only what the model needs), `project` (the generated
sources), `device` (link, run, measure the image), `deploy` (the whole path and its report).
"""

from keras_expander.firmware.toolchain import APT_PACKAGES, KERNEL_SETS, TARGETS, FirmwareError

__all__ = ["APT_PACKAGES", "KERNEL_SETS", "TARGETS", "FirmwareError"]
