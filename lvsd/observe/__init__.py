"""What people and Prometheus read: the status report, metrics, and the HTTP API."""
