"""Keras model -> `.tflite`, verified: `converter_model` (the copy of a model the TFLite converter takes) and
`export` (conversion in a subprocess, float32 / int8 / dynamic range, verification against Keras under LiteRT and
TFLite Micro, the TFLM arena search, and `export_model` with its report).
"""
