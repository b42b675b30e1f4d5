"""`tokenscale demo`: emulator, real Prometheus, a simulated vLLM fleet and the operator, live.

- :mod:`.main`: the command (a short orchestration of the steps below).
- :mod:`.session`: settings from the command line, output, stop signal.
- :mod:`.plan`: the adapted budgets, the workloads and their sizes, the notes.
- :mod:`.start`: starting the components, applying the budgets.
- :mod:`.live`: the live loop (sampling, redrawing, period rollover).
- :mod:`.finish`: outcome, stopping, the printed summary, PNG and JSON.
- :mod:`.stack`: starting and stopping the components, port checks.
- :mod:`.workloads`: which trace drives which workload; demand curves.
- :mod:`.budgets`: the sample TokenBudgets adapted to compressed time.
- :mod:`.record`: samples and the JSON summary; :mod:`.view`: the terminal; :mod:`.plot`: PNG.
"""
