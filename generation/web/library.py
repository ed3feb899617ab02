"""The Library pages: a user's images and videos.

The index pages through the union of a user's images and videos in the database: one query
counts the matching assets, one fetches the page's rows (a UNION ALL of two `.values()` querysets
carrying what a tile shows, no join, ordered by creation time and cut with LIMIT/OFFSET) and one
reads the job types of those rows. Three queries per page however many assets a user has; signing
thumbnail URLs is local computation. The (user, -created_at, -id) indexes (migration 0004) give a
one-kind page in index order; for both kinds PostgreSQL reads the user's rows by index and keeps
the top N (about 2 ms for a user with 3,000 assets among 120,000).
"""

from datetime import datetime, time, timedelta
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import CharField, F, FloatField, Value
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from .. import job_types, references, retention
from ..downloads import asset_seed, file_name
from ..models import Image, Job, Video
from ..storage import signed_url

PAGE_SIZE = 48
# The phases runtime.JobRun times, in the order they happen ("generate" spans the ones before it).
TIMING_ORDER = ["load", "enhance", "denoise", "decode", "encode", "generate", "store"]
MODELS = {"image": Image, "video": Video}


class FilterForm(forms.Form):
    """The index's GET filters; a value that does not parse is ignored (and said so)."""

    kind = forms.ChoiceField(choices=[("all", "All"), ("image", "Images"), ("video", "Videos")],
                             required=False)
    quality = forms.ChoiceField(choices=[("any", "Any quality"), ("fast", "Fast"), ("high", "High")],
                                required=False)
    # "from" is a Python keyword: the form reads the GET names through add_prefix below.
    date_from = forms.DateField(required=False, label="From")
    date_to = forms.DateField(required=False, label="To")
    q = forms.CharField(required=False, max_length=200, strip=True)
    favourites = forms.BooleanField(required=False)  # only what the user starred (Asset.keep)

    FIELD_NAMES = {"date_from": "from", "date_to": "to"}

    def add_prefix(self, field_name):
        return self.FIELD_NAMES.get(field_name, field_name)

    def values(self):
        """Each filter's value, falling back to "no filter" for the ones that did not validate."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        return {
            "kind": data.get("kind") or "all",
            "quality": data.get("quality") or "any",
            "date_from": data.get("date_from"),
            "date_to": data.get("date_to"),
            "q": data.get("q") or "",
            "favourites": bool(data.get("favourites")),
        }


def _start_of(day):
    """The first instant of `day` in the current time zone (dates are what the user sees)."""
    return timezone.make_aware(datetime.combine(day, time.min))


def filtered(model, user, filters):
    """One kind's assets of `user` that match `filters` (no ordering, no columns chosen yet)."""
    queryset = model.objects.filter(user=user)
    if filters["quality"] != "any":
        queryset = queryset.filter(quality=filters["quality"])
    # Whole days, as a range on created_at itself so that the (user, created_at) index serves it.
    if filters["date_from"]:
        queryset = queryset.filter(created_at__gte=_start_of(filters["date_from"]))
    if filters["date_to"]:
        queryset = queryset.filter(created_at__lt=_start_of(filters["date_to"] + timedelta(days=1)))
    if filters["q"]:
        queryset = queryset.filter(prompt__icontains=filters["q"])
    if filters["favourites"]:
        queryset = queryset.filter(keep=True)
    return queryset


def tile_rows(queryset, kind):
    """The columns a tile needs, the same names and order for both kinds so that they UNION.
    No join to the job: the job types of a page's rows are read afterwards, for those rows only."""
    duration = F("duration") if kind == "video" else Value(None, output_field=FloatField())
    return queryset.order_by().values(
        asset_id=F("id"), asset_kind=Value(kind, output_field=CharField()), created=F("created_at"),
        asset_prompt=F("prompt"), asset_bucket=F("bucket"), thumb=F("thumbnail_path"),
        asset_quality=F("quality"), asset_job=F("job_id"), asset_duration=duration,
        asset_path=F(f"{kind}_path"), asset_keep=F("keep"),
    )


