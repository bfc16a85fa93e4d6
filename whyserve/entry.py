"""The ``whyserve`` console script: ``healthcheck`` runs without importing torch (an exec probe
must answer fast); every other command goes to ``whyserve.cli``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["healthcheck"]:
        from whyserve import health

        options = health.parser().parse_args(args[1:])
        return health.main(options.management, options.key_file, options.models, options.timeout)
    from whyserve.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
