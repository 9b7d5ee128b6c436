from llama_index.packs.clip_hybrid.testing.fixtures import (
    api_stub,
    milvus_uri,
    sample_images,
    tiny_clip_checkpoint,
    tiny_clip_embedding,
)
