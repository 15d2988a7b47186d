"""Decoder backends: given a latent window, return its output (flow frames or audio samples).

`cpu_onnx` runs anywhere on onnxruntime; `npu_rknn` (rknn-toolkit-lite2) runs compiled models at a fixed
window; `selection` chooses between them for each voice (`npu_detect` says what the board offers).
Scheduling (`appliance.synthesis.workers`) and fallback (`appliance.synthesis.fallback`) live above them, once.
"""
