import sys

from moxtw.cli import main

sys.exit(main())
