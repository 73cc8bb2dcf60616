"""Health probes, one module per kind, and the scheduler that runs them."""
