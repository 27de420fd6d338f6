"""``python -m lympho``: the command line, defined in :mod:`lympho.cli`."""

from lympho.cli import exit_now, main

if __name__ == "__main__":
    exit_now(main())
