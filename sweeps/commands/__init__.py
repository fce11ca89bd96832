"""Handlers of the CLI commands, one module per group: sweep (run, resume), inspect (status, report,
presets), train (classifier, generator), data (build)."""
