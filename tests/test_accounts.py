"""Accounts: login and logout (Django's views), switchable self sign-up, CSRF, each user's own work."""

import pytest
from django.contrib.auth import SESSION_KEY, get_user_model
from django.test import Client
from helpers import ALICE_PASSWORD

from generation import submission
from generation.models import Image, JobStatus

pytestmark = pytest.mark.django_db

SIGNUP = {"username": "newbie", "password1": "violet-lantern-42", "password2": "violet-lantern-42"}


def logged_in_as(client):
    """The username of the session's user, or None."""
    user_id = client.session.get(SESSION_KEY)
    return get_user_model().objects.get(pk=user_id).username if user_id else None


def csrf_post(client, url, data):
    """POST as a browser does: fetch the form first, then send its CSRF token back."""
    page = client.get(url)
    assert page.status_code == 200
    return client.post(url, {**data, "csrfmiddlewaretoken": client.cookies["csrftoken"].value})


# --- login and logout ------------------------------------------------------------------------

def test_login_page_renders_a_form_with_csrf_token(client):
    page = client.get("/accounts/login/?next=/library/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="csrfmiddlewaretoken"' in html
    assert 'name="username"' in html and 'name="password"' in html
    assert 'name="next" value="/library/"' in html
    assert 'action="/accounts/logout/"' not in html  # nobody to log out


def test_login_with_good_credentials_goes_to_the_workspace(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    assert logged_in_as(client) == "alice"
    assert client.get("/").status_code == 200


def test_login_follows_a_safe_next_only(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD, "next": "/library/"})
    assert response["Location"] == "/library/"
    client.logout()
    response = client.post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD,
                                                "next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_login_with_bad_credentials_shows_an_error(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Please enter a correct username and password" in html
    assert 'class="field-error"' in html
    assert 'value="alice"' in html  # the username is kept, the password is not
    assert "wrong" not in html
    assert logged_in_as(client) is None


def test_logout_is_a_post_from_every_page(alice_client):
    page = alice_client.get("/").content.decode()
    assert '<form class="account" method="post" action="/accounts/logout/">' in page
    assert alice_client.get("/accounts/logout/").status_code == 405  # Django 5: no logout by GET
    assert logged_in_as(alice_client) == "alice"
    response = alice_client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert response["Clear-Site-Data"] == '"storage"'  # the browser forgets the pages' remembered form
    assert logged_in_as(alice_client) is None
    assert alice_client.get("/")["Location"].startswith("/accounts/login/")


def test_pages_need_a_login(client):
    for url in ["/", "/library/", "/dashboard/"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next="), url


# --- sign-up ---------------------------------------------------------------------------------

def test_signup_off_is_a_404_and_not_linked(client, settings):
    settings.OURVIDZ_SIGNUP = False
    assert client.get("/accounts/signup/").status_code == 404
    assert client.post("/accounts/signup/", SIGNUP).status_code == 404
    assert not get_user_model().objects.filter(username="newbie").exists()
    assert b"/accounts/signup/" not in client.get("/accounts/login/").content


def test_signup_on_creates_the_user_logs_in_and_goes_to_the_workspace(client, settings):
    settings.OURVIDZ_SIGNUP = True
    login_page = client.get("/accounts/login/").content.decode()
    assert 'href="/accounts/signup/"' in login_page
    form = client.get("/accounts/signup/")
    assert form.status_code == 200 and 'name="password2"' in form.content.decode()
    response = client.post("/accounts/signup/", SIGNUP)
    assert response.status_code == 302 and response["Location"] == "/"
    user = get_user_model().objects.get(username="newbie")
    assert user.check_password(SIGNUP["password1"]) and not user.is_staff and not user.is_superuser
    assert logged_in_as(client) == "newbie"
    assert client.get("/").status_code == 200
    assert client.get("/dashboard/").status_code == 403  # a new account is not staff


def test_signup_errors_are_shown_and_nothing_is_created(client, settings, alice):
    settings.OURVIDZ_SIGNUP = True
    mismatch = client.post("/accounts/signup/", {**SIGNUP, "password2": "something-else-99"})
    assert mismatch.status_code == 200 and "The two password fields didn’t match" in mismatch.content.decode()
    taken = client.post("/accounts/signup/", {**SIGNUP, "username": "alice"})
    assert "A user with that username already exists" in taken.content.decode()
    weak = client.post("/accounts/signup/", {**SIGNUP, "password1": "12345678", "password2": "12345678"})
    assert "This password is entirely numeric" in weak.content.decode()
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["alice"]
    assert logged_in_as(client) is None


def test_signed_in_users_visiting_signup_go_to_the_workspace(alice_client, settings):
    settings.OURVIDZ_SIGNUP = True
    assert alice_client.get("/accounts/signup/")["Location"] == "/"


# --- CSRF ------------------------------------------------------------------------------------

def test_login_form_enforces_csrf(alice):
    browser = Client(enforce_csrf_checks=True)
    assert browser.post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD}).status_code == 403
    assert logged_in_as(browser) is None
    response = csrf_post(browser, "/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD})
    assert response.status_code == 302 and logged_in_as(browser) == "alice"


def test_signup_form_enforces_csrf(settings):
    settings.OURVIDZ_SIGNUP = True
    browser = Client(enforce_csrf_checks=True)
    assert browser.post("/accounts/signup/", SIGNUP).status_code == 403
    assert not get_user_model().objects.filter(username="newbie").exists()
    response = csrf_post(browser, "/accounts/signup/", SIGNUP)
    assert response.status_code == 302 and logged_in_as(browser) == "newbie"


def test_logout_form_enforces_csrf(alice):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.post("/accounts/logout/").status_code == 403
    assert logged_in_as(browser) == "alice"


# --- each user sees only their own work -------------------------------------------------------

def _image(user, prompt):
    job = submission.build_job(user, "sdxl_image_fast", prompt)
    job.status = JobStatus.COMPLETED
    job.save()
    return Image.objects.create(user=user, job=job, prompt=prompt, bucket="sdxl-image-fast", quality="fast",
                                format="png", width=64, height=64, image_path=f"{user.pk}/{job.pk}/0.png")


def test_pages_show_only_the_users_own_work(alice, alice_client, bob):
    _image(alice, "alice's lighthouse at dawn")
    bobs = _image(bob, "bob's secret submarine")
    library = alice_client.get("/library/").content.decode()
    assert "alice&#x27;s lighthouse at dawn" in library
    assert "submarine" not in library
    assert alice_client.get(f"/library/image/{bobs.pk}/").status_code == 404
    jobs = alice_client.get("/api/jobs/").json()  # the session works for the API too
    prompts = [job["prompt"] for job in jobs.get("results", jobs)]
    assert prompts == ["alice's lighthouse at dawn"]
