"""The user-mode-Linux lab: a real Linux 6.1 kernel with IPVS, booted as a process.

``lab.harness.run`` boots it once and runs a scenario; ``lab.topology``
builds network namespaces inside it; ``python -m lab demo`` shows lvsd at work.
This package imports nothing heavy, so ``python -m lab.httpd`` starts fast in
the guest.
"""
