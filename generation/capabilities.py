"""Which reference-image modes each pool accepts, decided at submission rather than after queueing.

Workers advertise what they loaded (their heartbeats, generation.presence, `loaded.reference_types`); a
mode is accepted when every online worker of the pool supports it, so a job cannot land on a
worker that would have to ignore its reference. With no worker online, this server's own
configuration answers.
"""

from dataclasses import asdict

from django.conf import settings

from . import job_types, presence


def configured_reference_types(pool):
    """What a worker of `pool` loads with this server's settings."""
    if pool == "sdxl":
        # composition: img2img from the loaded weights; style/character: IP-Adapter.
        return {"composition"} | ({"style", "character"} if settings.SDXL_IP_ADAPTER_PATH else set())
    if pool == "wan":
        # composition: the reference is the first frame of an image-to-video render.
        return {"composition"} if settings.WAN_I2V_MODEL_PATH else set()
    return set()


def reference_types(job_type, online=None):
    """The reference_type values that `job_type`'s pool can honour now (`online`: presence.online(),
    when the caller has read it already)."""
    if job_type.pool == "wan" and job_type.kind != "video":
        return set()  # WAN starts only videos from a reference (image-to-video)
    queue = job_types.POOLS[job_type.pool].queue
    if online is None:
        try:
            online = presence.online()
        except Exception:  # Redis is down: no worker can be asked; this server's configuration answers
            online = []
    advertised = [set(w["loaded"]["reference_types"]) for w in online
                  if queue in w.get("queues", []) and "reference_types" in w.get("loaded", {})]
    if advertised:
        return set.intersection(*advertised)
    return configured_reference_types(job_type.pool)


def why_not(job_type, reference_type):
    """Why `reference_type` is refused for `job_type`, in words for the user."""
    if job_type.pool == "sdxl":
        return (f"reference_type '{reference_type}' needs IP-Adapter weights, which the SDXL workers of this "
                "server do not have; 'composition' is available.")
    if job_type.kind != "video":
        return (f"{job_type.name} does not take a reference image: on WAN only video types start from one "
                "(image-to-video).")
    if reference_types(job_type):
        return (f"reference_type '{reference_type}' is not available for {job_type.name}: a video starts from "
                "its reference image as the first frame; use 'composition'.")
    return f"{job_type.name} does not take a reference image: no image-to-video model is configured."


def job_type_rows():
    """The ten job types with their parameters in this server's profile, and the reference types their
    pool accepts now (GET /api/job-types/ serves it; the Workspace's script reads it)."""
    online = presence.online()
    return [
        {
            **asdict(jt), "label": jt.label, "queue": jt.queue, "kind": jt.kind, "bucket": jt.bucket,
            "num_images": list(job_types.NUM_IMAGES_CHOICES) if jt.batched else [1],
            "aspect_ratios": job_types.aspect_ratios(jt), "render": job_types.render_params(jt),
            "reference_types": sorted(reference_types(jt, online)),
        }
        for jt in job_types.JOB_TYPES.values()
    ]
