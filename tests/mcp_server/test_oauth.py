"""Sign-in through an identity provider (``NANO_BANANA_OAUTH_ISSUER``): JWT access tokens verified against the keys
the issuer publishes. The tests make RSA and EC key pairs, publish the issuer's metadata and JWKS on loopback
(``http.server`` in a thread), serve the real HTTP app with uvicorn in a thread, and send tokens they sign."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.mcp_server import http_app, oauth
from nano_banana_mcp.mcp_server.http import http_auth
from nano_banana_mcp.mcp_server.oauth import JwtVerifier, OAuthConfig

if TYPE_CHECKING:
    from tests.conftest import Hello, MakeSettings
    from tests.mcp_server.conftest import ServeHttp

pytestmark = pytest.mark.anyio

AUDIENCE = "https://nano-banana.example/mcp"
UNKNOWN = "task_nope0000000000"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class IdP:
    """An identity provider on loopback: its issuer URL, its signing keys (RSA ``rsa-1``, EC ``ec-1``), and how
    often its JWKS was fetched."""

    issuer: str
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    jwks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    jwks_fetches: list[float] = field(default_factory=list)
    trickle: float = 0.0
    """Seconds between the bytes of the JWKS (0: sent at once), as a stalling identity provider would."""
    jwks_asked: threading.Event = field(default_factory=threading.Event)

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.issuer, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300} | changes

    def token(self, alg: str = "RS256", kid: str | None = None, **changes: Any) -> str:
        key: Any = self.rsa_key if alg == "RS256" else self.ec_key
        kid = kid or ("rsa-1" if alg == "RS256" else "ec-1")
        return jwt.encode(self.claims(**changes), key, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module")
def idp() -> Iterator[IdP]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True) | {"kid": "rsa-1", "alg": "RS256", "use": "sig"},
            ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True) | {"kid": "ec-1", "use": "sig"},
        ]
    }
    state: dict[str, IdP] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            provider = state["idp"]
            if self.path == "/.well-known/openid-configuration":
                body: dict[str, Any] = {"issuer": provider.issuer, "jwks_uri": f"{provider.issuer}/keys"}
            elif self.path == "/keys":
                provider.jwks_fetches.append(time.monotonic())
                body = provider.jwks
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.path == "/keys" and provider.trickle:
                provider.jwks_asked.set()
                for index in range(len(data)):  # until the client gives up (its socket closes)
                    try:
                        self.wfile.write(data[index : index + 1])
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(provider.trickle)
                return
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["idp"] = IdP(f"http://127.0.0.1:{server.server_address[1]}", rsa_key, ec_key, jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["idp"]
    server.shutdown()
    thread.join(10)


@dataclass
class Served:
    base: str
    settings: Settings


def _oauth_settings(settings: Settings, issuer: str, **more: Any) -> Settings:
    return settings.model_copy(update={"oauth_issuer": issuer, "oauth_audience": AUDIENCE} | more)


@pytest.fixture(scope="module")
def served(
    idp: IdP,
    tmp_path_factory: pytest.TempPathFactory,
    make_settings: MakeSettings,
    emulator_server: Emulator,
    serve_http: ServeHttp,
) -> Iterator[Served]:
    settings = _oauth_settings(make_settings(emulator_server.base_url, tmp_path_factory.mktemp("oauth")), idp.issuer)
    with serve_http(settings) as base:
        yield Served(base, settings)


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


@asynccontextmanager
async def connect(served: Served, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        Client(streamable_http_client(f"{served.base}/mcp", http_client=http), read_timeout_seconds=30) as client,
    ):
        yield client


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_signed_in_subjects_generate_and_are_two_tenants(served: Served, idp: IdP) -> None:
    """An RS256 token (alice) and an ES256 token (bob) each list the tools and generate; each subject is its own
    tenant: bob's get_task of alice's task answers as for an id nobody made."""
    async with connect(served, idp.token(sub="alice")) as alice, connect(served, idp.token("ES256", sub="bob")) as bob:
        assert "generate_image" in {tool.name for tool in (await alice.list_tools()).tools}
        made = await alice.call_tool("generate_image", {"prompt": "alice's secret"})
        assert not made.is_error, _text(made)
        task_id = made.structured_content["task_id"]
        assert not (await alice.call_tool("get_task", {"task_id": task_id})).is_error
        theirs = await bob.call_tool("get_task", {"task_id": task_id})
        unknown = await bob.call_tool("get_task", {"task_id": UNKNOWN})
        assert theirs.is_error and unknown.is_error
        assert _text(theirs).replace(task_id, "<id>") == _text(unknown).replace(UNKNOWN, "<id>")
        own = await bob.call_tool("generate_image", {"prompt": "bob's"})
        assert not own.is_error, _text(own)
        assert (await alice.call_tool("get_task", {"task_id": own.structured_content["task_id"]})).is_error


def _tampered(token: str) -> str:
    """The token with its payload's subject changed and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join((header, _b64(json.dumps(claims | {"sub": "mallory"}).encode()), signature))


