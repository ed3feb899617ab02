"""The Workspace page: where users write prompts, submit jobs and watch them run."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def workspace(request):
    """The main page after login."""
    return render(request, "workspace.html", {"section": "workspace"})
