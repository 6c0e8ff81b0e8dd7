"""Cross-checks: backends (cv2 in-process, cv2 5.x worker, onnxruntime), metrics, reports."""
