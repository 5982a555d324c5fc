"""``python -m liteq``: the same as the ``liteq`` command."""

from .cli import main

if __name__ == "__main__":
    main()
