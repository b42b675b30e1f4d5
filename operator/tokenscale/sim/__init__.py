"""Workload simulation for backtests and the demo: trace loaders, a simulated cluster, policies.

- :mod:`tokenscale.sim.traces`: ``load_trace(path) -> Trace`` for the Azure CSV, Mooncake JSONL,
  ServeGen aggregate CSV and generic ``timestamp_s,input_tokens,output_tokens`` CSV.
- :mod:`tokenscale.sim.cluster`: replicas with cold starts, per-replica capacity, a FIFO queue,
  metrics as Prometheus would see them, and the SLO/cost accounting.
- :mod:`tokenscale.sim.policies`: hpa (sweepable), static, tokenscale (the operator's planner).
- :mod:`tokenscale.sim.oracle`: the offline reference with perfect foresight.
- :mod:`tokenscale.sim.engine`: runs all policies over one set of traces.
"""