def _unsigned(idp: IdP) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    return f"{header}.{_b64(json.dumps(idp.claims()).encode())}."


def _hs256_with_public_key(idp: IdP) -> str:
    """The classic confusion: an HMAC token keyed with the RSA public key (PEM), which anyone can fetch."""
    pem = idp.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = ".".join(
        (
            _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode()),
            _b64(json.dumps(idp.claims()).encode()),
        )
    )
    return f"{signing_input}.{_b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"


def _other_key(idp: IdP) -> str:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(idp.claims(), stranger, algorithm="RS256", headers={"kid": "rsa-2"})


def _forged_known_kid(idp: IdP) -> str:
    stranger = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(idp.claims(), stranger, algorithm="ES256", headers={"kid": "ec-1"})


BAD_TOKENS: dict[str, Callable[[IdP], str]] = {
    "expired": lambda idp: idp.token(exp=int(time.time()) - 120),
    "not yet valid": lambda idp: idp.token(nbf=int(time.time()) + 120),
    "no expiry": lambda idp: jwt.encode(
        {k: v for k, v in idp.claims().items() if k != "exp"}, idp.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}
    ),
    "wrong audience": lambda idp: idp.token(aud="https://another.example/mcp"),
    "wrong issuer": lambda idp: idp.token(iss="https://evil.example"),
    "tampered": lambda idp: _tampered(idp.token()),
    "alg none": _unsigned,
    "HS256 keyed with the public key": _hs256_with_public_key,
    "unknown kid": _other_key,
    "known kid, other key": _forged_known_kid,
    "RS256 under the EC key's kid": lambda idp: idp.token(kid="ec-1"),
    "no subject": lambda idp: jwt.encode(
        {k: v for k, v in idp.claims().items() if k != "sub"}, idp.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}
    ),
    "not a JWT": lambda idp: "not-a-jwt",
}


