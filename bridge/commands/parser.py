"""The ``aiedit`` command line: every subcommand and option, with ~/.aiedit/config.toml's values as defaults.

Its own module so that ``aiedit doctor`` can check the config against it without importing the command that runs
``doctor`` (:mod:`bridge.commands.cli`). Imports nothing heavy.
"""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aiedit", description="Text-prompted AI audio editing for REAPER.")
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the engine daemon (OSC on 127.0.0.1:9050 and the spool folder)")
    s.add_argument("--model", default="auto",
                   help="model name or folder (default: auto = the best model on this machine, else the toy model; "
                        "tiny = random weights, only when named)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on; non-loopback needs --token")
    s.add_argument("--port", type=int, default=9050, help="UDP port (0: any free port, see daemon.json)")
    s.add_argument("--spool", default=None, help="spool folder (default: $AIEDIT_SPOOL or ~/.aiedit/spool)")
    s.add_argument(
        "--preload", action="store_true", help="load the model at start instead of at the first job"
    )
    s.add_argument("--token", default=None,
                   help="shared secret every job and cancel must carry (visible in ps: prefer --token-file or "
                        "$AIEDIT_TOKEN)")
    s.add_argument("--token-file", default=None, metavar="FILE",
                   help="read the shared secret from FILE (must be mode 0600 and yours)")
    s.add_argument(
        "--map-path",
        action="append",
        default=[],
        metavar="CLIENT=SERVER",
        help="translate client path prefixes to the daemon's (repeatable)",
    )
    s.add_argument("--device", default=None,
                   help="auto (default: a CUDA GPU, else an Apple GPU, else the CPU) | cpu | cuda | cuda:N | mps")
    s.add_argument("--devices", default=None, metavar="LIST",
                   help="one worker per entry, each with its own model: cuda:0,cuda:1 | all (every visible GPU) | "
                        "cpu,cpu; jobs run side by side (with --ray: cuda,cpu,... name the actors)")
    s.add_argument("--ray", default=None, metavar="ADDRESS|local",
                   help="run the edits on Ray actors (one per GPU in the cluster): a cluster address "
                        "(ray start --head prints it) or local; needs pip install 'aiedit[cluster]'")
    s.add_argument("--max-models", type=int, default=None, metavar="N",
                   help="models each worker keeps loaded; a job naming another loads it and evicts the least "
                        "recently used (default: as many as the free memory holds, at least 1)")
    s.add_argument("--cache-dir", default=None, help="where the engine keeps its stage cache")
    s.add_argument("--cache-max-mb", type=float, default=None,
                   help="most disk the stage cache may use, least recently used entries dropped first (default: a "
                        "tenth of the free space there, at most 2048 MB)")
    s.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="weight storage: auto = bf16 on a CUDA GPU that supports it, fp32 on a CPU or an Apple GPU")
    s.add_argument("--compile", action="store_true", help="torch.compile the UNet on CUDA (slow first edit)")
    s.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's; 1-2 on a busy shared CPU)")
    s.add_argument("--max-seconds", type=float, default=120.0,
                   help="longest source region a job may ask for (default 120 s)")
    s.add_argument("--max-channels", type=int, default=8, help="most channels a source may have (default 8)")
    s.add_argument("--max-output-mb", type=float, default=1024.0,
                   help="largest estimated size of one job's takes (seconds x channels x takes; default 1024 MB)")
    s.add_argument("--max-job-mb", type=float, default=None,
                   help="largest estimated memory one edit may need beyond the loaded model (from its length, "
                        "channels, takes, mode and model; default: half this machine's memory)")
    s.add_argument("--max-queued", type=int, default=1000,
                   help="most jobs waiting at once; more are refused as busy (default 1000)")
    s.add_argument("--keep-days", type=float, default=14.0,
                   help="delete finished jobs (status and takes) after this many days, at start and hourly; "
                        "0 keeps them (default 14)")
    s.add_argument("--max-history", type=int, default=10_000,
                   help="most finished jobs kept (folders, statuses and takes); past it the oldest are deleted "
                        "(default 10000)")
    s.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    c = sub.add_parser("send", help="send a request to a running daemon")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=9050)
    c.add_argument("--timeout", type=float, default=None, help="seconds to wait for an answer")
    c.add_argument("--token", default=None, help="the daemon's shared secret, if it has one (or $AIEDIT_TOKEN)")
    c.add_argument("--token-file", default=None, metavar="FILE", help="read the shared secret from FILE (0600)")
    what = c.add_subparsers(dest="what", required=True)
    j = what.add_parser("job", help="send a job file (JSON, see docs/protocol.md); '-' reads stdin")
    j.add_argument("file")
    j.add_argument("--wait", action="store_true", help="follow the job until it ends")
    k = what.add_parser("cancel", help="cancel a queued or running job")
    k.add_argument("id")
    st = what.add_parser("status", help="list running, queued and recent jobs")
    st.add_argument("--json", action="store_true", help="print the raw status JSON")
    p = what.add_parser("ping", help="check that the daemon answers")
    p.add_argument("--wait", action="store_true", help="keep trying until --timeout (default 30 s)")
    for sp in (j, k, st, p):  # options also accepted after the subcommand
        sp.add_argument("--host", default=argparse.SUPPRESS)
        sp.add_argument("--port", type=int, default=argparse.SUPPRESS)
        sp.add_argument("--timeout", type=float, default=argparse.SUPPRESS)
        sp.add_argument("--token", default=argparse.SUPPRESS)
        sp.add_argument("--token-file", default=argparse.SUPPRESS)
    from engine.config import apply_config

    apply_config(s, "serve")  # ~/.aiedit/config.toml: its values become defaults; flags still win
    apply_config(c, "send")
    sub.add_parser("edit", help="run one edit without a daemon (see `aiedit edit --help`)", add_help=False)
    sub.add_parser("doctor", help="check this machine before a session (see `aiedit doctor --help`)",
                   add_help=False)
    sub.add_parser("models", help="list, pull or verify models (see `aiedit models --help`)", add_help=False)
    sub.add_parser("selftest", help="how long a preview and a deep edit of a 10 s item take here (see `aiedit "
                   "selftest --help`)", add_help=False)
    return ap
