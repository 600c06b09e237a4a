"""Command-line tools: the `trm-sre` CLI, offline policy validation, and the generated references."""

#: The console script's name, as messages show it.
PROG = "trm-sre"
