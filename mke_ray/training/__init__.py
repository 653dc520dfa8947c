"""Plain-PyTorch training; nothing here imports Ray."""
