"""Stage 1: the model, its inputs and reference outputs, ONNX graphs and engines."""
