"""Deployment to small devices: a classifier as one ONNX graph from raw audio to classes
(``onnx_graph``), and the live monitor's events (``events``).  The commands are
``experiments.quantize``, ``experiments.export`` and ``experiments.monitor``."""
