"""Captions: what turns an image into searchable text (vision LLMs, OCR), cached and stored."""
