"""The ``stackquery`` command line: demo, inspect, invalidate, bench."""