class AssetListing:
    """What Paginator pages: a count and slices of the ordered union, one query each (plus one
    for the job types of the slice's rows)."""

    ordered = True  # Paginator warns about unordered lists

    def __init__(self, querysets):
        self.querysets = querysets  # {kind: filtered queryset}

    def count(self):
        counts = [qs.order_by().values("id") for qs in self.querysets.values()]
        if len(counts) == 1:
            return counts[0].count()
        return counts[0].union(*counts[1:], all=True).count()

    def __getitem__(self, window):
        parts = [tile_rows(qs, kind) for kind, qs in self.querysets.items()]
        rows = parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]
        # Newest first, in index order; the kind only breaks a tie of both time and id.
        rows = list(rows.order_by("-created", "-asset_id", "-asset_kind")[window])
        job_types_ = dict(Job.objects.filter(pk__in={row["asset_job"] for row in rows}).order_by()
                          .values_list("pk", "job_type")) if rows else {}
        for row in rows:
            row["asset_job_type"] = job_types_.get(row["asset_job"], "")
        return rows


def _tile(row, request):
    return {
        "kind": row["asset_kind"], "id": row["asset_id"], "created_at": row["created"],
        "prompt": row["asset_prompt"], "quality": row["asset_quality"], "job_type": row["asset_job_type"],
        "job_label": job_types.label(row["asset_job_type"]), "duration": row["asset_duration"],
        "thumbnail_url": signed_url(row["asset_bucket"], row["thumb"], request) if row["thumb"] else None,
        "url": reverse("library-detail", args=[row["asset_kind"], row["asset_id"]]),
        # What the lightbox shows and does (generation/static/ourvidz/lightbox.js).
        "file_url": signed_url(row["asset_bucket"], row["asset_path"], request),
        "download_url": reverse("library-download", args=[row["asset_kind"], row["asset_id"]]),
        "api_url": reverse(f"{row['asset_kind']}-detail", args=[row["asset_id"]]), "keep": row["asset_keep"],
    }


@login_required
def index(request):
    """The user's images and videos, newest first, filtered and paginated."""
    form = FilterForm(request.GET)
    filters = form.values()
    kinds = ["image", "video"] if filters["kind"] == "all" else [filters["kind"]]
    listing = AssetListing({kind: filtered(MODELS[kind], request.user, filters) for kind in kinds})
    page = Paginator(listing, PAGE_SIZE).get_page(request.GET.get("page"))
    tiles = [_tile(row, request) for row in page.object_list]
    active = any([filters["kind"] != "all", filters["quality"] != "any", filters["date_from"],
                  filters["date_to"], filters["q"], filters["favourites"]])
    return render(request, "library/index.html", {
        "section": "library", "form": form, "filters": filters, "page": page, "tiles": tiles,
        "filtered": active,
    })


def _get_asset(request, kind, pk):
    """The requesting user's image or video `pk`; 404 for an unknown kind or someone else's asset."""
    model = MODELS.get(kind)
    if model is None:
        raise Http404("No such kind of asset.")
    return get_object_or_404(model.objects.select_related("job"), pk=pk, user=request.user)


def reuse_url(asset, batch=False):
    """The Workspace, its form filled with this asset's settings: its own seed and one output, which
    renders this very asset again; with batch=True the job's seed and number of images (the batch)."""
    job = asset.job
    params = {
        "job_type": job.job_type, "prompt": job.prompt,
        "negative_prompt": job.metadata.get("user_negative_prompt", ""),
        "seed": job.seed if batch else asset_seed(asset), "num_images": job.num_images if batch else 1,
        "aspect_ratio": job.aspect_ratio,
    }
    if job.reference_image_id:
        params.update(reference_image=job.reference_image_id, reference_type=job.reference_type,
                      reference_strength=job.reference_strength)
    return reverse("workspace") + "?" + urlencode(params)


