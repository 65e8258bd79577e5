"""torch -> ONNX: the vision graph, its checks and verification, and bundle writing."""
