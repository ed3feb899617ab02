"""The torch device this worker renders on."""

import torch
from django.conf import settings


def get_device():
    """settings.TORCH_DEVICE as a torch.device; "auto" means CUDA when this process sees a GPU."""
    name = settings.TORCH_DEVICE
    if name == "auto":
        # CUDA_VISIBLE_DEVICES pins each worker to its own GPU, so "cuda" is that one.
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
