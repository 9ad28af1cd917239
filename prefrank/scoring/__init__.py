"""Second-stage scoring: the scorer interface, the retriever cosine and the cross-encoder reward model."""
