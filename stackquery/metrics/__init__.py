"""Metrics collectors: in memory, Prometheus, OpenTelemetry.  Public names are
re-exported by :mod:`stackquery`."""
