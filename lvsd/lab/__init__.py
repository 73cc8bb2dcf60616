"""The user-mode-Linux lab: a real Linux 6.1 kernel with IPVS, booted as a process.

``lvsd.lab.harness.run`` boots it once and runs a scenario; ``lvsd.lab.topology``
builds network namespaces inside it; ``python -m lvsd.lab demo`` shows lvsd at work.
This package imports nothing heavy, so ``python -m lvsd.lab.httpd`` starts fast in
the guest.
"""
