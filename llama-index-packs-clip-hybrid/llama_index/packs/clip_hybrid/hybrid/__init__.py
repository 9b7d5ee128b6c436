"""Retrieval: the CLIP, caption-vector and BM25 branches, and their fusion by reciprocal rank."""
