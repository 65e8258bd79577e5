"""`python -m zipvlm.cli`: the same as the `zipvlm` command."""

import sys

from zipvlm.cli.main import main

sys.exit(main())