def seed_note(asset, kind):
    """What "Seed" and "Job seed" mean for this asset, and which one "Use these settings again" takes."""
    job = asset.job
    if kind != "image" or job.num_images == 1:
        return (f"Seed {job.seed} starts this {kind}'s noise: “Use these settings again” takes it, "
                f"so it renders this {kind} again.")
    return (f"Seed {asset_seed(asset)} is this image's own: image {asset.image_index + 1} of a batch of "
            f"{job.num_images} whose job seed, {job.seed}, is the first image's; each next image takes the next "
            f"seed. “Use these settings again” takes this image's seed with one image, which renders this image "
            f"again; “Use the batch's settings” takes the job seed with all {job.num_images}.")


def _seconds(value):
    return f"{value:.2f} s" if isinstance(value, int | float) else None


def parameters(asset, kind):
    """Every generation parameter of the asset and its job, as (label, value) rows, in reading order."""
    job = asset.job
    meta = job.metadata or {}
    jt = job_types.JOB_TYPES.get(job.job_type)
    user_negative = meta.get("user_negative_prompt", "")
    rows = [("Prompt", job.prompt)]
    if job.enhanced_prompt:
        rows.append(("Enhanced prompt", job.enhanced_prompt))
    enhancement = meta.get("enhancement") or {}
    if enhancement.get("error"):
        rows.append(("Enhancement", f"failed ({enhancement['error']}); the original prompt was used"))
    if enhancement.get("model"):
        rows.append(("Enhancer", enhancement["model"]))
    rows.append(("Negative prompt", user_negative or "—"))
    if job.negative_prompt and job.negative_prompt != user_negative:
        rows.append(("Negative prompt used", job.negative_prompt))
    if meta.get("negative_terms_dropped"):
        rows.append(("Terms dropped", ", ".join(meta["negative_terms_dropped"])))
    seed = asset_seed(asset)
    rows.append(("Seed", seed))
    if seed != job.seed:
        rows.append(("Job seed", job.seed))
    if kind == "image" and job.num_images > 1:
        rows.append(("Batch", f"image {asset.image_index + 1} of {job.num_images}"))
    rows.append(("Job type", job_types.label(job.job_type)))
    rows.append(("Quality", job.quality))
    rows.append(("Model", meta.get("model") or job.model_type))
    if meta.get("sampler"):
        rows.append(("Sampler", meta["sampler"]))
    if meta.get("pipeline"):
        rows.append(("Pipeline", meta["pipeline"]))
    rows.append(("Steps", job.steps))
    rows.append(("Guidance", job.guidance))
    if meta.get("guidance_stop_step"):
        rows.append(("Guidance stops", f"after step {meta['guidance_stop_step']}"))
    rows.append(("Size", f"{asset.width} × {asset.height}"))
    rows.append(("Aspect ratio", job.aspect_ratio or "default"))
    if kind == "video":
        rows.append(("Frames", asset.frame_count or job.frames))
        rows.append(("FPS", asset.fps))
        rows.append(("Duration", f"{asset.duration:.2f} s"))
        if asset.metadata.get("codec"):
            rows.append(("Codec", asset.metadata["codec"]))
    if job.reference_type:
        reference = f"{job.reference_type}, strength {job.reference_strength}"
        extra = meta.get("reference") or {}
        if extra.get("denoise_strength") is not None:
            reference += f" (denoise {extra['denoise_strength']})"
        if extra.get("ip_adapter"):
            reference += f", adapter {extra['ip_adapter']}"
        rows.append(("Reference", reference))
    if meta.get("device") or meta.get("dtype"):
        rows.append(("Device", " · ".join(str(meta[k]) for k in ("device", "dtype") if meta.get(k))))
    timings = meta.get("timings") or {}
    if timings:
        phases = sorted(timings, key=lambda p: TIMING_ORDER.index(p) if p in TIMING_ORDER else len(TIMING_ORDER))
        rows.append(("Timings", ", ".join(
            f"{'generate (total)' if p == 'generate' else p} {_seconds(timings[p])}" for p in phases)))
    if job.duration is not None:
        rows.append(("Run time", _seconds(job.duration)))
    if job.started_at:
        rows.append(("Queued for", _seconds((job.started_at - job.created_at).total_seconds())))
    rows.append(("Format", f"{asset.format.upper()}, {asset.size_bytes / 1024:.0f} KB"))
    if jt is not None:
        rows.append(("Credits", job.credits))
    rows.append(("Created", timezone.localtime(asset.created_at).strftime("%Y-%m-%d %H:%M:%S %Z")))
    rows.append(("Job", str(job.pk)))
    return rows


