"""``python -m contrastlab`` runs the command line."""

from contrastlab.cli import main

main()
