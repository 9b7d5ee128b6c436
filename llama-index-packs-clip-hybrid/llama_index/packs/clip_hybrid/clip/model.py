"""The CLIP architecture of OpenAI's published checkpoints, as modules their weights load into.

The parameter names and shapes are those of the checkpoints (``visual.conv1.weight``,
``transformer.resblocks.0.attn.in_proj_weight``, ...), so a checkpoint's state dict loads
by name; :class:`ClipShapes` reads every size back from it. Both image towers exist: the
Vision Transformer (ViT-B/32 and the other ``ViT-*``) and the modified ResNet (``RN50``
and the other ``RN*``: three stem convolutions, anti-aliased strides, attention pooling).

Retrieval runs its own forward passes for the ViT towers (``text_tower.py``,
``image_tower.py``); the ``forward`` methods here are the plain definitions, used for the
ResNet image tower, to trace test checkpoints, and as the reference those passes are
tested against.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

#: Width of one attention head in every published CLIP.
HEAD_WIDTH = 64


@dataclass(frozen=True)
class ClipShapes:
    """The sizes of one CLIP model; ``vision_layers`` is a count (ViT) or four (ResNet)."""

    embed_dim: int
    image_resolution: int
    vision_layers: int | tuple[int, int, int, int]
    vision_width: int
    vision_patch_size: int | None
    context_length: int
    vocab_size: int
    text_width: int
    text_heads: int
    text_layers: int

    @property
    def is_vit(self) -> bool:
        return isinstance(self.vision_layers, int)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ClipShapes:
        """Every size, read from the weights' shapes (as the checkpoints carry no config)."""

        def blocks(prefix: str) -> int:
            depth = prefix.count(".")  # the block number follows the prefix
            return len({k.split(".")[depth] for k in state if k.startswith(prefix)})

        vision_layers: int | tuple[int, int, int, int]
        if "visual.proj" in state:  # a Vision Transformer
            conv = state["visual.conv1.weight"]
            vision_width, patch = int(conv.shape[0]), int(conv.shape[-1])
            vision_layers = blocks("visual.transformer.resblocks.")
            grid = round(math.sqrt(state["visual.positional_embedding"].shape[0] - 1))
            resolution = patch * grid
            patch_size: int | None = patch
        else:  # the modified ResNet
            stages = [blocks(f"visual.layer{i}.") for i in (1, 2, 3, 4)]
            vision_layers = (stages[0], stages[1], stages[2], stages[3])
            vision_width = int(state["visual.layer1.0.conv1.weight"].shape[0])
            grid = round(math.sqrt(state["visual.attnpool.positional_embedding"].shape[0] - 1))
            resolution = grid * 32
            patch_size = None
        text_width = int(state["ln_final.weight"].shape[0])
        return cls(
            embed_dim=int(state["text_projection"].shape[1]),
            image_resolution=resolution,
            vision_layers=vision_layers,
            vision_width=vision_width,
            vision_patch_size=patch_size,
            context_length=int(state["positional_embedding"].shape[0]),
            vocab_size=int(state["token_embedding.weight"].shape[0]),
            text_width=text_width,
            text_heads=max(1, text_width // HEAD_WIDTH),
            text_layers=blocks("transformer.resblocks."),
        )


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input's precision (as CLIP was trained)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation: ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm self-attention and MLP, each added back (sequence-first tensors)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(width, width * 4),
                gelu=QuickGELU(),
                c_proj=nn.Linear(width * 4, width),
            )
        )
        self.ln_2 = LayerNorm(width)
        #: The text tower's causal mask (additive, -inf above the diagonal); None for images.
        self.attn_mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.attn_mask
        if mask is not None:
            mask = mask[: x.shape[0], : x.shape[0]].to(dtype=x.dtype, device=x.device)
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """``layers`` residual attention blocks of ``width`` channels."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(
            *(ResidualAttentionBlock(width, heads) for _ in range(layers))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)

    def blocks(self) -> list[ResidualAttentionBlock]:
        return cast(list[ResidualAttentionBlock], list(self.resblocks))


class VisionTransformer(nn.Module):
    """Patches of the image, a class token, a transformer; the class token is the image."""

    def __init__(
        self, *, resolution: int, patch: int, width: int, layers: int, heads: int, out: int
    ) -> None:
        super().__init__()
        self.input_resolution = resolution
        self.output_dim = out
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        tokens = (resolution // patch) ** 2 + 1
        self.positional_embedding = nn.Parameter(scale * torch.randn(tokens, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # batch x patches x width
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x).transpose(0, 1)).transpose(0, 1)
        return self.ln_post(x[:, 0]) @ self.proj


class Bottleneck(nn.Module):
    """A ResNet bottleneck whose stride is an average pool (anti-aliased), not a conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool: nn.Module = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.avgpool(self.relu2(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """Pools a feature map by attention: the mean of the positions asks, every position answers."""

    def __init__(self, grid: int, width: int, heads: int, out: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(grid**2 + 1, width) / width**0.5)
        self.k_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, out)
        self.num_heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).permute(2, 0, 1)  # positions x batch x width
        x = torch.cat([x.mean(dim=0, keepdim=True), x]) + self.positional_embedding[:, None].to(
            x.dtype
        )
        pooled, _ = F.multi_head_attention_forward(
            query=x[:1],
            key=x,
            value=x,
            embed_dim_to_check=x.shape[-1],
            num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight,
            k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0.0,
            out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True,
            training=self.training,
            need_weights=False,
        )
        return pooled.squeeze(0)


