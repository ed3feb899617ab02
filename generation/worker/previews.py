"""Pictures of a job while it renders, from the latents of a denoising step.

A fixed linear map from latent channels to RGB (the approximation ComfyUI and A1111 show for SDXL and
WAN 2.1 latents) costs nothing and needs no weights; for SDXL a tiny autoencoder (TAESD, diffusers'
AutoencoderTiny) gives a truer picture when SDXL_PREVIEW_DECODER_PATH names one. Previews are sent to the
owner's open pages with the progress events and never stored.
"""

import io
import logging

import torch
from django.conf import settings
from PIL import Image

from . import pipelines

log = logging.getLogger(__name__)

# Latent channel -> (R, G, B) weights and an RGB bias, for latents as the denoising loop holds them
# (SDXL: scaled by the VAE's scaling factor; WAN 2.1: normalised by its per-channel mean and std).
# The factors are ComfyUI's (comfy/latent_formats.py, classes SDXL and Wan21).
LATENT_RGB = {
    "sdxl": (
        [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
         [-0.3165, -0.2492, -0.2188]],
        [0.1084, -0.0175, -0.0011],
    ),
    "wan": (
        [[-0.1299, -0.1692, 0.2932], [0.0671, 0.0406, 0.0442], [0.3568, 0.2548, 0.1747],
         [0.0372, 0.2344, 0.1420], [0.0313, 0.0189, -0.0328], [0.0296, -0.0956, -0.0665],
         [-0.3477, -0.4059, -0.2925], [0.0166, 0.1902, 0.1975], [-0.0412, 0.0267, -0.1364],
         [-0.1293, 0.0740, 0.1636], [0.0680, 0.3019, 0.1128], [0.0032, 0.0581, 0.0639],
         [-0.1251, 0.0927, 0.1699], [0.0060, -0.0633, 0.0005], [0.3477, 0.2275, 0.2950],
         [0.1984, 0.0913, 0.1861]],
        [-0.1835, -0.0868, -0.3360],
    ),
}
PREVIEW_QUALITY = 70  # WebP; a preview is a glimpse, a few kilobytes


def first_picture(latents):
    """The latents of the first image of a batch (SDXL: (b, c, h, w)) or the last frame of the
    first video (WAN: (b, c, f, h, w)) as (c, h, w), float32 on the CPU."""
    latent = latents[0]
    if latent.dim() == 4:
        latent = latent[:, -1]
    return latent.detach().float()


def latent_rgb(latent, pool):
    """(c, h, w) latents as a PIL picture through `pool`'s linear map (one pixel per latent pixel)."""
    factors, bias = LATENT_RGB[pool]
    weights = torch.tensor(factors, dtype=torch.float32, device=latent.device)
    if latent.shape[0] != weights.shape[0]:
        raise ValueError(f"{pool} previews need {weights.shape[0]} latent channels, not {latent.shape[0]}")
    rgb = torch.einsum("chw,cr->hwr", latent, weights) + torch.tensor(bias, device=latent.device)
    return to_picture(rgb)


def to_picture(rgb):
    """An (h, w, 3) tensor in -1..1 as a PIL picture."""
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(pixels, "RGB")


def encode(picture):
    """A preview as WebP bytes, no larger than PREVIEW_SIZE on its long side."""
    if max(picture.size) > settings.PREVIEW_SIZE:
        picture = picture.copy()
        picture.thumbnail((settings.PREVIEW_SIZE, settings.PREVIEW_SIZE), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    picture.save(out, "WEBP", quality=PREVIEW_QUALITY)
    return out.getvalue()


class Previewer:
    """Turns a step's latents into WebP bytes, for one pool: TAESD when one is configured (SDXL), else the
    linear map."""

    def __init__(self, pool, decoder=None):
        self.pool, self.decoder = pool, decoder

    def __call__(self, latents):
        latent = first_picture(latents)
        if self.decoder is None:
            return encode(latent_rgb(latent, self.pool))
        with torch.inference_mode():
            decoded = self.decoder.decode(latent[None].to(self.decoder.device, self.decoder.dtype)).sample[0]
        return encode(to_picture(decoded.float().permute(1, 2, 0)))


def previewer(pool):
    """The Previewer for `pool` as the settings ask (PREVIEWS: "latent" or "off"); None when off."""
    if settings.PREVIEWS == "off":
        return None
    decoder = sdxl_decoder() if pool == "sdxl" else None
    return Previewer(pool, decoder)


def sdxl_decoder():
    """The tiny autoencoder at SDXL_PREVIEW_DECODER_PATH, loaded once per process; None when unset."""
    path = settings.SDXL_PREVIEW_DECODER_PATH
    if not path:
        return None

    def load():
        from diffusers import AutoencoderTiny

        device = pipelines.torch_device()
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        decoder = AutoencoderTiny.from_pretrained(path, torch_dtype=dtype).to(device)
        log.info("SDXL previews decoded by the tiny autoencoder at %s", path)
        return decoder

    return pipelines.load_once("sdxl-preview", (path, pipelines.torch_device()), load)
