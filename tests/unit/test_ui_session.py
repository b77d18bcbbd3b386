"""/ui login, logout, the session cookie, CSRF and the response headers."""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from adapters.http.app import create_app
from adapters.http.ui.session import LOGIN_COOKIE, SESSION_COOKIE, local_path
from tests.unit.http_support import TOKEN, running_api
from tests.unit.ui_support import add, csrf_of, log_in, running_ui


async def test_pages_redirect_to_the_login_form_keeping_the_address() -> None:
    async with running_api() as api:  # the client sends a valid bearer header: the dashboard wants its cookie
        for path in ["/ui", "/ui/jobs?state=failed", "/ui/schedules", "/ui/failed", f"/ui/jobs/{add(api).id}"]:
            response = await api.client.get(path, follow_redirects=False)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/ui/login"), path
        response = await api.client.get("/ui/jobs?state=failed", follow_redirects=False)
        assert response.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstate%3Dfailed"


async def test_login_sets_a_strict_httponly_cookie_and_goes_where_the_visitor_was_going() -> None:
    async with running_api() as api:
        form = await api.client.get("/ui/login?next=/ui/schedules")
        assert 'name="next" value="/ui/schedules"' in form.text
        response = await api.client.post("/ui/login", data={"token": TOKEN, "csrf": csrf_of(form.text),
                                                             "next": "/ui/schedules"}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/ui/schedules"
        session = next(c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "="))
        assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/ui" in session
        assert TOKEN not in session  # encoded, so that any token fits in a cookie
        assert (await api.client.get("/ui/schedules")).status_code == 200


async def test_a_wrong_token_is_refused_and_sets_no_session() -> None:
    async with running_api() as api:
        form = await api.client.get("/ui/login")
        response = await api.client.post("/ui/login", data={"token": "guess", "csrf": csrf_of(form.text)})
        assert response.status_code == 401 and "That token is not valid." in response.text
        assert SESSION_COOKIE not in api.client.cookies
        assert (await api.client.get("/ui", follow_redirects=False)).status_code == 303


async def test_the_login_form_is_csrf_protected_too() -> None:
    async with running_api() as api:
        await api.client.get("/ui/login")
        response = await api.client.post("/ui/login", data={"token": TOKEN, "csrf": "forged"})
        assert response.status_code == 403
        api.client.cookies.delete(LOGIN_COOKIE)
        response = await api.client.post("/ui/login", data={"token": TOKEN, "csrf": ""})
        assert response.status_code == 403
        assert SESSION_COOKIE not in api.client.cookies


async def test_logout_ends_the_session() -> None:
    async with running_ui() as (api, csrf):
        response = await api.client.post("/ui/logout", data={"csrf": csrf})
        assert response.url.path == "/ui/login" and "You are logged out." in response.text
        assert (await api.client.get("/ui", follow_redirects=False)).status_code == 303


async def test_a_post_without_the_sessions_csrf_token_changes_nothing() -> None:
    async with running_ui() as (api, csrf):
        job = add(api)
        for data in [{}, {"csrf": "0" * 64}, {"csrf": csrf[:-1]}]:
            response = await api.client.post(f"/ui/jobs/{job.id}/cancel", data=data)
            assert response.status_code == 403 and "reload the page" in response.text
        assert api.jobs.rows[job.id] == job
        response = await api.client.post("/ui/logout", data={})
        assert response.status_code == 403


async def test_a_session_ends_when_its_token_is_no_longer_accepted() -> None:
    async with running_ui() as (api, _):
        sent = {"Cookie": f"{SESSION_COOKIE}={api.client.cookies[SESSION_COOKIE]}"}
        assert (await api.client.get("/ui", headers=sent)).status_code == 200
        rotated = create_app(api.container, tokens=["the-new-token"])
        async with AsyncTestClient(rotated) as client:
            assert (await client.get("/ui", headers=sent, follow_redirects=False)).status_code == 303


async def test_next_never_leaves_the_dashboard() -> None:
    for target in ["https://evil.example/ui", "//evil.example/ui", "/uix", "/v1/jobs", "", None, "/ui\\@evil"]:
        assert local_path(target) == "/ui", target
    for target in ["/ui", "/ui/jobs", "/ui/jobs?state=failed"]:
        assert local_path(target) == target


async def test_pages_forbid_framing_and_caching_and_static_files_need_no_login() -> None:
    async with running_api() as api:
        login = await api.client.get("/ui/login")
        assert login.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in login.headers["content-security-policy"]
        assert "no-store" in login.headers["cache-control"]
        css = await api.client.get("/ui/static/ui.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert (await api.client.get("/ui/static/nothing.css")).status_code == 404
    async with running_ui() as (api, _):
        assert (await api.client.get("/ui")).headers["x-frame-options"] == "DENY"


async def test_logging_in_again_gives_a_new_csrf_token() -> None:
    async with running_ui() as (api, first):
        api.client.cookies.delete(SESSION_COOKIE)
        second = await log_in(api.client)
        assert first != second
        job = add(api)
        stale = await api.client.post(f"/ui/jobs/{job.id}/cancel", data={"csrf": first})
        assert stale.status_code == 403
