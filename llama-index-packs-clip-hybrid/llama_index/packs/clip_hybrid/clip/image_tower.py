"""CLIP's image tower, run the way retrieval needs it: pooled early, fp16-stored on a CPU.

Same maths as ``clip.model.CLIP.encode_image``, two savings:

- the last block computes attention and MLP for the class-token row only, the one row
  that is pooled (exact; 1/12 of the tower's work for ViT-B/32 saved almost whole);
- on a CPU in fp32, when every weight matrix of the transformer holds values that fp16
  represents exactly (OpenAI's published checkpoints are stored in fp16), the matrices
  are kept as packed fp16 copies only (fbgemm's ``linear_dynamic_fp16``: activations and
  sums stay fp32) and the fp32 copies are freed. The result is the fp32 model's, at half
  the memory (-170 MB for ViT-B/32) and faster on the CPUs we measured
  (``benchmarks/bench_embedding.py``, numbers in the README). Checkpoints with other
  values keep fp32.
"""

from __future__ import annotations

from typing import Any

from .precision import is_vit
from .text_tower import PackedBlocks, block_linear, fp16_exact, pack_blocks

#: Images per forward pass on a CPU. ViT-B/32 runs as fast with 16 as with 32 or 64
#: there (11.8 vs 12.2 img/s, within the noise), and 16 holds half the activations of
#: 32: peak RSS ingesting 1,500 images 1.41 GB vs 1.51 GB (benchmarks/bench_ingest.py).
CPU_IMAGES_PER_FORWARD = 16


def pack_image_tower(model: Any) -> PackedBlocks | None:
    """Pack the image tower's matrices to fp16 and free their fp32 copies.

    None (and nothing changed) where this torch build lacks the kernels or the weights
    are not exactly representable in fp16. Afterwards the model's own ``encode_image``
    no longer works: use :func:`encode_image` with the returned weights.
    """
    import torch

    blocks = model.visual.transformer.resblocks
    if not fp16_exact(blocks):
        return None
    packed = pack_blocks(blocks)
    if packed is None:
        return None
    empty = torch.nn.Parameter(torch.empty(0), requires_grad=False)
    for block in blocks:
        block.attn.in_proj_weight = empty
        block.attn.out_proj.weight = empty
        block.mlp.c_fc.weight = empty
        block.mlp.c_proj.weight = empty
    return packed


def encode_image(model: Any, pixels: Any, fp16: PackedBlocks | None) -> Any:
    """Image features (not normalised) of ``pixels`` (batch x 3 x H x W, model's dtype).

    ``fp16``: the packed weights from :func:`pack_image_tower`, or None for the model's.
    """
    import torch
    import torch.nn.functional as F

    visual = model.visual
    x = visual.conv1(pixels)  # batch x width x grid x grid
    x = x.flatten(2).transpose(1, 2)  # batch x patches x width
    batch, _, width = x.shape
    cls = visual.class_embedding.to(x.dtype).expand(batch, 1, width)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(x)
    tokens = x.shape[1]
    blocks = visual.transformer.resblocks
    for i, block in enumerate(blocks):
        attn, mlp = block.attn, block.mlp
        linear = block_linear(fp16, i)
        heads = attn.num_heads
        qkv = linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias, 0)
        q, k, v = qkv.view(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        if i < len(blocks) - 1:
            a = F.scaled_dot_product_attention(q, k, v)
            a = a.transpose(1, 2).reshape(batch, tokens, width)
        else:  # only the class token is pooled: its row alone from here on
            x = x[:, 0]
            a = F.scaled_dot_product_attention(q[:, :, :1], k, v).reshape(batch, width)
        x = x + linear(a, attn.out_proj.weight, attn.out_proj.bias, 1)
        hidden = mlp.gelu(linear(block.ln_2(x), mlp.c_fc.weight, mlp.c_fc.bias, 2))
        x = x + linear(hidden, mlp.c_proj.weight, mlp.c_proj.bias, 3)
    return visual.ln_post(x) @ visual.proj


def encode_images(
    model: Any, pixels: Any, device: str, dtype: Any, fp16: PackedBlocks | None
) -> Any:
    """Image features of a preprocessed batch (batch x 3 x H x W), in forwards of
    :data:`CPU_IMAGES_PER_FORWARD` on a CPU (the whole batch on a GPU)."""
    import torch

    step = CPU_IMAGES_PER_FORWARD if device == "cpu" else len(pixels)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(pixels), step):
            part = pixels[start : start + step].to(device, dtype=dtype)
            if is_vit(model):
                parts.append(encode_image(model, part, fp16))
            else:  # ResNet image towers (RN50, ...): the model's own forward
                parts.append(model.encode_image(part))
        return torch.cat(parts)
