"""Run the command line as `python -m suture`."""

from suture.cli import main

main()
