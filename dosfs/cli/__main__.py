"""`python -m dosfs.cli` (how the mount re-executes itself as its daemon)."""

from dosfs.cli import main

main()
