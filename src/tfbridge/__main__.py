import sys

from tfbridge.cli import main

sys.exit(main())
