"""Health: check identity, rise/fall, weights, quorum and the panic guard (pure)."""
