"""tokenscale: a Kubernetes operator that keeps LLM inference spending inside a budget."""

__version__ = "0.1.0"
