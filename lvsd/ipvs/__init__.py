"""The kernel IPVS table behind one narrow interface (see ``base.Backend``)."""
