"""System checks run by `manage.py check` and at startup."""

from django.conf import settings
from django.core import checks

from . import installation, negative_prompts


@checks.register()
def visibility_timeout(app_configs, **kwargs):
    """Redis re-delivers an unacknowledged task after the visibility timeout; a job must end before it (every
    worker checks this at start too: generation.installation)."""
    if problem := installation.visibility_problem():
        return [checks.Error(problem, id="ourvidz.E001")]
    return []


@checks.register(deploy=True)
def shared_secret_key(app_configs, **kwargs):
    """A generated key is this host's own: another web host, or a worker signing file URLs, would have another,
    and each host's sessions and URLs would fail on the others."""
    if settings.SECRET_KEY_GENERATED and not settings.DEBUG:
        return [checks.Error(
            "DJANGO_SECRET_KEY is not set: this host generated a key of its own (kept in OURVIDZ_DATA_DIR), and "
            "other hosts have others.", hint="Set the same DJANGO_SECRET_KEY on every host.", id="ourvidz.E003")]
    return []


@checks.register()
def sdxl_tokenizer(app_configs, **kwargs):
    """Submission cuts SDXL negative prompts with the pipeline's tokenizer, so it must be readable."""
    try:
        negative_prompts.sdxl_tokenizer()
    except negative_prompts.TokenizerUnavailable as exc:
        return [checks.Warning(exc.cause, hint="Run `manage.py setup` or set SDXL_TOKENIZER_PATH.",
                               id="ourvidz.W001")]
    return []


@checks.register()
def previews(app_configs, **kwargs):
    """PREVIEWS names how running jobs are pictured; a typo would silently turn them off."""
    if settings.PREVIEWS not in ("latent", "off"):
        return [checks.Error(f"PREVIEWS is {settings.PREVIEWS!r}; it must be 'latent' or 'off'.", id="ourvidz.E002")]
    return []
