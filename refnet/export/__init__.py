"""Export of refnet graphs to other formats (ONNX: the migration path to OpenCV 5 / ONNX Runtime)."""
