"""``python -m gmcourse.grading``: see :mod:`gmcourse.grading`."""

import sys

from gmcourse.grading.cli import main

sys.exit(main())
