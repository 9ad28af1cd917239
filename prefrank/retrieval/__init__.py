"""First-stage retrieval: the bi-encoder, the FAISS vector index and the SQLite document store."""
