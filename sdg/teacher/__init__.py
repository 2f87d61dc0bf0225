"""Teacher models: download, serve (vLLM, llama.cpp, an existing endpoint), and the async client."""
