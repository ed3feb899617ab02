"""The operators' Dashboard: queues, workers, throughput, errors."""

from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import render


@staff_member_required
def dashboard(request):
    """Queue and worker figures for staff."""
    return render(request, "dashboard.html", {"section": "dashboard"})
