"""Generation engines: Hugging Face transformers (CPU and CUDA)."""
