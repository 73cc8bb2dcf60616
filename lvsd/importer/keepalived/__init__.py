"""``lvsd import keepalived``: :mod:`.parse` reads keepalived.conf into nodes,
:mod:`.convert` maps them onto an lvsd config."""
