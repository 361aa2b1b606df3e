"""``python -m bus.operations.cli``: the command line, for processes started without the script."""

from bus.operations.cli import main

main()
