"""IP-Adapter for `style` and `character` references: loaded once, switched in only for those jobs.

An SDXL UNet with IP-Adapter processors refuses to run without image embeddings, so the adapter's
processors, image projection and image encoder are kept aside and swapped into the shared UNet
for the jobs that use them, then swapped out again. Text-only jobs run on the plain UNet.
"""

import contextlib

# InstantStyle: style lives in the first attention block of SDXL's lowest-resolution up block;
# scaling only its middle layer transfers the look without copying the reference's content.
STYLE_LAYERS = {"up": {"block_0": [0.0, 1.0, 0.0]}}


class IPAdapter:
    def __init__(self, pipe, path, weight_name, image_encoder_folder):
        pipe.load_ip_adapter(str(path), subfolder="", weight_name=weight_name,
                             image_encoder_folder=image_encoder_folder, local_files_only=True)
        unet = pipe.unet
        self.name = f"{path}/{weight_name}"
        self.applied_parts = (dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type,
                              pipe.image_encoder, pipe.feature_extractor)
        pipe.unload_ip_adapter()
        self.plain_processors = dict(unet.attn_processors)

    @contextlib.contextmanager
    def applied(self, pipe, reference_type, strength):
        """The pipeline conditioned by the adapter at `strength` for the length of the block."""
        processors, projection, hid_type, encoder, extractor = self.applied_parts
        # A torch.compile'd UNet wraps the module; attributes set on the wrapper would not reach it.
        unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
        unet.set_attn_processor(dict(processors))  # it empties the dict it is given
        unet.encoder_hid_proj = projection
        unet.config.encoder_hid_dim_type = hid_type
        pipe.image_encoder, pipe.feature_extractor = encoder, extractor
        pipe.set_ip_adapter_scale(style_scale(strength) if reference_type == "style" else strength)
        try:
            yield pipe
        finally:
            unet.set_attn_processor(dict(self.plain_processors))
            unet.encoder_hid_proj = None
            unet.config.encoder_hid_dim_type = None
            pipe.image_encoder = pipe.feature_extractor = None


def style_scale(strength):
    """InstantStyle's per-layer scale: only the style layers, at `strength`."""
    return {"up": {block: [strength * w for w in weights] for block, weights in STYLE_LAYERS["up"].items()}}
