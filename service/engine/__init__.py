"""The inference engine: ONNX Runtime sessions, continuous batching, micro-batching, sampling.

Plain Python; no web framework is imported here. ``service.app`` wraps it in HTTP.
"""
