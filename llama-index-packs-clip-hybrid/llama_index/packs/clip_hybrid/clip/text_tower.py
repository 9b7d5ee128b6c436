"""CLIP's text tower, run the way retrieval needs it: padded to the batch, pooled early.

Same maths as ``clip.model.CLIP.encode_text``, three savings:

- tokens are padded to the longest text of the batch, not to 77 (exact: the tower is
  causal, so padding after a text's end token never reaches it);
- the last block computes attention and MLP for the end-token row only, the one row
  that is pooled (exact, and ~1/12 of the work of a batch);
- on a CPU in fp32, fbgemm fp16 copies of the weights (activations and sums stay fp32):
  for one query (a batch of at most :data:`SMALL_BATCH_TOKENS` tokens), whose matrix
  products are bound by reading the 151 MB of fp32 weights, which fp16 halves (cosine to
  the fp32 weights >= 0.9999); and for every batch when the weights are fp16 values
  anyway (OpenAI's published checkpoints store fp16), where the copies are exact and
  fbgemm's fp16 kernels outran the fp32 ones on the CPUs we measured
  (``benchmarks/bench_embedding.py``, numbers in the README).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..redaction import package_logger

logger = package_logger(__name__)

#: Token rows (texts x padded length) up to which inexact fp16 copies are used (for
#: checkpoints whose weights are not fp16 values). Measured with
#: ``benchmarks/bench_embedding.py``: one 10-token query 2.2x faster.
SMALL_BATCH_TOKENS = 64


@dataclass
class PackedBlocks:
    """fp16 packed copies of a transformer's four matrices per block (fbgemm kernels)."""

    blocks: list[tuple[Any, Any, Any, Any]]  # in_proj, out_proj, c_fc, c_proj


def pack_blocks(resblocks: Any) -> PackedBlocks | None:
    """Pack each residual block's matrices; None where this torch build lacks the kernels."""
    import torch

    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return None
    try:
        prepack = torch.ops.quantized.linear_prepack_fp16
        blocks = []
        for block in resblocks:
            attn, mlp = block.attn, block.mlp
            blocks.append(
                (
                    prepack(attn.in_proj_weight.float(), attn.in_proj_bias.float()),
                    prepack(attn.out_proj.weight.float(), attn.out_proj.bias.float()),
                    prepack(mlp.c_fc.weight.float(), mlp.c_fc.bias.float()),
                    prepack(mlp.c_proj.weight.float(), mlp.c_proj.bias.float()),
                )
            )
    except (RuntimeError, AttributeError) as exc:  # kernels missing from this build
        logger.debug("fp16 packed weights unavailable (%s); using fp32", exc)
        return None
    return PackedBlocks(blocks)


def block_linear(fp16: PackedBlocks | None, i: int) -> Callable[[Any, Any, Any, int], Any]:
    """Block ``i``'s matrix product ``(x, weight, bias, which)``: fbgemm's fp16 kernel with
    packed copy ``which`` (0 in_proj, 1 out_proj, 2 c_fc, 3 c_proj) when there are packed
    weights, else ``F.linear`` with the model's own."""
    import torch
    import torch.nn.functional as F

    if fp16 is None:
        return lambda x, weight, bias, which: F.linear(x, weight, bias)
    packed = fp16.blocks[i]
    return lambda x, weight, bias, which: torch.ops.quantized.linear_dynamic_fp16(x, packed[which])


@dataclass
class Fp16TextWeights(PackedBlocks):
    """fp16 packed copies of the text tower's matrices (kept beside the fp32 ones).

    ``exact``: the fp32 weights are fp16 values, so the copies change nothing."""

    exact: bool = False

    @classmethod
    def pack(cls, model: Any) -> Fp16TextWeights | None:
        """Pack ``model``'s text tower; None where this torch build lacks the kernels."""
        blocks = model.transformer.resblocks
        packed = pack_blocks(blocks)
        return None if packed is None else cls(packed.blocks, exact=fp16_exact(blocks))

    def use_for(self, tokens: int) -> bool:
        """Whether a batch of ``tokens`` token rows should use the copies."""
        return self.exact or tokens <= SMALL_BATCH_TOKENS


def fp16_exact(blocks: Any) -> bool:
    """True when each block's four weight matrices are unchanged by a round trip to fp16."""
    import torch

    for block in blocks:
        for weight in (
            block.attn.in_proj_weight,
            block.attn.out_proj.weight,
            block.mlp.c_fc.weight,
            block.mlp.c_proj.weight,
        ):
            if weight.dtype != torch.float32 or not torch.equal(weight, weight.half().float()):
                return False
    return True


def encode_text(model: Any, tokens: Any, dtype: Any, fp16: PackedBlocks | None) -> Any:
    """Text features (not normalised) of ``tokens`` (texts x width, end token = max id).

    ``fp16``: packed weights to use instead of the model's (pass them for small batches).
    """
    import torch
    import torch.nn.functional as F

    texts, width = tokens.shape
    ends = tokens.argmax(dim=-1)
    rows = torch.arange(texts, device=tokens.device)
    x = model.token_embedding(tokens).to(dtype) + model.positional_embedding[:width].to(dtype)
    blocks = model.transformer.resblocks
    for i, block in enumerate(blocks):
        attn, mlp = block.attn, block.mlp
        linear = block_linear(fp16, i)
        heads, dim = attn.num_heads, x.shape[-1]
        qkv = linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias, 0)
        q, k, v = qkv.view(texts, width, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        if i < len(blocks) - 1:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            a = a.transpose(1, 2).reshape(texts, width, dim)
        else:  # only the end tokens are pooled: their rows alone from here on
            x = x[rows, ends]
            q = q[rows, :, ends].unsqueeze(2)
            seen = torch.arange(width, device=tokens.device)[None, :] <= ends[:, None]
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=seen[:, None, None, :])
            a = a.reshape(texts, dim)
        x = x + linear(a, attn.out_proj.weight, attn.out_proj.bias, 1)
        hidden = mlp.gelu(linear(block.ln_2(x), mlp.c_fc.weight, mlp.c_fc.bias, 2))
        x = x + linear(hidden, mlp.c_proj.weight, mlp.c_proj.bias, 3)
    return model.ln_final(x).to(dtype) @ model.text_projection
