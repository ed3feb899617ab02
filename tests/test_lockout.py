"""Wrong passwords slow logins down, then lock them for a while (django-axes): the API's token endpoint, the
login page and the admin's, for one account or one address; an admin can unlock."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.db.models import F
from helpers import ALICE_PASSWORD
from rest_framework.test import APIClient


@pytest.fixture
def no_slowdown(settings):
    """The lockout alone: failures straight after each other, without waiting out the slow-down."""
    settings.LOGIN_SLOWDOWN_SECONDS = 0


def token(api, password):
    return api.post("/api/auth/token/", {"username": "alice", "password": password}, format="json")


def wait(seconds):
    """As if the last failure were `seconds` older."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(seconds=seconds))


def test_each_wrong_password_slows_the_next_try_down_twice_as_long(alice):
    api = APIClient()
    assert token(api, "wrong").status_code == 400
    slowed = token(api, ALICE_PASSWORD)  # straight after: refused, the password unchecked
    assert slowed.status_code == 429 and slowed["Retry-After"] == "1"
    assert slowed.json() == {"code": "locked_out", "detail": "Wrong password just now for this account or from "
                                                              "this address; try again in 1 s."}
    wait(1)
    assert token(api, "wrong").status_code == 400  # the second failure (the refused try was not one)
    assert token(api, "wrong")["Retry-After"] == "2"
    wait(2)
    assert token(api, ALICE_PASSWORD).status_code == 200  # which starts over
    assert token(api, "wrong").status_code == 400
    assert token(api, "wrong")["Retry-After"] == "1"


def test_the_login_page_says_when_to_try_again(alice, client):
    client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    page = client.post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD})
    assert page.status_code == 429 and page["Retry-After"] == "1"
    assert "Not so fast" in page.content.decode() and "try again in 1 s" in page.content.decode()

def test_wrong_passwords_lock_the_token_endpoint_even_for_the_right_one(alice, settings, no_slowdown):
    api = APIClient()
    assert token(api, ALICE_PASSWORD).status_code == 200
    # The fifth wrong password is refused as a lockout already, and so is the right one after it.
    assert [token(api, "wrong").status_code for _ in range(settings.AXES_FAILURE_LIMIT)] == [400] * 4 + [429]
    locked = token(api, ALICE_PASSWORD)
    assert locked.status_code == 429 and locked["Retry-After"] == "900"
    assert locked.json()["code"] == "locked_out"
    assert locked.json()["detail"].startswith("Too many failed logins for this account or from this address")
    call_command("axes_reset_username", "alice", verbosity=0)  # an admin unlocks her
    assert token(api, ALICE_PASSWORD).status_code == 200


def test_wrong_passwords_on_the_login_page_lock_it_and_say_so(alice, bob, client, no_slowdown):
    for _ in range(4):
        page = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
        assert page.status_code == 200 and "Please enter a correct username and password" in page.content.decode()
    assert client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 429
    page = client.post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD})
    assert page.status_code == 429 and "Logins locked for a while" in page.content.decode()
    assert page["Retry-After"] == "900"
    # From the same address, another account is locked out too, on the admin's login as well.
    admin = client.post("/admin/login/", {"username": "bob", "password": "whatever"})
    assert admin.status_code == 429


def test_an_admin_unlocks_in_the_admin(alice, admin_client, client, no_slowdown):
    for _ in range(5):
        client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert admin_client.get("/admin/axes/accessattempt/").status_code == 200
    assert AccessAttempt.objects.filter(username="alice").exists()
    AccessAttempt.objects.all().delete()  # what the admin's delete action does
    page = client.post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD})
    assert page.status_code == 302
