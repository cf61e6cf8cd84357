"""The encoder service: image and text embeddings of one dual-encoder model."""
