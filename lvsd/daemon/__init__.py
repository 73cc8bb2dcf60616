"""``lvsd run``: the only owner of the event loop; wires checks, engine, kernel and observe."""
