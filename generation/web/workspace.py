"""The Workspace page: where users write prompts, submit jobs and watch them run.

The page is server-rendered with the form already in the state the query parameters ask for (the
Library's "use these settings again" link), plus one JSON blob for the script: the job-type table
as GET /api/job-types/ serves it, the user's recent jobs as the jobs API serializes them, and the
URLs it talks to and the request limits (job_types.limits). Everything after that goes through the
JSON API and the job events stream (the ES modules in generation/static/ourvidz/workspace/).
"""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse

from .. import capabilities, credits, job_types
from ..api.serializers import JobSerializer, ReferenceImageSerializer
from ..models import Job, JobStatus, ReferenceImage, ReferenceType

DEFAULT_JOB_TYPE = "sdxl_image_fast"
RECENT_JOBS = 10
RECENT_PROMPTS = 20
RECENT_PROMPTS_SCANNED = 200  # the newest jobs read for them: bounded, however many jobs a user has
REFERENCE_CHOICES = 50
ASPECT_LABELS = {"1:1": "Square 1:1", "16:9": "Landscape 16:9", "9:16": "Portrait 9:16"}


def controls_for(job_type):
    """The form's kind / model / quality / enhanced choices that select `job_type`."""
    return {"kind": job_type.kind, "model": job_type.pool, "quality": job_type.quality,
            "enhanced": job_type.enhanced}


def control_key(kind, model, quality, enhanced):
    """The key the page's script looks a job type up by (see type_keys)."""
    return f"{kind}:{model}:{quality}:{int(bool(enhanced))}"


def type_keys():
    """Control key -> job type name, for all ten types: the script never spells type names itself."""
    return {control_key(**controls_for(jt)): name for name, jt in job_types.JOB_TYPES.items()}


def default_aspect_ratio(job_type):
    """The ratio whose size is the type's own (what a job without aspect_ratio renders at)."""
    for ratio, size in job_types.aspect_ratios(job_type).items():
        if size == (job_type.width, job_type.height):
            return ratio
    return job_types.ASPECT_RATIOS[0]


def _int_or_none(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _float_or_none(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def prefill(params, user):
    """Initial form values from query parameters (job_type, prompt, negative_prompt, seed,
    num_images, aspect_ratio and the user's own reference_image with its reference_type and
    reference_strength); anything missing or invalid falls back to a default."""
    name = params.get("job_type", "")
    jt = job_types.JOB_TYPES.get(name) or job_types.get(DEFAULT_JOB_TYPE)
    seed = _int_or_none(params.get("seed"))
    if seed is not None and not 0 <= seed <= job_types.MAX_SEED:
        seed = None
    num_images = _int_or_none(params.get("num_images"))
    if not jt.batched or num_images not in job_types.NUM_IMAGES_CHOICES:
        num_images = 1
    aspect_ratio = params.get("aspect_ratio", "")
    if aspect_ratio not in job_types.aspect_ratios(jt):
        aspect_ratio = default_aspect_ratio(jt)
    reference_id = _int_or_none(params.get("reference_image"))
    reference = None if reference_id is None else ReferenceImage.objects.filter(user=user, pk=reference_id).first()
    reference_type = params.get("reference_type", "")
    if reference_type not in ReferenceType.values:
        reference_type = ReferenceType.STYLE
    strength = _float_or_none(params.get("reference_strength"))
    if strength is None or not job_types.REFERENCE_STRENGTH_MIN <= strength <= job_types.REFERENCE_STRENGTH_MAX:
        strength = job_types.REFERENCE_STRENGTH_DEFAULT
    return {
        "job_type": jt.name, **controls_for(jt),
        "prompt": params.get("prompt", "")[:job_types.PROMPT_MAX_LENGTH],
        "negative_prompt": params.get("negative_prompt", "")[:job_types.NEGATIVE_PROMPT_MAX_LENGTH],
        "seed_mode": "random" if seed is None else "fixed", "seed": "" if seed is None else seed,
        "num_images": num_images, "aspect_ratio": aspect_ratio,
        "reference": reference, "reference_type": reference_type, "reference_strength": round(strength, 1),
    }


def form_state(form):
    """The form's values as the script keeps and restores them (named as the job request's fields):
    the defaults "Reset form" goes back to."""
    return {
        "job_type": form["job_type"], "prompt": form["prompt"], "negative_prompt": form["negative_prompt"],
        "seed_mode": form["seed_mode"], "seed": form["seed"], "num_images": form["num_images"],
        "aspect_ratio": form["aspect_ratio"], "reference_image": form["reference"].pk if form["reference"] else "",
        "reference_type": form["reference_type"], "reference_strength": form["reference_strength"],
    }


def recent_prompts(user, limit=RECENT_PROMPTS):
    """The user's own prompts, newest first, each once (from their newest jobs)."""
    prompts = Job.objects.filter(user=user).order_by("-created_at").values_list("prompt", flat=True)
    return list(dict.fromkeys(prompts[:RECENT_PROMPTS_SCANNED]))[:limit]


def recent_jobs(request, limit=RECENT_JOBS):
    """The user's latest jobs not cleared off the Workspace, then every older one still waiting or running (My
    queue lists them all), newest first, as the jobs API represents them (signed URLs included)."""
    shown = Job.objects.filter(user=request.user, cleared=False).select_related("video").prefetch_related("images")
    latest = list(shown[:limit])
    older = shown.filter(status__in=[JobStatus.QUEUED, JobStatus.PROCESSING]).exclude(pk__in=[j.pk for j in latest])
    return JobSerializer(latest + list(older), many=True, context={"request": request}).data


def reference_choices(request, selected=None, limit=REFERENCE_CHOICES):
    """The user's reference images, newest first, with signed URLs for the preview; `selected` is
    listed too when it is older than the newest `limit`."""
    refs = list(ReferenceImage.objects.filter(user=request.user)[:limit])
    if selected is not None and selected not in refs:
        refs.append(selected)
    return ReferenceImageSerializer(refs, many=True, context={"request": request}).data


def page_urls():
    return {
        "jobs": reverse("job-list"), "events": reverse("job-events"),
        "negative_prompt": reverse("negative-prompt"), "references": reverse("reference-list"),
        "images": reverse("image-list"), "account": reverse("account"),
        "cancel_waiting": reverse("job-cancel-waiting"), "clear_finished": reverse("job-clear-finished"),
        "library_detail": reverse("library-detail", args=["KIND", 0]),  # the script fills both in
        "library_download": reverse("library-download", args=["KIND", 0]), "videos": reverse("video-list"),
    }


@login_required
def workspace(request):
    """The main page after login."""
    form = prefill(request.GET, request.user)
    limits = {**job_types.limits(), "reference_max_bytes": settings.REFERENCE_MAX_BYTES}
    account = credits.account(request.user)
    data = {"job_types": capabilities.job_type_rows(), "type_keys": type_keys(), "jobs": recent_jobs(request),
            "pool_labels": {name: pool.label for name, pool in job_types.POOLS.items()},
            "urls": page_urls(), "limits": limits, "user_id": request.user.pk,
            "form_defaults": form_state(prefill({}, request.user)), "recent_prompts": recent_prompts(request.user),
            "account": {"credits": account.credits, "charged": not credits.exemption(request.user, account)}}
    return render(request, "workspace.html", {
        "section": "workspace", "form": form, "data": data, "limits": limits,
        "references": reference_choices(request, form["reference"]),
        "aspect_ratios": [(r, ASPECT_LABELS.get(r, r)) for r in job_types.ASPECT_RATIOS],
        "reference_types": ReferenceType.choices,
    })
