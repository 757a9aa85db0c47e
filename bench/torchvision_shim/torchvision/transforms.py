"""PIL-image transforms with torchvision's semantics for the arguments diffusers' example passes."""

from __future__ import annotations

import enum

import numpy as np
import torch
from PIL import Image


class InterpolationMode(enum.Enum):
    NEAREST = Image.NEAREST
    BILINEAR = Image.BILINEAR
    BICUBIC = Image.BICUBIC
    LANCZOS = Image.LANCZOS


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class Lambda:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x):
        return self.fn(x)


class Resize:
    """An int size resizes the shorter side to it, keeping the aspect ratio (torchvision's rule)."""

    def __init__(self, size, interpolation=InterpolationMode.BILINEAR):
        self.size, self.interpolation = size, interpolation

    def __call__(self, img):
        w, h = img.size
        if isinstance(self.size, int):
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.size, int(self.size * long / short)
            size = (new_short, new_long) if w <= h else (new_long, new_short)
        else:
            size = (self.size[1], self.size[0])
        return img.resize(size, self.interpolation.value)


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


class CenterCrop:
    def __init__(self, size):
        self.h, self.w = _pair(size)

    def __call__(self, img):
        w, h = img.size
        top, left = int(round((h - self.h) / 2.0)), int(round((w - self.w) / 2.0))
        return img.crop((left, top, left + self.w, top + self.h))


class RandomCrop:
    def __init__(self, size):
        self.h, self.w = _pair(size)

    def __call__(self, img):
        w, h = img.size
        top = int(torch.randint(0, h - self.h + 1, (1,)))
        left = int(torch.randint(0, w - self.w + 1, (1,)))
        return img.crop((left, top, left + self.w, top + self.h))


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        return img.transpose(Image.FLIP_LEFT_RIGHT) if torch.rand(1) < self.p else img


class ToTensor:
    """HWC uint8 PIL image -> CHW float tensor in [0, 1]."""

    def __call__(self, img):
        return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous().float().div(255)


class Normalize:
    def __init__(self, mean, std):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, x):
        return (x - self.mean) / self.std


__all__ = ["CenterCrop", "Compose", "InterpolationMode", "Lambda", "Normalize", "RandomCrop",
           "RandomHorizontalFlip", "Resize", "ToTensor"]
