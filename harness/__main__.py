import sys

from .cli import main

if __name__ == '__main__':  # not in the processes the benchmark spawns (they import this)
    sys.exit(main())
