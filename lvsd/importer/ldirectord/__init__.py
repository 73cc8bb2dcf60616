"""``lvsd import ldirectord``: :mod:`.parse` reads ldirectord.cf into settings and
virtual blocks, :mod:`.convert` maps them onto an lvsd config, :mod:`.checks` writes
the checks."""
