"""lvsd: a health-checking director daemon for Linux IPVS."""

__version__ = "0.1.0"
