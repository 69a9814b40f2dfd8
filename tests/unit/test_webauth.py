"""The HTTP guard's pure parts: the token file, Host and Origin checks, credentials out of logs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from dtf_bus.http import auth as webauth

pytestmark = pytest.mark.unit


def request(method: str = "GET", uri: str = "/api", **headers: str) -> HTTPServerRequest:
    fields = HTTPHeaders({"Host": "127.0.0.1:8585"})
    for name, value in headers.items():
        fields[name.replace("_", "-")] = value
    return HTTPServerRequest(start_line=RequestStartLine(method, uri, "HTTP/1.1"), headers=fields)


def test_token_file_is_private_from_the_start_reused_and_agreed_on(tmp_path):
    path = webauth.token_path(tmp_path / "dtf.duckdb")
    assert path.name == "dtf.duckdb.api-token"
    start = threading.Barrier(8)

    def make() -> str:
        start.wait()
        return webauth.load_or_create_token(path)

    with ThreadPoolExecutor(8) as pool:
        tokens = set(pool.map(lambda _: make(), range(8)))
    assert len(tokens) == 1 and path.read_text().strip() in tokens
    assert path.stat().st_mode & 0o777 == 0o600
    assert webauth.load_or_create_token(path) in tokens
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    path.chmod(0o640)
    with pytest.raises(webauth.TokenFileError, match="readable by others"):
        webauth.load_or_create_token(path)
    path.chmod(0o600)
    path.write_text("x\n")
    with pytest.raises(webauth.TokenFileError, match="not an API token file"):
        webauth.read_token(path)


def test_host_allow_list():
    allowed = webauth.allowed_hosts(["Dash.Example.COM."], "10.0.0.5")
    for host in ("127.0.0.1:8585", "localhost", "[::1]:8585", "dash.example.com", "10.0.0.5:80", "LOCALHOST."):
        webauth.check_host(request(Host=host), allowed)
    for host in ("attacker.example", "127.0.0.1.attacker.example", "10.0.0.6", "", "localhost:99999x"):
        with pytest.raises(webauth.Refused) as refused:
            webauth.check_host(request(Host=host), allowed)
        assert refused.value.status == 403
    assert "0.0.0.0" not in webauth.allowed_hosts([], "0.0.0.0")
    webauth.check_host(request(Host="anything.example"), webauth.allowed_hosts(["*"]))


def test_origin_and_body_type():
    webauth.check_origin(request("POST"))  # a script: no Origin
    webauth.check_origin(request("POST", Origin="http://127.0.0.1:8585"))
    webauth.check_origin(request("GET", Origin="http://evil.example"))  # reads are guarded by the token
    for origin in ("http://evil.example", "null", "https://127.0.0.1:8585", "http://127.0.0.1:8586", "file://"):
        with pytest.raises(webauth.Refused):
            webauth.check_origin(request("POST", Origin=origin))
    with pytest.raises(webauth.Refused):
        webauth.check_origin(request("POST", Sec_Fetch_Site="cross-site"))
    webauth.check_body_type(request("POST", Content_Type="application/json; charset=utf-8"))
    webauth.check_body_type(request("POST", Content_Type="application/toml"))
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        with pytest.raises(webauth.Refused) as refused:
            webauth.check_body_type(request("POST", Content_Type=kind))
        assert refused.value.status == 415


def test_credentials_found_and_masked():
    assert webauth.presented_credential(request(Authorization="Bearer abc"), 8585) == ("abc", "header")
    assert webauth.presented_credential(request(Authorization="token abc"), 8585) == ("abc", "header")
    assert webauth.presented_credential(request(uri="/ws?api_key=k"), 8585) == ("k", "query")
    assert webauth.presented_credential(request(Cookie="dtf-token-8585=c"), 8585) == ("c", "cookie")
    assert webauth.presented_credential(request(Cookie="dtf-token-9999=c"), 8585) == (None, "none")
    assert webauth.matches("abc", "abc") and not webauth.matches("abd", "abc") and not webauth.matches(None, "abc")
    masked = webauth.redact_uri("/api/x?token=SECRET&limit=5&api_key=K2&Token=T3")
    assert "SECRET" not in masked and "K2" not in masked and "T3" not in masked and "limit=5" in masked
    assert webauth.redact_uri("/a\n\x1b[31m") == "/a\\n\\x1b[31m"
