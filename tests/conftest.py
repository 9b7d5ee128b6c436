from llama_index.packs.clip_hybrid.testing.fixtures import (
    milvus_uri,
    sample_images,
    tiny_clip_checkpoint,
)
