"""``python -m lab.e2e guest ...`` (the guest's driver); with no ``guest``, the host's run."""

import sys

from lab.e2e.host import main
from lab.e2e.run import guest_main

if sys.argv[1:2] == ["guest"]:
    raise SystemExit(guest_main(sys.argv[2:]))
raise SystemExit(main())
