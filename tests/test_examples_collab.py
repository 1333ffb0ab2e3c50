"""The collab example's page as the server serves it (`DS_EXAMPLES__COLLAB`): off by default,
only the built files by name, with their content types, cache validators and a content
security policy, through the protocol's request handling. The page itself is tested in a
browser (tests/test_collab_browser.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from streams import examples
from streams.config import ConfigError, Settings
from streams.examples import Examples, load
from tests.test_http_settings import call, serving

PAGE = {
    "index.html": b"<!doctype html><title>t</title>",
    "app.js": b"export {}",
    "style.css": b"a{}",
}


@pytest.fixture
def built(tmp_path: Path) -> Path:
    for name, body in PAGE.items():
        (tmp_path / name).write_bytes(body)
    (tmp_path / "notes.md").write_text("not a type the page uses")
    (tmp_path / "sub").mkdir()
    return tmp_path


async def test_off_by_default_the_path_is_not_served() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        assert app.examples is None
        assert (await call(app, "GET", "/examples/collab/")).status == 404
        nursery.cancel_scope.cancel()


async def test_the_built_files_are_served_with_their_types(built: Path) -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        app.examples = Examples(load("/v1/yjs", "/v1/stream", built))
        page = await call(app, "GET", "/examples/collab/")
        assert page.status == 200 and page.body == PAGE["index.html"]
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-cache"
        script = await call(app, "GET", "/examples/collab/app.js")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert (await call(app, "GET", "/examples/collab/style.css")).body == b"a{}"
        config = await call(app, "GET", "/examples/collab/config.json")
        assert config.headers["content-type"] == "application/json"
        assert config.body == b'{"yjsBase": "/v1/yjs", "streamBase": "/v1/stream"}'
        nursery.cancel_scope.cancel()


async def test_only_the_files_by_name(built: Path) -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        app.examples = Examples(load("/v1/yjs", "/v1/stream", built))
        for path in (
            "/examples/collab/../../pyproject.toml",
            "/examples/collab/%2e%2e/secret",
            "/examples/collab//etc/passwd",
            "/examples/collab/notes.md",
            "/examples/collab/sub",
            "/examples/collab/sub/",
            "/examples/collab/index.html/",
        ):
            missing = await call(app, "GET", path)
            assert missing.status == 404, path
            assert missing.headers["content-type"] == "application/problem+json"
        moved = await call(app, "GET", "/examples/collab")
        assert (moved.status, moved.headers["location"]) == (308, "/examples/collab/")
        # Not under the example's path: the streams' routes as before.
        assert (await call(app, "GET", "/examples/collabx")).status == 404
        nursery.cancel_scope.cancel()


async def test_get_and_head_only_and_validators(built: Path) -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        app.examples = Examples(load("/v1/yjs", "/v1/stream", built))
        for method in ("PUT", "POST", "DELETE"):
            refused = await call(app, method, "/examples/collab/app.js", b"x")
            assert (refused.status, refused.headers["allow"]) == (405, "GET, HEAD")
        head = await call(app, "HEAD", "/examples/collab/app.js")
        assert (head.status, head.body) == (200, b"")
        assert head.headers["content-length"] == str(len(PAGE["app.js"]))
        etag = head.headers["etag"]
        again = await call(app, "GET", "/examples/collab/app.js", headers={"If-None-Match": etag})
        assert (again.status, again.body) == (304, b"")
        nursery.cancel_scope.cancel()


def test_the_setting_needs_the_built_page(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(examples, "BUILT", tmp_path / "dist")
    with pytest.raises(ConfigError, match=r"DS_EXAMPLES__COLLAB.*npm ci && npm run build"):
        Settings.from_env({"DS_EXAMPLES__COLLAB": "true"})
    assert Settings.from_env({"DS_EXAMPLES__COLLAB": "false"}).example_collab is False


def test_the_setting_refuses_a_base_path_under_the_example(
    monkeypatch: pytest.MonkeyPatch, built: Path
) -> None:
    monkeypatch.setattr(examples, "BUILT", built)
    assert Settings.from_env({"DS_EXAMPLES__COLLAB": "true"}).example_collab is True
    environ = {"DS_EXAMPLES__COLLAB": "true", "DS_HTTP__STREAM_BASE_PATH": "/examples/collab/s"}
    with pytest.raises(ConfigError, match="overlaps"):
        Settings.from_env(environ)
