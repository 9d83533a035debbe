"""What the tests' own HTTP clients share: one TLS context.

httpx and httpx2 build a new one for every client that is not given one, loading the CA bundle each time (~20 ms of
CPU, hundreds of times a run); the tests' clients speak plain HTTP to loopback, so this one is never used to verify
anything. The product has one of its own per process (``nano_banana_mcp.runtime.tls_context``).
"""

from __future__ import annotations

import ssl

__all__ = ["TLS"]

TLS = ssl.create_default_context()
