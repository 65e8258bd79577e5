"""Calibration frame sets and INT8 quantization of the vision graph (not yet built)."""
