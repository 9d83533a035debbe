"""Sign-in through the team's identity provider: JWT access tokens verified against the issuer's published keys.

``NANO_BANANA_OAUTH_ISSUER`` (with ``NANO_BANANA_OAUTH_AUDIENCE``) makes this server an OAuth 2.1 resource server,
as the MCP authorization spec has it: the SDK serves the protected-resource metadata that names the issuer, and
every request's bearer token must be a JWT that issuer signed (RS256 or ES256, with a key from its ``jwks_uri``),
for this audience, unexpired. The tenant is the token's ``sub`` (or ``NANO_BANANA_OAUTH_TENANT_CLAIM``); a token
whose tenant would be ``default`` (stdio's and the CLI's), empty, or hold control characters is refused.

The keys are found through the issuer's metadata (``/.well-known/openid-configuration``, else
``/.well-known/oauth-authorization-server``) and cached; a token signed with a key not in the cache fetches them
again, at most once a minute. One fetch runs at a time, within :data:`FETCH_SECONDS` in all (an issuer that trickles
its keys cannot hold a sign-in longer); a sign-in that needs keys while another fetches them waits at most
:data:`JOIN_SECONDS` for it, then is refused, so a slow issuer never queues every sign-in behind it. Why a token was
refused is logged at debug level only; the client gets a plain 401, and no token is ever logged.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import httpx
from mcp.server.auth.provider import AccessToken, TokenVerifier

from nano_banana_mcp.config import Settings, is_loopback
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.mcp_server.tokens import reserved_tenant

if TYPE_CHECKING:
    from jwt import PyJWK

__all__ = ["ALGORITHMS", "ISSUER_SETTING", "JwtVerifier", "OAuthConfig", "oauth_config"]

log = logging.getLogger(__name__)

ISSUER_SETTING = "NANO_BANANA_OAUTH_ISSUER"
_AUDIENCE_SETTING = "NANO_BANANA_OAUTH_AUDIENCE"
_CLAIM_SETTING = "NANO_BANANA_OAUTH_TENANT_CLAIM"
ALGORITHMS = ("RS256", "ES256")
"""The only signatures accepted: never ``none``, never HMAC (whose secret a public key could stand in for)."""
_KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}
LEEWAY_SECONDS = 30
REFRESH_SECONDS = 60.0
"""At most one fetch of the keys a minute for a token naming an unknown key."""
MAX_KEY_AGE_SECONDS = 3600.0
"""Keys older than this are fetched again (a removed key stops working within the hour)."""
FETCH_SECONDS = 10.0
"""The whole fetch of the keys (discovery and key set, every byte), however slowly the issuer sends them."""
JOIN_SECONDS = 1.0
"""How long a sign-in waits for a fetch another sign-in started (a normal one takes milliseconds)."""
_RETRY_SECONDS = 10.0
_MAX_DOCUMENT_BYTES = 512 * 1024
_TIMEOUT = 10.0
_MAX_TENANT_CHARS = 255
_now = time.monotonic


@dataclass(frozen=True)
class OAuthConfig:
    """Which issuer's tokens are accepted, for which audience, and the claim naming the tenant."""

    issuer: str
    audience: str
    tenant_claim: str = "sub"


