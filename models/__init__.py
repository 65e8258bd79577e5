"""PyTorch side of zipvlm: VisionZip, encoder adapters, LLaVA loading, tiny models."""
