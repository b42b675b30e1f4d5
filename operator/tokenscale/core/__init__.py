"""Pure decision logic: no kopf, kubernetes, HTTP, clock or environment access."""
