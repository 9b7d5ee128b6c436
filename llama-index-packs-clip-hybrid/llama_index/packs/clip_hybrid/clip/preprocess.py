"""CLIP's image preprocessing without torchvision: bicubic resize, centre crop, normalise.

The same tensors as ``clip.clip._transform`` (torchvision's ``Resize(size, BICUBIC)``,
``CenterCrop``, ``ToTensor``, ``Normalize``), bit for bit: tested against it.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

#: CLIP's pixel normalisation, per RGB channel.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipPreprocess:
    """Resize the short side to ``size`` (bicubic), crop the centre square, RGB, to a float
    tensor, normalise."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"ClipPreprocess(size={self.size})"

    def resize_and_crop(self, img: Image.Image) -> Image.Image:
        """The two PIL steps (torchvision's ``Resize(size, BICUBIC)``, ``CenterCrop``)."""
        n = self.size
        width, height = img.size
        short, long = (width, height) if width <= height else (height, width)
        if short != n:  # torchvision returns the image itself when the size is already right
            new_long = int(n * long / short)
            new = (n, new_long) if width <= height else (new_long, n)
            img = img.resize(new, Image.Resampling.BICUBIC)
            width, height = new
        # After the resize both sides are >= n: the crop never needs padding.
        top = round((height - n) / 2.0)
        left = round((width - n) / 2.0)
        return img.crop((left, top, left + n, top + n))

    def __call__(self, img: Image.Image) -> Any:
        import numpy as np
        import torch

        img = self.resize_and_crop(img).convert("RGB")
        pixels = torch.from_numpy(np.array(img, np.uint8, copy=True))
        pixels = pixels.view(img.size[1], img.size[0], 3).permute((2, 0, 1)).contiguous()
        x = pixels.to(dtype=torch.get_default_dtype()).div(255)
        mean = torch.as_tensor(CLIP_MEAN, dtype=x.dtype).view(-1, 1, 1)
        std = torch.as_tensor(CLIP_STD, dtype=x.dtype).view(-1, 1, 1)
        return x.sub_(mean).div_(std)
