"""The coordinator serves the call page, its assets and (with development keys only) the dev login."""

from __future__ import annotations

import httpx

from signaling.server import EmbeddedCoordinator
from tests.conftest import API_KEY, make_config


async def test_page_assets_and_dev_login(coord: EmbeddedCoordinator) -> None:
    async with httpx.AsyncClient(base_url=coord.url) as http:
        for path in ("/", "/call/default/my-call"):
            r = await http.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert f'<meta name="callrt-api-key" content="{API_KEY}">' in r.text
            assert '<meta name="callrt-dev-login" content="1">' in r.text
            assert '<script type="module" src="/static/app.js">' in r.text
            csp = r.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "http" not in r.text.replace(coord.url, "")  # nothing fetched from elsewhere
        for asset, kind in (("app.js", "javascript"), ("mesh.js", "javascript"), ("api.js", "javascript"),
                            ("pattern.js", "javascript"), ("call.css", "text/css")):
            r = await http.get(f"/static/{asset}")
            assert r.status_code == 200 and kind in r.headers["content-type"], asset
            assert "https://" not in r.text and "http://" not in r.text, asset  # no external assets
        assert (await http.get("/static/../page.py")).status_code == 404
        assert (await http.get("/static/nope.js")).status_code == 404
        r = await http.get("/call/Bad Type/x")
        assert r.status_code == 400 and r.json()["code"] == "invalid_request"

        r = await http.post("/dev/token", json={"user_id": "alice"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["api_key"] == API_KEY and body["user_id"] == "alice"
        identity = coord.tokens.identify(body["token"])
        assert identity.user_id == "alice" and identity.expires_at is not None
        # the minted token works against the REST API as that user
        r = await http.post("/video/call/default/page-check", json={},
                            headers={"X-Api-Key": API_KEY, "Authorization": f"Bearer {body['token']}"})
        assert r.status_code == 200 and r.json()["call"]["created_by"] == "alice"
        for bad in ({"user_id": "no spaces"}, {"user_id": ""}, {}, {"user_id": "a", "role": "admin"}):
            r = await http.post("/dev/token", json=bad)
            assert r.status_code == 400 and r.json()["code"] == "invalid_request", bad


async def test_dev_login_is_absent_without_development_keys() -> None:
    async with EmbeddedCoordinator(make_config()) as coord, httpx.AsyncClient(base_url=coord.url) as http:
        r = await http.post("/dev/token", json={"user_id": "alice"})
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        page = (await http.get("/")).text
        assert '<meta name="callrt-dev-login" content="0">' in page
