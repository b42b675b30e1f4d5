"""Which Prometheus base URLs a TokenBudget may make the operator read.

A TokenBudget is written by whoever may create one in a namespace, while the operator queries
from its own network position. ``spec.prometheus.url`` is therefore checked against an
operator-level allowlist (``TOKENSCALE_PROMETHEUS_ALLOWED_URLS``) before any request is made:
the operator's own ``TOKENSCALE_PROMETHEUS_URL`` is always allowed, and so is each entry of
the list, compared in canonical form (:func:`canonical`). An entry ending in ``/*`` allows
every path below it (``http://thanos.monitoring:9090/tenants/*``), ``*`` allows any URL
(the unsafe behaviour of releases before the allowlist).

The URL that is queried is the canonical one, so what is requested is exactly what was
compared: no userinfo, query, fragment, backslash, whitespace or dot segment can make the
HTTP client reach another host or path than the one the check saw.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

#: The setting that holds the allowlist (named in the refusal a TokenBudget gets).
SETTING = "TOKENSCALE_PROMETHEUS_ALLOWED_URLS"
#: An entry that allows every URL.
ANY = "*"
_FORBIDDEN_CHARS = set("@?#\\%") | {chr(c) for c in range(0x21)} | {chr(0x7F)}


def canonical(url: str) -> str | None:
    """``scheme://host:port/path`` (lower-case scheme and host, explicit port, no trailing
    slash) of a plain http(s) base URL; None when ``url`` is anything else (userinfo, query,
    fragment, percent-encoding, a backslash, whitespace, a ``.``/``..`` segment, no host)."""
    if not url or any(c in _FORBIDDEN_CHARS or ord(c) > 0x7E for c in url):
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return None
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:
        return None
    if not host or parts.netloc.endswith(":"):
        return None
    path = parts.path.rstrip("/")
    if any(unquote(seg) in (".", "..") or not seg for seg in path.split("/")[1:]):
        return None  # dot segments (the client would resolve them) and empty ones
    hostpart = f"[{host}]" if ":" in host else host
    return f"{scheme}://{hostpart}:{port or (443 if scheme == 'https' else 80)}{path}"


def parse_entry(entry: str) -> str:
    """The canonical form of one allowlist entry (``*``, a base URL, or a base URL followed
    by ``/*``); raises ValueError for anything else."""
    entry = entry.strip()
    if entry == ANY:
        return ANY
    prefix = entry.endswith("/*")
    base = canonical(entry[:-2] if prefix else entry)
    if base is None:
        raise ValueError(f"not an http(s) base URL (optionally ending in /*) nor '*': {entry!r}")
    return f"{base}/*" if prefix else base


class PrometheusAllowlist:
    """The operator's own Prometheus plus the allowlist entries (see the module docstring)."""

    def __init__(self, default_url: str, entries: Iterable[str] = ()):
        default = canonical(default_url)
        if default is None:
            raise ValueError(f"not an http(s) base URL: {default_url!r}")
        self.default = default
        self.entries = [default, *(parse_entry(e) for e in entries)]
        self._exact = {e for e in self.entries if not e.endswith("*")}
        self._prefixes = [e[:-2] for e in self.entries if e.endswith("/*")]
        self._any = ANY in self.entries

    def resolve(self, url: str | None) -> str | None:
        """The canonical URL to query for a budget's ``spec.prometheus.url`` (None or empty:
        the operator's own), or None when it is not allowed."""
        if not url:
            return self.default
        wanted = canonical(url)
        if wanted is None:
            return None
        if self._any or wanted in self._exact:
            return wanted
        if any(wanted == p or wanted.startswith(p + "/") for p in self._prefixes):
            return wanted
        return None

    def problem(self, url: str | None) -> str | None:
        """The SpecValid=False message for a URL that is not allowed, else None. Names the
        setting and the allowed URLs, quotes only what the TokenBudget's author wrote."""
        if self.resolve(url) is not None:
            return None
        allowed = ", ".join(self.entries)
        if len(allowed) > 1000:
            allowed = allowed[:1000] + "..."
        return (f"spec.prometheus.url: {str(url)[:200]!r} is not a Prometheus this operator "
                f"may query ({SETTING}: {allowed}); no request was made to it")
