"""System checks run by `manage.py check` and at startup."""

from django.conf import settings
from django.core import checks

from . import job_types, negative_prompts


@checks.register()
def visibility_timeout(app_configs, **kwargs):
    """Redis re-delivers an unacknowledged task after the visibility timeout; a job must end before it."""
    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    longest = job_types.max_hard_time_limit()
    if timeout <= longest:
        return [checks.Error(
            f"CELERY_VISIBILITY_TIMEOUT ({timeout} s) must exceed the longest job time limit ({longest} s), "
            "or a running job is handed to a second worker.", id="ourvidz.E001")]
    return []


@checks.register()
def sdxl_tokenizer(app_configs, **kwargs):
    """Submission cuts SDXL negative prompts with the pipeline's tokenizer, so it must be readable."""
    try:
        negative_prompts.sdxl_tokenizer()
    except Exception as exc:
        return [checks.Warning(str(exc), hint="Run `manage.py setup` or set SDXL_TOKENIZER_PATH.",
                               id="ourvidz.W001")]
    return []


@checks.register()
def previews(app_configs, **kwargs):
    """PREVIEWS names how running jobs are pictured; a typo would silently turn them off."""
    if settings.PREVIEWS not in ("latent", "off"):
        return [checks.Error(f"PREVIEWS is {settings.PREVIEWS!r}; it must be 'latent' or 'off'.", id="ourvidz.E002")]
    return []
