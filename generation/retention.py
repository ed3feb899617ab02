"""Retention: an image or video is deleted RETENTION_DAYS after it was made (a number per tier; 0 keeps it
forever), unless its owner keeps it (Asset.keep). The daily housekeeping task `generation.expire_outputs` deletes
what has expired: its rows, then its files through the storage layer (generation.receivers.delete_files). The
job stays, for the ledger and usage figures, with its outputs gone."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import Image, Tier, Video, tier_of

BATCH = 500  # rows deleted per transaction: a long backlog is not one long lock


def days(tier):
    """Days an output of a `tier` user is kept (0: forever)."""
    values = settings.RETENTION_DAYS
    return values[min(tier, len(values) - 1)]


def expires_at(asset, kept_for=None):
    """When `asset` will be deleted, its owner's outputs being kept `kept_for` days (default: by their tier), or
    None when it stays (kept by its owner, or 0 days: forever)."""
    kept_for = days(tier_of(asset.user)) if kept_for is None else kept_for
    if asset.keep or not kept_for:
        return None
    return asset.created_at + timedelta(days=kept_for)


def _tier_users(tier):
    """Owners at `tier`, as a filter on an asset's user (staff count as priority, as they do everywhere)."""
    priority = Q(user__is_staff=True) | Q(user__account__tier=Tier.PRIORITY)
    return priority if tier == Tier.PRIORITY else ~priority


def expired(model, now=None):
    """`model`'s assets (Image or Video) whose time has passed and that their owners do not keep."""
    now = now or timezone.now()
    matches = Q(pk__in=[])
    for tier in Tier.values:
        if kept_for := days(tier):
            matches |= _tier_users(tier) & Q(created_at__lt=now - timedelta(days=kept_for))
    return model.objects.filter(matches, keep=False)


def delete_expired(now=None):
    """Delete every expired image and video, a batch per transaction; their files go once each commits.
    Returns {"images": n, "videos": m}. Running it again deletes nothing more."""
    deleted = {}
    for name, model in (("images", Image), ("videos", Video)):
        deleted[name] = 0
        while ids := list(expired(model, now).values_list("pk", flat=True)[:BATCH]):
            with transaction.atomic():
                deleted[name] += model.objects.filter(pk__in=ids, keep=False).delete()[1].get(model._meta.label, 0)
    return deleted
