"""GGUF files: the loader-faithful check, direct layer surgery, llama.cpp's attention patterns and export."""
