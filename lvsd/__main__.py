import sys

from lvsd.cli import main

sys.exit(main())
