"""Cross-framework parity suite: coat_ms (MindSpore) against timm's CoaT (PyTorch), layer by layer."""
