"""List filters of the API (django-filter): documented in the OpenAPI schema, a bad value is a 400."""

import django_filters

from .. import job_types
from ..models import JOB_TYPE_CHOICES, Image, Job, JobStatus, Video

QUEUE_CHOICES = [(pool.queue, pool.queue) for pool in job_types.POOLS.values()]


class ChoiceFilter(django_filters.ChoiceFilter):
    """django-filter's, its empty value (`?status=`: any, as if it were left out) one of its choices, so that the
    schema's enum lists it too."""

    def __init__(self, *, choices, **kwargs):
        super().__init__(choices=[("", "any"), *choices], empty_label=None, **kwargs)


class JobFilter(django_filters.FilterSet):
    status = ChoiceFilter(choices=JobStatus.choices)
    job_type = ChoiceFilter(choices=JOB_TYPE_CHOICES)
    queue = ChoiceFilter(choices=QUEUE_CHOICES)

    class Meta:
        model = Job
        fields = ["status", "job_type", "queue"]


class AssetFilter(django_filters.FilterSet):
    job_type = ChoiceFilter(field_name="job__job_type", choices=JOB_TYPE_CHOICES)
    # An image or video exists once its job completed; the job's status is the asset's.
    status = ChoiceFilter(field_name="job__status", choices=JobStatus.choices)
    # Favourites (kept from retention): the JSON words, strictly, so that a typo is a 400 and not "any".
    keep = ChoiceFilter(choices=[("true", "true"), ("false", "false")], method="filter_keep")

    def filter_keep(self, queryset, name, value: str):  # the hint: the schema says string, as for the others
        return queryset.filter(keep=value == "true")


class ImageFilter(AssetFilter):
    class Meta:
        model = Image
        fields = ["job_type", "status", "keep"]


class VideoFilter(AssetFilter):
    class Meta:
        model = Video
        fields = ["job_type", "status", "keep"]
