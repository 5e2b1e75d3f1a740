import sys

from metering_local.cli import main

sys.exit(main())
