"""The trm-sre benchmark harness (`make bench`, `python -m bench`): a development tool, not installed.

Sections, each run in its own child process so one section's state
(torch threads, imported modules, RSS) never colours another's numbers:

- `selection`: cost and accuracy of every way the chain picks a function;
- `e2e`: the controller as a real process under an open-loop HTTP load;
- `peers`: the same load against the floor of this stack (`bench/floor.py`)
  and against prometheus-am-executor running `curl` per alert;
- `saturation`: 50 to 1,000 alerts/s against trm-sre and the floor;
- `scale`: how cost grows with policies, catalog size, labels, batch size;
- `coldstart`: process start to /readyz, operator start to first policy indexed;
- `runtimes`: the TRM and the controller on ONNX Runtime and on torch;
- `profile`: where the time goes at 100 alerts/s;
- `tracing`, `replicas`: tracing on vs off; PostgreSQL with 1-3 replicas.

Every section reports medians and p99 next to a baseline measured in the same
run (these machines are shared and noisy), and `bench.report` turns the JSON
into BENCHMARKS.md. Nothing here asserts on times: the smoke test checks shape.
"""
