"""``python -m imserver.bench``: see ``imserver.bench.cli``. gevent patches first."""
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from .cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