class ModifiedResNet(nn.Module):
    """CLIP's ResNet image tower: a three-convolution stem, four bottleneck stages, and
    attention pooling instead of an average pool."""

    def __init__(
        self,
        *,
        layers: tuple[int, int, int, int],
        out: int,
        heads: int,
        resolution: int,
        width: int,
    ) -> None:
        super().__init__()
        self.output_dim = out
        self.input_resolution = resolution
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        stages = []
        for i, blocks in enumerate(layers):
            planes = width * 2**i
            stage = [Bottleneck(inplanes, planes, stride=1 if i == 0 else 2)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttentionPool2d(resolution // 32, width * 32, heads, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.conv1.weight.dtype)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.relu3(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


class ClipModel(nn.Module):
    """An image tower (``visual``) and a text tower projecting into one space."""

    def __init__(self, shapes: ClipShapes) -> None:
        super().__init__()
        self.shapes = shapes
        self.context_length = shapes.context_length
        self.vocab_size = shapes.vocab_size
        self.visual: nn.Module
        if isinstance(shapes.vision_layers, int):
            assert shapes.vision_patch_size is not None
            self.visual = VisionTransformer(
                resolution=shapes.image_resolution,
                patch=shapes.vision_patch_size,
                width=shapes.vision_width,
                layers=shapes.vision_layers,
                heads=max(1, shapes.vision_width // HEAD_WIDTH),
                out=shapes.embed_dim,
            )
        else:
            self.visual = ModifiedResNet(
                layers=shapes.vision_layers,
                out=shapes.embed_dim,
                heads=shapes.vision_width * 32 // HEAD_WIDTH,
                resolution=shapes.image_resolution,
                width=shapes.vision_width,
            )
        self.transformer = Transformer(shapes.text_width, shapes.text_layers, shapes.text_heads)
        self.token_embedding = nn.Embedding(shapes.vocab_size, shapes.text_width)
        self.positional_embedding = nn.Parameter(
            torch.empty(shapes.context_length, shapes.text_width)
        )
        self.ln_final = LayerNorm(shapes.text_width)
        self.text_projection = nn.Parameter(torch.empty(shapes.text_width, shapes.embed_dim))
        self.logit_scale = nn.Parameter(torch.full([], math.log(1 / 0.07)))
        self.set_attention_mask()

    def build_attention_mask(self) -> torch.Tensor:
        """The text tower's causal mask: a token sees itself and the tokens before it."""
        mask = torch.empty(self.context_length, self.context_length)
        mask.fill_(float("-inf"))
        mask.triu_(1)  # in place: also cheap when the model is built on the meta device
        return mask

    def set_attention_mask(self) -> None:
        """Give every text block the causal mask (it is not part of the weights)."""
        mask = self.build_attention_mask()
        for block in self.transformer.blocks():
            block.attn_mask = mask

    def initialize(self) -> None:
        """Random weights as CLIP is initialised for training (tests make tiny models)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        visual = self.visual
        if isinstance(visual, ModifiedResNet):
            std = visual.attnpool.c_proj.in_features**-0.5
            for proj in ("q_proj", "k_proj", "v_proj", "c_proj"):
                nn.init.normal_(getattr(visual.attnpool, proj).weight, std=std)
            for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
                for name, param in stage.named_parameters():
                    if name.endswith("bn3.weight"):
                        nn.init.zeros_(param)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer.blocks():
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            mlp: Any = block.mlp
            nn.init.normal_(mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        conv = cast(nn.Conv2d, self.visual.conv1)
        return conv.weight.dtype

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image.to(self.dtype))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens).to(self.dtype)
        x = x + self.positional_embedding[: tokens.shape[1]].to(self.dtype)
        x = self.transformer(x.transpose(0, 1)).transpose(0, 1)
        x = self.ln_final(x).to(self.dtype)
        ends = tokens.argmax(dim=-1)  # the end-of-text token has the largest id
        return x[torch.arange(x.shape[0]), ends] @ self.text_projection

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image_features = F.normalize(self.encode_image(image), dim=-1)
        text_features = F.normalize(self.encode_text(tokens), dim=-1)
        logits = self.logit_scale.exp() * image_features @ text_features.t()
        return logits, logits.t()


def build_clip(shapes: ClipShapes, *, initialize: bool = False) -> ClipModel:
    """A CLIP model of ``shapes``; ``initialize`` gives it training-style random weights."""
    model = ClipModel(shapes)
    if initialize:
        model.initialize()
    return model
