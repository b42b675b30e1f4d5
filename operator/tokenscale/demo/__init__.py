"""`tokenscale demo`: emulator, real Prometheus, a simulated vLLM fleet and the operator, live.

- :mod:`.main`: the command (orchestration, main loop, final summary).
- :mod:`.stack`: starting and stopping the components, port checks.
- :mod:`.workloads`: which trace drives which workload; demand curves.
- :mod:`.budgets`: the sample TokenBudgets adapted to compressed time.
- :mod:`.record`: samples and the JSON summary; :mod:`.view`: the terminal; :mod:`.plot`: PNG.
"""
