"""Deployment: ONNX export, ONNX Runtime / TensorRT backends, INT8 quantization, benchmarks.

Importing this package registers the ``onnx``, ``onnxruntime`` and ``tensorrt`` model-stage
backends with :func:`perception.pipeline.backends.create_backend` (the pipeline sits below
deploy and never imports it; the command line imports ``perception.deploy``). The runtimes
themselves (onnxruntime, tensorrt) are imported only when a backend is created.
"""

from perception.deploy import backends as _backends  # noqa: F401  (registers onnx, onnxruntime, tensorrt)
