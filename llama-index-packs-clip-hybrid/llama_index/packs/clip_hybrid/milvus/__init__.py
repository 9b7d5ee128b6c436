"""Storage: the Milvus collections of image vectors and captions (Milvus Lite or a server)."""
