"""Which reference-image modes each pool accepts, decided at submission rather than after queueing."""

SDXL_REFERENCE_TYPES = {"composition"}  # img2img from the reference, sharing the loaded weights


def reference_types(job_type):
    """The reference_type values that `job_type`'s pool can honour."""
    return SDXL_REFERENCE_TYPES if job_type.pool == "sdxl" else set()


def why_not(job_type, reference_type):
    """Why `reference_type` is refused for `job_type`, in words for the user."""
    if job_type.pool == "sdxl":
        return (f"The SDXL pool supports reference_type 'composition' only; '{reference_type}' needs "
                "IP-Adapter weights, which this server does not have.")
    return f"{job_type.name} does not take a reference image: no image-to-video model is configured."
