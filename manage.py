#!/usr/bin/env python
"""Django's command-line utility for Workbench."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workbench.settings")
    from workbench.embedded import EmbeddedServiceError

    try:
        from django.core.management import execute_from_command_line

        execute_from_command_line(sys.argv)
    except EmbeddedServiceError as exc:
        print(f"workbench: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
