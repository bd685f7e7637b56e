"""Training, evaluation and ONNX export of tLSTM models (torch is imported lazily)."""
