"""The test stack: a Kubernetes API emulator, a real Prometheus runner and a simulated vLLM fleet.

Used by the integration and end-to-end tests, the demo and the operator scale benchmark.
"""
