"""I/O adapters: Prometheus and Kubernetes."""
