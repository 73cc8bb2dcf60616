"""End-to-end scenarios: lvsd under systemd in the lab, real traffic, injected faults.

One boot (``SystemdBoot``, NAT topology with the real servers rs1, rs2 and rs3 and a
sorry server in its own namespace) runs ``lvsd.service`` (the repo's unit and the lab
drop-in) and this package's guest driver (``run``) as the test unit. Each scenario starts a
bounded traffic stream from the client namespace (``lab.traffic``), injects a
fault (``lab.faults``), and records:
the requests sent and failed, the failure window, when lvsd took the server out and put
it back (``ipvsadm -Ln`` sampled), what lvsd logged (journal) and exported
(``/metrics``). Results go to ``$LAB_RESULTS/e2e.json``, one record per scenario.

Modules: ``settings`` (constants, lvsd configs), ``tools`` (guest-side helpers),
``guest`` (the context scenarios share), ``failures``, ``operations`` and ``flapping``
(the scenarios), ``run`` (the guest entry), ``host`` (``run_boot``, ``report``,
``main``: ``python -m lab e2e``).
"""
