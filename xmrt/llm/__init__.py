"""Models: chat-model providers, the local offline model, prompted tool calling and embeddings."""
