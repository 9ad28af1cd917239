"""prefrank: a gRPC reranking service with a reward model trained on human preferences."""

__version__ = "0.1.0"