@login_required
@require_http_methods(["GET", "HEAD"])
def detail(request, kind, pk):
    """One image or video with every generation parameter."""
    asset = _get_asset(request, kind, pk)
    url = signed_url(asset.bucket, asset.path, request)
    siblings = []
    if kind == "image" and asset.job.num_images > 1:
        siblings = [{"id": image.pk, "current": image.pk == asset.pk,
                     "url": reverse("library-detail", args=["image", image.pk]),
                     "thumbnail_url": signed_url(image.bucket, image.thumbnail_path, request)
                     if image.thumbnail_path else None}
                    for image in Image.objects.filter(job=asset.job, user=request.user)
                    .only("id", "bucket", "thumbnail_path").order_by("image_index")]
    return render(request, "library/detail.html", {
        "section": "library", "kind": kind, "asset": asset, "job": asset.job, "url": url,
        "job_label": job_types.label(asset.job.job_type),
        "params": parameters(asset, kind), "reuse_url": reuse_url(asset), "seed_note": seed_note(asset, kind),
        "batch_reuse_url": reuse_url(asset, batch=True) if asset.job.num_images > 1 else None,
        "download_name": file_name(asset), "siblings": siblings,
        "download_url": signed_url(asset.bucket, asset.path, request, download=file_name(asset)),
        "zip_url": reverse("job-download", args=[asset.job.pk]), "zip_files": asset.job.num_images,
        "poster_url": signed_url(asset.bucket, asset.thumbnail_path, request) if asset.thumbnail_path else None,
        "back_url": _back_url(request), "expires_at": retention.expires_at(asset),
    })


def _back_url(request):
    """Back to the Library page the user came from (filters and page kept), else its first page."""
    referer = request.META.get("HTTP_REFERER", "")
    index = reverse("library")
    host = request.build_absolute_uri(index)
    if referer.startswith(host) and referer[len(host):][:1] in ("", "?"):
        return index + referer[len(host):]
    return index


@login_required
@require_http_methods(["GET", "HEAD"])
def download(request, kind, pk):
    """The file itself, saved under a name that says what it is (a fresh signed URL, for pages that have none)."""
    asset = _get_asset(request, kind, pk)
    return redirect(signed_url(asset.bucket, asset.path, download=file_name(asset)))


@login_required
@require_http_methods(["POST"])
def use_as_reference(request, pk):
    """Make one of the user's images a reference image and open the Workspace with it selected."""
    image = _get_asset(request, "image", pk)
    try:
        ref = references.reference_from_image(image)
    except references.InvalidReference as exc:
        messages.error(request, f"This image can't be used as a reference: {exc}")
        return redirect("library-detail", "image", pk)
    return redirect(reverse("workspace") + "?" + urlencode({"reference_image": ref.pk}))


@login_required
@require_http_methods(["POST"])
def keep(request, kind, pk):
    """Keep an image or video (retention never deletes it), or stop keeping it (form field `keep`: 1 or 0)."""
    asset = _get_asset(request, kind, pk)
    asset.keep = request.POST.get("keep") == "1"
    asset.save(update_fields=["keep", "updated_at"])
    return redirect("library-detail", kind, pk)


@login_required
@require_http_methods(["GET", "POST"])
def delete(request, kind, pk):
    """Confirm (GET), then delete (POST) an image or video; its files go when the deletion commits."""
    asset = _get_asset(request, kind, pk)
    if request.method == "POST":
        asset.delete()  # generation.receivers.delete_files removes the file and its thumbnail
        messages.success(request, "Deleted.")
        return redirect("library")
    thumbnail_url = signed_url(asset.bucket, asset.thumbnail_path, request) if asset.thumbnail_path else None
    return render(request, "library/confirm_delete.html", {
        "section": "library", "kind": kind, "asset": asset, "thumbnail_url": thumbnail_url,
        "job_label": job_types.label(asset.job.job_type),
        "detail_url": reverse("library-detail", args=[kind, pk]),
    })
