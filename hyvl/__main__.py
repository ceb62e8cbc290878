import sys

from hyvl.cli.main import main

sys.exit(main())
