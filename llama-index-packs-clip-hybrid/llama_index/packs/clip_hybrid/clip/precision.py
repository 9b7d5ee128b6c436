"""Numeric precision for CLIP: which dtype a device runs, casting the weights, fp32 vectors out."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

Precision = Literal["auto", "fp32", "bf16", "fp16"]


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True on CPUs with native bf16 math (AVX512-BF16 or AMX); bf16 is slower elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def pick_dtype(precision: Precision, device: str) -> Any:
    """The torch dtype for ``precision`` on ``device``: ``auto`` is fp16 on CUDA, bf16 on
    CPUs with native bf16 (checked, not assumed), fp32 otherwise."""
    import torch

    wanted = precision
    if wanted == "auto":
        if device.startswith("cuda"):
            wanted = "fp16"
        elif device == "cpu" and cpu_has_native_bf16():
            wanted = "bf16"
        else:
            wanted = "fp32"
    if wanted == "fp16" and not device.startswith(("cuda", "mps")):
        raise ValueError(f"precision='fp16' needs a GPU, but the device is {device}.")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[wanted]


def is_vit(model: Any) -> bool:
    return hasattr(model.visual, "transformer") and hasattr(model.visual, "class_embedding")


def cast_weights(model: Any, dtype: Any) -> Any:
    """Cast matmul weights to ``dtype`` and keep LayerNorms in fp32, as ``clip`` does for
    fp16 (its LayerNorm computes in fp32 and would fail on low-precision weights)."""
    import torch
    from torch import nn

    if dtype == torch.float32:
        return model

    def cast(layer: nn.Module) -> None:
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            layer.weight.data = layer.weight.data.to(dtype)
            if layer.bias is not None:
                layer.bias.data = layer.bias.data.to(dtype)
        if isinstance(layer, nn.MultiheadAttention):
            for name in (
                "in_proj_weight",
                "q_proj_weight",
                "k_proj_weight",
                "v_proj_weight",
                "in_proj_bias",
                "bias_k",
                "bias_v",
            ):
                tensor = getattr(layer, name)
                if tensor is not None:
                    tensor.data = tensor.data.to(dtype)
        for name in ("text_projection", "proj"):
            param = getattr(layer, name, None)
            if isinstance(param, nn.Parameter):
                param.data = param.data.to(dtype)

    model.apply(cast)
    return model


def unit_rows(x: Any) -> list[list[float]]:
    """Rows of ``x`` scaled to length 1, as fp32 lists."""
    x = x.float()
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x.cpu().tolist()
