"""Decoder backends: given a latent window, return its output (flow frames or audio samples).

`cpu_onnx` runs anywhere on onnxruntime; the NPU backend (rknn-toolkit-lite2) runs compiled models at a
fixed window. Scheduling (`appliance.synthesis.workers`) and fallback (`appliance.synthesis.fallback`)
live above them, once.
"""
