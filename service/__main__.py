"""`python -m service` is the `newsletter` command."""

from service.cli import main

main()
