"""Self sign-up, when settings.OURVIDZ_SIGNUP allows it (login and logout are Django's own views)."""

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404
from django.shortcuts import redirect, render


def signup(request):
    """Create an account and log in; 404 when sign-up is switched off."""
    if not settings.OURVIDZ_SIGNUP:
        raise Http404
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        login(request, form.save())
        return redirect("workspace")
    return render(request, "registration/signup.html", {"form": form})
