"""Ingestion: image files or nodes in, rows with CLIP vectors out, doing only what changed."""
