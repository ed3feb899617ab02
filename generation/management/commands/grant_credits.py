"""manage.py grant_credits USER N [--reason TEXT]: add N credits to USER's balance (negative N takes them back,
never below zero)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from generation import credits


class Command(BaseCommand):
    help = "Grant USER N credits (N may be negative to take credits back, never below zero)."

    def add_arguments(self, parser):
        parser.add_argument("user", help="username")
        parser.add_argument("amount", type=int, help="credits to add (negative: to take back)")
        parser.add_argument("--reason", default="granted with manage.py grant_credits")

    def handle(self, user, amount, reason, **options):
        try:
            who = get_user_model().objects.get(username=user)
        except get_user_model().DoesNotExist:
            raise CommandError(f"There is no user {user!r}.") from None
        try:
            entry = credits.grant(who, amount, reason)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{who}: {amount:+d} credits; balance {entry.balance}.")