REASONS = {
    "expired": "expired",
    "not yet valid": "not yet valid",
    "no expiry": "exp",
    "wrong audience": "audience",
    "wrong issuer": "issuer",
    "tampered": "signature",
    "alg none": "algorithm 'none'",
    "HS256 keyed with the public key": "algorithm 'HS256'",
    "unknown kid": "no published key",
    "known kid, other key": "signature",
    "RS256 under the EC key's kid": "for ES256, not RS256",
    "no subject": "'sub'",
    "not a JWT": "segments|decode|header",
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_tokens_get_a_plain_401(
    served: Served, idp: IdP, case: str, caplog: pytest.LogCaptureFixture, hello: Hello
) -> None:
    """Each is refused for its own reason, named in the server's debug log only; the token is never logged."""
    assert hello(served.base, auth(idp.token())).status_code == 200  # the keys are fetched; the good token passes
    token = BAD_TOKENS[case](idp)
    with caplog.at_level(logging.DEBUG, logger="nano_banana_mcp.mcp_server.oauth"):
        response = hello(served.base, auth(token))
    assert response.status_code == 401
    assert "mallory" not in response.text and "expired" not in response.text.lower()
    [reason] = [r.getMessage() for r in caplog.records if r.name == "nano_banana_mcp.mcp_server.oauth"]
    assert token not in reason and all(part not in reason for part in token.split(".") if part)
    assert re.search(REASONS[case], reason, re.IGNORECASE), reason


@pytest.mark.parametrize(
    "subject", ["default", "DEFAULT", "bob\x00x", "alice\x1b[2J", "line\nbreak", "rtl\u202eflip", "\t"]
)
def test_a_reserved_or_unprintable_tenant_claim_gets_a_plain_401(
    served: Served, idp: IdP, subject: str, caplog: pytest.LogCaptureFixture, hello: Hello
) -> None:
    """A validly signed token whose tenant claim is ``default`` (the tenant of stdio, the CLI and a single token: it
    would list and read what they made), or holds control characters (``bob\\0x`` would share bob's keys), is
    refused: it never names a tenant. The reason is in the debug log only."""
    assert hello(served.base, auth(idp.token(sub="alice"))).status_code == 200
    with caplog.at_level(logging.DEBUG, logger="nano_banana_mcp.mcp_server.oauth"):
        response = hello(served.base, auth(idp.token(sub=subject)))
    assert response.status_code == 401
    [reason] = [r.getMessage() for r in caplog.records if r.name == "nano_banana_mcp.mcp_server.oauth"]
    assert "'sub'" in reason and "tenant" in reason


def test_unknown_kids_fetch_the_keys_at_most_once_a_minute(served: Served, idp: IdP, hello: Hello) -> None:
    assert hello(served.base, auth(idp.token())).status_code == 200
    before = len(idp.jwks_fetches)
    for _ in range(5):
        assert hello(served.base, auth(_other_key(idp))).status_code == 401
    assert len(idp.jwks_fetches) - before <= 1


def test_protected_resource_metadata_names_the_issuer(served: Served, idp: IdP, hello: Hello) -> None:
    """A client without a token is pointed to the metadata, which names this resource and the issuer to sign in at."""
    response = hello(served.base, auth(None))
    assert response.status_code == 401
    [metadata_url] = re.findall(r'resource_metadata="([^"]+)"', response.headers["www-authenticate"])
    metadata = httpx.get(metadata_url, timeout=10).json()
    assert metadata["resource"] == f"{served.base}/mcp"
    assert [url.rstrip("/") for url in metadata["authorization_servers"]] == [idp.issuer]


def _settings(make_settings: MakeSettings, tmp_path: Path, **values: Any) -> Settings:
    return make_settings("http://127.0.0.1:9", tmp_path).model_copy(update=values)


@pytest.mark.parametrize(
    ("values", "no_auth", "named"),
    [
        ({"oauth_issuer": "https://id.example"}, False, "NANO_BANANA_OAUTH_AUDIENCE"),
        ({"oauth_audience": AUDIENCE}, False, "NANO_BANANA_OAUTH_ISSUER"),
        ({"oauth_issuer": "http://id.example", "oauth_audience": AUDIENCE}, False, "https://"),
        ({"oauth_issuer": "id.example", "oauth_audience": AUDIENCE}, False, "https://"),
        ({"oauth_issuer": "https://id.example", "oauth_audience": AUDIENCE}, True, "--no-auth"),
        (
            {"oauth_issuer": "https://id.example", "oauth_audience": AUDIENCE, "http_token": SecretStr("x" * 20)},
            False,
            "NANO_BANANA_HTTP_TOKEN /",
        ),
        (
            {"oauth_issuer": "https://id.example", "oauth_audience": AUDIENCE, "http_tokens_file": Path("/t")},
            False,
            "NANO_BANANA_HTTP_TOKENS_FILE",
        ),
        (
            {"oauth_issuer": "https://id.example", "oauth_audience": AUDIENCE, "http_token_file": Path("/t")},
            False,
            "NANO_BANANA_HTTP_TOKEN_FILE",
        ),
    ],
)
def test_misconfigured_identity_provider_is_refused(
    make_settings: MakeSettings, tmp_path: Path, values: dict[str, Any], no_auth: bool, named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        http_auth(_settings(make_settings, tmp_path, **values), "127.0.0.1", no_auth=no_auth)


def test_issuer_settings_are_taken(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = _settings(
        make_settings, tmp_path, oauth_issuer="https://id.example/", oauth_audience="api", oauth_tenant_claim="email"
    )
    auth = http_auth(settings, "0.0.0.0")
    assert auth.required and auth.oauth is not None
    assert (auth.oauth.issuer, auth.oauth.audience, auth.oauth.tenant_claim) == ("https://id.example/", "api", "email")
    assert "https://id.example/" in auth.start_message("http://0.0.0.0:8000/mcp")


async def test_a_new_key_is_fetched_once_the_minute_is_over(idp: IdP, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token signed with a key the issuer publishes later: refused while the keys were fetched under a minute ago
    (however many such tokens come), accepted after; the configured claim is the tenant."""
    clock = [1000.0]
    monkeypatch.setattr(oauth, "_now", lambda: clock[0])
    verifier = JwtVerifier(OAuthConfig(idp.issuer, AUDIENCE, tenant_claim="email"))
    good = await verifier.verify_token(idp.token(email="alice@example.com"))
    assert good is not None and good.subject == "alice@example.com" and good.token == "<bearer>"
    assert good.claims == {"iss": idp.issuer}
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rotated = jwt.encode(idp.claims(email="bob@example.com"), new_key, algorithm="RS256", headers={"kid": "rsa-new"})
    fetches = len(idp.jwks_fetches)
    old_keys = idp.jwks["keys"]
    idp.jwks = {"keys": [*old_keys, RSAAlgorithm.to_jwk(new_key.public_key(), as_dict=True) | {"kid": "rsa-new"}]}
    try:
        clock[0] += 30
        assert await verifier.verify_token(rotated) is None
        assert await verifier.verify_token(rotated) is None
        assert len(idp.jwks_fetches) == fetches  # fetched at 1000: not again before 1060
        clock[0] += 31
        accepted = await verifier.verify_token(rotated)
        assert accepted is not None and accepted.subject == "bob@example.com"
        assert len(idp.jwks_fetches) == fetches + 1
        assert await verifier.verify_token(idp.token(sub="x")) is None  # no email claim: no tenant
    finally:
        idp.jwks = {"keys": old_keys}


def test_public_url_is_the_resource_the_metadata_names(idp: IdP, make_settings: MakeSettings, tmp_path: Path) -> None:
    """Behind a proxy, the metadata names the URL clients use (NANO_BANANA_PUBLIC_URL), not the address bound."""
    from starlette.testclient import TestClient  # noqa: PLC0415

    settings = _oauth_settings(_settings(make_settings, tmp_path), idp.issuer, public_url="https://mcp.example.com/")
    app = http_app(settings, "0.0.0.0", 8000)
    metadata = TestClient(app).get("/.well-known/oauth-protected-resource/mcp").json()
    assert metadata["resource"] == "https://mcp.example.com/mcp"
    assert [url.rstrip("/") for url in metadata["authorization_servers"]] == [idp.issuer]
    with pytest.raises(ConfigError, match="NANO_BANANA_PUBLIC_URL"):
        http_app(settings.model_copy(update={"public_url": "https://mcp.example.com/mcp"}), "0.0.0.0", 8000)


def test_a_stalling_key_set_has_a_deadline_and_other_sign_ins_do_not_wait_for_it(
    idp: IdP,
    tmp_path: Path,
    make_settings: MakeSettings,
    emulator_server: Emulator,
    serve_http: ServeHttp,
    hello: Hello,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issuer sends its JWKS one byte a second (httpx's per-read timeout never fires). The sign-in that fetches it
    is refused once the fetch's total deadline (10 s; 3 s here, so the test does not sit through it) is over, not
    after the whole document; sign-ins arriving while it is under way are refused at once instead of queueing behind
    it; then, within the retry interval, no new fetch is made."""
    assert oauth.FETCH_SECONDS <= 10
    monkeypatch.setattr(oauth, "FETCH_SECONDS", 3.0)
    settings = _oauth_settings(make_settings(emulator_server.base_url, tmp_path), idp.issuer)
    idp.trickle, before = 1.0, len(idp.jwks_fetches)
    idp.jwks_asked.clear()
    try:
        with serve_http(settings) as base, ThreadPoolExecutor(4) as pool:
            started = time.monotonic()
            first = pool.submit(hello, base, auth(idp.token()))
            assert idp.jwks_asked.wait(20), "the keys were never asked for"
            others = [pool.submit(hello, base, auth(idp.token(sub=f"user{i}"))) for i in range(3)]
            assert [other.result(timeout=60).status_code for other in others] == [401] * 3
            assert not first.done()  # they did not wait for the fetch under way
            assert first.result(timeout=60).status_code == 401
            assert time.monotonic() - started < 30  # the deadline, generously (the whole document: ~25 min)
            assert hello(base, auth(idp.token())).status_code == 401  # a failed fetch is not tried again at once
            assert len(idp.jwks_fetches) - before == 1
    finally:
        idp.trickle = 0.0