def _url_allowed(url: str) -> bool:
    """https, or http to this machine only (a test's identity provider)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname))


def oauth_config(settings: Settings) -> OAuthConfig | None:
    """The identity provider settings, checked; None when ``NANO_BANANA_OAUTH_ISSUER`` is not set."""
    issuer = (settings.oauth_issuer or "").strip()
    audience = (settings.oauth_audience or "").strip()
    if not issuer:
        if audience:
            raise ConfigError(f"{_AUDIENCE_SETTING} is set without {ISSUER_SETTING}: set both, or neither.")
        return None
    if not _url_allowed(issuer) or urlsplit(issuer).query or urlsplit(issuer).fragment:
        raise ConfigError(
            f"{ISSUER_SETTING} must be the identity provider's https:// issuer URL, without query or fragment "
            "(for example https://login.example.com/realms/team); http:// is accepted on loopback only."
        )
    if not audience:
        raise ConfigError(
            f"{ISSUER_SETTING} is set without {_AUDIENCE_SETTING}: set the audience your identity provider puts in "
            "this server's access tokens (often this server's URL), so tokens issued for other services are refused."
        )
    claim = (settings.oauth_tenant_claim or "").strip() or "sub"
    _jwt()  # the library is there, or say how to install it now rather than at the first request
    return OAuthConfig(issuer=issuer, audience=audience, tenant_claim=claim)


def _jwt() -> Any:
    try:
        import jwt  # noqa: PLC0415 - only a team server that signs in through an identity provider needs it
        from jwt.algorithms import has_crypto  # noqa: PLC0415
    except ImportError as err:
        raise ConfigError(
            f"{ISSUER_SETTING} needs PyJWT with its crypto support: install nano-banana-mcp[team] "
            "(or `pip install 'pyjwt[crypto]'`)."
        ) from err
    if not has_crypto:
        raise ConfigError(f"{ISSUER_SETTING} needs PyJWT's crypto support: `pip install 'pyjwt[crypto]'`.")
    return jwt


class _Refused(Exception):
    """Why a token is refused: logged at debug level, never shown to the client."""


class JwtVerifier(TokenVerifier):
    """Verifies JWT access tokens against the issuer's published keys; the tenant is the configured claim."""

    def __init__(self, config: OAuthConfig) -> None:
        self.config = config
        self._jwt = _jwt()
        self._keys: dict[str | None, PyJWK] = {}
        self._jwks_uri: str | None = None
        self._fetched_at = float("-inf")
        self._next_fetch = float("-inf")
        self._fetching: anyio.Event | None = None  # set when the fetch under way ends

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            return await self._verify(token)
        except _Refused as why:
            log.debug("Refused an OAuth access token: %s", why)
        except self._jwt.PyJWTError as err:  # expired, wrong audience or issuer, bad signature, malformed
            log.debug("Refused an OAuth access token: %s (%s)", err, type(err).__name__)
        return None

    async def _verify(self, token: str) -> AccessToken:
        jwt = self._jwt
        header = jwt.get_unverified_header(token)
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise _Refused(f"algorithm {str(alg)[:20]!r} is not one of {', '.join(ALGORITHMS)}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _Refused("the key id is not a string")
        key = await self._key(kid)
        if key is None:
            raise _Refused("no published key has this token's key id")
        if key.key_type != _KEY_TYPES[alg] or key.algorithm_name != alg:
            raise _Refused(f"the key named by the token is for {key.algorithm_name}, not {alg}")
        claims = jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            audience=self.config.audience,
            issuer=self.config.issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "aud"], "verify_signature": True},
        )
        tenant = claims.get(self.config.tenant_claim)
        if not isinstance(tenant, str) or len(tenant) > _MAX_TENANT_CHARS:
            raise _Refused(f"the claim {self.config.tenant_claim!r} naming the tenant is missing or not a short string")
        if (reserved := reserved_tenant(tenant)) is not None:  # never the CLI's tenant, never a look-alike
            raise _Refused(f"the claim {self.config.tenant_claim!r} names {reserved}, which no token may be")
        scope = claims.get("scope")
        exp = claims.get("exp")
        return AccessToken(
            token="<bearer>",  # noqa: S106 - the token itself is not kept
            client_id=str(claims.get("client_id") or claims.get("azp") or "nano-banana-oauth"),
            scopes=scope.split() if isinstance(scope, str) else [],
            expires_at=int(exp) if isinstance(exp, int | float) else None,
            subject=tenant,
            claims={"iss": self.config.issuer},
        )

    async def _key(self, kid: str | None) -> PyJWK | None:
        """The published key ``kid`` names, fetching the keys when it is unknown (at most once a minute, one fetch at
        a time, within :data:`FETCH_SECONDS`)."""
        if self._usable(kid) and _now() - self._fetched_at < MAX_KEY_AGE_SECONDS:
            return self._find(kid)
        fetching = self._fetching
        if fetching is not None:  # another sign-in fetches them: wait a moment for it, never in a queue behind it
            if not self._usable(kid):
                with anyio.move_on_after(JOIN_SECONDS):
                    await fetching.wait()
            return self._find(kid)
        now = _now()
        stale = now - self._fetched_at >= MAX_KEY_AGE_SECONDS
        if (stale or not self._usable(kid)) and now >= self._next_fetch:
            self._fetching = done = anyio.Event()
            try:
                with anyio.fail_after(FETCH_SECONDS):
                    await self._fetch()
            except (_Refused, httpx.HTTPError, ValueError, TimeoutError) as err:
                reason = err if str(err) else f"not fetched within {FETCH_SECONDS:g} s"
                log.warning("Cannot fetch the signing keys of %s: %s", self.config.issuer, reason)
                self._next_fetch = _now() + _RETRY_SECONDS
            else:
                self._fetched_at = _now()
                self._next_fetch = self._fetched_at + REFRESH_SECONDS
            finally:
                self._fetching = None
                done.set()
        return self._find(kid)

    def _usable(self, kid: str | None) -> bool:
        return self._find(kid) is not None

    def _find(self, kid: str | None) -> PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None  # no key id: only one key fits

    async def _fetch(self) -> None:
        async with httpx.AsyncClient(timeout=_TIMEOUT, follow_redirects=False) as http:
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover(http)
            data = await _get_json(http, self._jwks_uri)
        keys: dict[str | None, PyJWK] = {}
        for item in data.get("keys") or [] if isinstance(data, dict) else []:
            if not isinstance(item, dict) or item.get("use", "sig") != "sig":
                continue
            try:
                key = self._jwt.PyJWK.from_dict(item)
            except self._jwt.PyJWTError:
                continue  # a key of a type this server does not use
            if key.algorithm_name in ALGORITHMS:
                keys[key.key_id] = key
        if not keys:
            raise _Refused(f"{self._jwks_uri} holds no RS256 or ES256 signing key")
        self._keys = keys
        log.info("Fetched %d signing key(s) of %s", len(keys), self.config.issuer)

    async def _discover(self, http: httpx.AsyncClient) -> str:
        """The issuer's ``jwks_uri``, from its OpenID or OAuth authorization server metadata."""
        issuer = self.config.issuer
        parts = urlsplit(issuer.rstrip("/"))
        origin = f"{parts.scheme}://{parts.netloc}"
        candidates = (
            f"{issuer.rstrip('/')}/.well-known/openid-configuration",
            f"{origin}/.well-known/oauth-authorization-server{parts.path}",  # RFC 8414: before the issuer's path
        )
        failures = []
        for url in candidates:
            try:
                meta = await _get_json(http, url)
            except (httpx.HTTPError, ValueError) as err:
                failures.append(f"{url}: {err}")
                continue
            named = meta.get("issuer") if isinstance(meta, dict) else None
            if named != issuer:  # RFC 8414: exactly the configured issuer, or the document is another's
                failures.append(f"{url}: names the issuer {str(named)[:200]!r}, not {issuer!r}")
                continue
            jwks_uri = meta.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not _url_allowed(jwks_uri):
                failures.append(f"{url}: no https jwks_uri")
                continue
            return jwks_uri
        raise _Refused("; ".join(failures))


async def _get_json(http: httpx.AsyncClient, url: str) -> Any:
    async with http.stream("GET", url, headers={"Accept": "application/json"}) as response:
        response.raise_for_status()
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > _MAX_DOCUMENT_BYTES:
                raise ValueError(f"over {_MAX_DOCUMENT_BYTES // 1024} KB")
    return json.loads(body)
