"""``python -m surgun_diffusers ...``: see :mod:`surgun_diffusers.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
