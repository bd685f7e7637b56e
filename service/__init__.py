"""Serving exported tLSTM model packages with ONNX Runtime (no torch needed)."""
