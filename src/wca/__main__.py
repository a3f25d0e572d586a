import sys

from wca.cli import main

sys.exit(main())
