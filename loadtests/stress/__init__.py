"""Stress measurements: overload, event-loop stalls and long soaks against a real server."""
