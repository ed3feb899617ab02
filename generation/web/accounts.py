"""Self sign-up, when settings.OURVIDZ_SIGNUP allows it, and logging out (login is Django's own view)."""

from django.conf import settings
from django.contrib.auth import login, password_validation
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters


class SignupForm(UserCreationForm):
    """Django's user-creation form with help texts short enough to sit under a field."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["username"].help_text = "Up to 150 letters, digits and @ . + - _"
        self.fields["password1"].help_text = " ".join(password_validation.password_validators_help_texts())
        self.fields["password2"].help_text = ""


def _next_url(request):
    """Where to go after signing up: a safe `next`, or the Workspace."""
    candidate = request.POST.get("next") or request.GET.get("next")
    if candidate and url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                                     require_https=request.is_secure()):
        return candidate
    return reverse("workspace")


@sensitive_post_parameters("password1", "password2")
@csrf_protect
@never_cache
def signup(request):
    """Create an account and log in; 404 when sign-up is switched off."""
    if not settings.OURVIDZ_SIGNUP:
        raise Http404("Sign-up is switched off.")
    if request.user.is_authenticated:
        return redirect(_next_url(request))
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        login(request, form.save(), backend="django.contrib.auth.backends.ModelBackend")
        return redirect(_next_url(request))
    return render(request, "registration/signup.html", {"form": form, "next": _next_url(request)})


class LogoutView(auth_views.LogoutView):
    """Django's logout, also telling the browser to forget what the pages kept in its storage (the Workspace's
    remembered form and prompt draft): on a shared computer, the next person must not find them."""

    def post(self, request, *args, **kwargs):
        response = super().post(request, *args, **kwargs)
        response["Clear-Site-Data"] = '"storage"'
        return response
