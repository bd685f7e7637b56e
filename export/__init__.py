"""ONNX export: a checkpoint becomes a verified, self-describing model package.

``tlstm export`` (:func:`export.exporter.main`) builds the graphs (:mod:`export.graphs`),
tidies them (:mod:`export.tidy`), checks them against PyTorch (:mod:`export.verify`),
optionally reduces their precision (:mod:`export.precision`) and writes the package under the
contract of :mod:`tlstm.contract`. This part depends on ``model/``, the training checkpoints
and the contract, never on the serving code. Loading this package itself loads nothing heavy.
"""
