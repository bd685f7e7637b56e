"""The playground page at ``/``: served from the package, self-contained, outside the API document."""

from __future__ import annotations

import re

import httpx

from service.api.playground import STATIC


def test_the_page_and_its_files_are_served_without_a_key(packages):
    from .live import live_server, make_settings

    with live_server(make_settings(packages.root, api_keys="k")) as locked:
        page = httpx.get(f"{locked.url}/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
        assert f"connect-src 'self' ws://127.0.0.1:{locked.port}" in policy
        for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
            response = httpx.get(f"{locked.url}/static/{name}")
            assert response.status_code == 200 and kind in response.headers["content-type"]
            assert response.text == (STATIC / name).read_text(encoding="utf-8")
        assert httpx.get(f"{locked.url}/v1/models").status_code == 401  # the API still needs the key
        missing = httpx.get(f"{locked.url}/static/nope.js")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_the_page_loads_nothing_from_elsewhere():
    files = sorted(p.name for p in STATIC.iterdir())
    assert files == ["app.js", "index.html", "style.css"]
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    assert re.findall(r'(?:src|href)="([^"]+)"', page) == ["data:,", "/static/style.css", "/static/app.js"]
    for name in files:
        text = (STATIC / name).read_text(encoding="utf-8")
        assert not re.search(r"https?://|//cdn|@import|\burl\(", text), name
