"""zipvlm runtime: bundle loading and serving with numpy, onnxruntime and OpenCV only.

Nothing in this package may import torch: it runs on the robot.
"""
