import sys

from mailwatch.cli import main

sys.exit(main())
