import sys

from clipmodule.cli import main

sys.exit(main())
