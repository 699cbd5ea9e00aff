"""`python -m normlab ...` runs the command line."""

from normlab.cli import main

main()
