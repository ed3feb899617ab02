"""What every response carries or refuses whatever the view: an oversized body refused before it is read, the
Content-Security-Policy and the other security headers, and a favicon where browsers look for one."""

import re
import socket

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from generation.models import ReferenceImage


def raw_request(server_url, head):
    """Send `head` (a request line and headers, no body) to the live server; its response's status line and
    headers, read without ever sending the body the headers announce."""
    host, port = server_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.decode("latin-1")


@pytest.mark.django_db(transaction=True)
def test_an_oversized_upload_is_refused_before_its_body_is_read(alice, live_server):
    token = Token.objects.create(user=alice).key
    # Announces 2 GiB and sends none of it: an answer at all means the server did not wait for the body.
    answer = raw_request(live_server.url, "POST /api/references/ HTTP/1.1\r\nHost: localhost\r\n"
                                          f"Authorization: Token {token}\r\nContent-Type: multipart/form-data; "
                                          "boundary=x\r\nContent-Length: 2147483648\r\n\r\n")
    assert answer.startswith("HTTP/1.1 413"), answer
    assert not ReferenceImage.objects.exists()


def test_the_size_limit_leaves_room_for_the_largest_reference(alice_api):
    # The largest reference the validation accepts, with its form fields, is under the limit...
    assert settings.REQUEST_MAX_BYTES > settings.REFERENCE_MAX_BYTES + 64 * 1024
    # ... and what is over it is answered in JSON naming both sizes, for the API and for the pages.
    refused = alice_api.post("/api/references/", b"", content_type="application/octet-stream",
                             CONTENT_LENGTH=str(settings.REQUEST_MAX_BYTES + 1))
    assert refused.status_code == 413
    assert refused.json() == {"detail": f"The request is {settings.REQUEST_MAX_BYTES + 1} bytes; the most "
                                        f"accepted is {settings.REQUEST_MAX_BYTES}."}


def test_the_proxy_in_deploy_refuses_the_same_sizes():
    conf = (settings.BASE_DIR / "deploy" / "nginx.conf").read_text()
    size = re.search(r"client_max_body_size\s+(\d+)m;", conf)
    assert size and int(size.group(1)) * 2**20 == settings.REQUEST_MAX_BYTES


def test_pages_and_the_api_send_a_content_security_policy(alice_client, alice_api):
    # A JSON answer loads nothing: its policy allows nothing.
    api = alice_api.get("/api/jobs/")
    assert api["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert api["X-Content-Type-Options"] == "nosniff"
    for response in (alice_client.get("/"), alice_client.get("/library/"), alice_client.get("/accounts/login/")):
        policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
        assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
        assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
        assert response["X-Content-Type-Options"] == "nosniff" and response["X-Frame-Options"] == "DENY"
    # DRF's browsable API has inline styles and an onclick: allowed there, an inline <script> still not.
    browsable = alice_client.get("/api/jobs/", HTTP_ACCEPT="text/html")
    policy = dict(part.strip().split(" ", 1) for part in browsable["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self'" and policy["script-src-attr"] == "'unsafe-inline'"
    assert policy["style-src"] == "'self' 'unsafe-inline'"


def test_browsers_find_the_favicon_where_they_look_for_it(client):
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon["Content-Type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    assert b"".join(icon.streaming_content).startswith(b"\x00\x00\x01\x00")  # an ICO file's header
