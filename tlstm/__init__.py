"""The torch-free core every part shares: the ``tlstm`` command, the code version, the model
package contract (:mod:`tlstm.contract`), atomic file writes and the progress display.

Nothing here imports torch, onnx or onnxruntime, so ``tlstm serve`` runs without the training
stack, and training never imports the service.
"""
