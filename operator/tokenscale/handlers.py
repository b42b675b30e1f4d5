"""kopf handlers: thin glue between kopf's watch of TokenBudgets and the :class:`Reconciler`.

Only a watch-event handler is registered. It needs neither finalizers nor kopf's progress
annotations, so the operator never blocks a deletion and writes nothing but status, Events
and the workloads' replicas (deleting a TokenBudget leaves the replicas where they are).
A spec change is validated at once (SpecValid, phase Invalid on errors); planning happens in
the reconciler's shared cycle loop every ``planning.intervalSeconds``.
"""

from __future__ import annotations

from typing import Any

import kopf

from tokenscale import api
from tokenscale.reconcile import Reconciler


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    """Register the TokenBudget handlers (and the API login) on ``registry``."""

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """Credentials as the kubernetes client finds them (in-cluster, else kubeconfig)."""
        info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
        return info

    @kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, registry=registry)
    async def tokenbudget_event(
        *, type: str | None, body: kopf.Body, namespace: str | None, **_: Any
    ) -> None:
        if not reconciler.serves(namespace or ""):
            return  # another shard's: not even copied
        entry = reconciler.on_event(type, _plain(body))
        if entry is not None and entry.spec is None:
            await reconciler.report_invalid(entry)


def _plain(body: kopf.Body) -> dict[str, Any]:
    """A plain dict copy of kopf's body view."""
    return {key: _copy(value) for key, value in body.items()}


def _copy(value: Any) -> Any:
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
