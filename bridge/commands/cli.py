"""The ``aiedit`` console script: ``serve`` (the daemon), ``send`` (a client), ``edit`` (one edit, no
daemon), ``models`` (list, pull, verify), ``doctor`` (check the machine) and ``selftest`` (how fast it edits here).

Imports are deferred per subcommand so ``aiedit send`` and ``aiedit serve`` start in a fraction of a second;
only ``edit`` (and the daemon's worker thread) ever import torch.
"""

from __future__ import annotations

import sys

from bridge.commands.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["edit"]:
        from engine.cli import main as edit_main  # heavy (torch) only for this subcommand

        return int(edit_main(argv[1:]) or 0)
    if argv[:1] == ["doctor"]:
        from bridge.commands.doctor import main as doctor_main

        return int(doctor_main(argv[1:]) or 0)
    if argv[:1] == ["models"]:
        from engine.models_cli import main as models_main

        return int(models_main(argv[1:]) or 0)
    if argv[:1] == ["selftest"]:
        from engine.selftest import main as selftest_main  # heavy (torch): loads the model and edits

        return int(selftest_main(argv[1:]) or 0)
    from engine.config import ConfigError, fail

    try:
        parser = build_parser()
    except ConfigError as exc:
        return fail(exc)
    args = parser.parse_args(argv)
    from bridge.wire.secret import TokenError, resolve_token

    try:
        args.token, warning = resolve_token(args.token, args.token_file,
                                            on_command_line=any(a == "--token" or a.startswith("--token=")
                                                                for a in argv))
    except TokenError as exc:
        print(f"aiedit {args.command}: {exc}", file=sys.stderr)
        return 2
    if warning and args.command == "serve":
        print(f"aiedit serve: {warning}", file=sys.stderr)
    if args.command == "serve":
        from bridge.daemon import ServeConfig, serve

        if args.model.strip() == "auto":
            _announce_auto()
        return serve(
            ServeConfig(
                model=args.model,
                host=args.host,
                port=args.port,
                spool=args.spool,
                preload=args.preload,
                token=args.token,
                map_path=args.map_path,
                device=args.device,
                devices=args.devices,
                ray=args.ray,
                cache_dir=args.cache_dir,
                cache_max_mb=args.cache_max_mb,
                precision=args.precision,
                compile=args.compile,
                threads=args.threads,
                verbose=args.verbose,
                max_seconds=args.max_seconds,
                max_channels=args.max_channels,
                max_output_mb=args.max_output_mb,
                max_job_mb=args.max_job_mb,
                max_queued=args.max_queued,
                keep_days=args.keep_days,
                max_history=args.max_history,
                max_models=args.max_models,
            )
        )
    from bridge.wire.client import run_send

    return run_send(args)


def _announce_auto() -> None:
    """Say on the console what ``--model auto`` will load (cheap: reads folders, no weights, no torch)."""
    from engine.models.registry import resolve_auto

    spec, warning = resolve_auto()
    print(f"aiedit serve: warning: {warning}" if warning else f"aiedit serve: --model auto: using {spec}",
          file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
