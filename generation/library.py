"""The Library pages: a user's images and videos."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def index(request):
    """The user's images and videos, newest first."""
    return render(request, "library/index.html", {"section": "library"})


@login_required
def detail(request, kind, pk):
    """One image or video with every generation parameter."""
    return render(request, "library/detail.html", {"section": "library"})


@login_required
def delete(request, kind, pk):
    """Confirm, then delete an image or video and its files."""
    return render(request, "library/confirm_delete.html", {"section": "library"})
