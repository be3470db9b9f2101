"""``python -m normlab``: see :mod:`normlab.cli`."""

from normlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
