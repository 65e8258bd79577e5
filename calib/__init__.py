"""Calibration frame sets (collect.py, frames.py) and the INT8 Q/DQ vision graph (quantize.py).

No PyTorch: OpenCV, numpy, onnx and onnxruntime only.
"""
