"""Image preprocessing: PIL image -> (3, H, W) float tensor in [0, 1].

Normalisation is NOT done here: the model holds its pixel mean/std and normalises inside, so
the same preprocess works for every checkpoint.
"""

from __future__ import annotations

from torchvision import transforms as T

from hyvl.images import to_rgb as _rgb  # 16-bit and float images scaled, not clipped


def image_transform(image_size: int, train: bool = False, scale: tuple[float, float] = (0.5, 1.0)):
    """Training: RandomResizedCrop(scale) as MERU/HyCoCLIP; eval: resize shorter side + center crop."""
    bicubic = T.InterpolationMode.BICUBIC
    if train:
        ops = [_rgb, T.RandomResizedCrop(image_size, scale=tuple(scale), interpolation=bicubic)]
    else:
        ops = [_rgb, T.Resize(image_size, interpolation=bicubic), T.CenterCrop(image_size)]
    return T.Compose([*ops, T.ToTensor()])
