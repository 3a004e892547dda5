"""``python -m skflow``: the README's demo on scikit-learn's bundled digits."""

import sys

from .demo import main

sys.exit(main())
