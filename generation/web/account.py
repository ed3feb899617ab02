"""The account page: the user's credits, tier, limits, usage per job type and ledger."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render

from .. import credits
from ..models import CreditEntry

ENTRIES_PER_PAGE = 50


@login_required
def account(request):
    """Balance, limits and usage (the same figures as GET /api/account/), then the ledger, newest first."""
    summary = credits.summary(request.user)
    ledger = Paginator(CreditEntry.objects.filter(user=request.user), ENTRIES_PER_PAGE)
    return render(request, "account.html", {
        "section": "account", "summary": summary, "entries": ledger.get_page(request.GET.get("page")),
    })
