"""``aiedit doctor``: one screen of checks before a session — torch and the GPU against what each mode needs, the
model (header-level verify), the spool (writable, not held by a stuck process), the port, the config file, and
whether REAPER's scripts point at the same spool. Every failed check says its fix; exit 1 when any failed.

It reads the same config file and defaults as ``aiedit serve``, so it checks what the daemon would use.
"""

from __future__ import annotations

import argparse
import configparser
import errno
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge.jobs import spool as spool_mod
from bridge.jobs.spool import Spool, default_spool
from engine.config import ConfigError, apply_config, config_path, load_config, unknown_keys

# Peak GPU memory of one edit with a real-size TANGO, fp32 (NVIDIA H100, /work/shared/notes/gpu.md): what a card
# needs for each mode, with a little headroom for the CUDA context.
MODE_GIB = {"lora": 11.0, "full": 23.0}
REAPER_SECTION = "aiedit"  # reaper_scripts/aiedit/core.lua: SECTION, keys as in M.DEFAULTS
ACTION = "AI edit selected items.lua"
LUA_DEFAULT_SPOOL = "~/.aiedit/spool"


@dataclass
class Result:
    name: str
    level: str  # "ok" | "warn" | "FAIL" | "skip"
    detail: str
    fix: str = ""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aiedit doctor", description="Check this machine before a session.")
    ap.add_argument("--model", default="auto", help="the model the daemon would load (default: auto)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--spool", default=None, help="spool folder (default: $AIEDIT_SPOOL or ~/.aiedit/spool)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9050)
    ap.add_argument("--token", default=None)
    ap.add_argument("--token-file", default=None, metavar="FILE", help="the daemon's token file (mode 0600)")
    ap.add_argument("--reaper-resource", default=None, metavar="PATH",
                    help="REAPER's resource path (Options → Show REAPER resource path); default: the usual place")
    ap.add_argument("--write-reaper-settings", action="store_true",
                    help="write this install's full engine command into the REAPER scripts' settings "
                         "(reaper-extstate.ini; close REAPER first: it rewrites the file when it quits)")
    apply_config(ap, "doctor")
    return ap


# -- the checks -------------------------------------------------------------------------------------------------


def check_config() -> Result:
    path = config_path()
    if not path.is_file():
        return Result("config", "ok", f"no {path} (built-in defaults; see docs/install.md)")
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return Result("config", "FAIL", str(exc), f"fix the TOML in {path}")
    from bridge.commands.parser import build_parser as aiedit_parser
    from engine.cli import build_parser as edit_parser

    try:
        parsers = {"aiedit": _subparsers(aiedit_parser()), "edit": edit_parser(), "doctor": build_parser()}
    except ConfigError as exc:  # a bad value for another command: serve or edit would stop on it
        return Result("config", "FAIL", str(exc), f"fix that key in {path}")
    odd = unknown_keys(cfg, parsers)
    if odd:
        return Result("config", "warn", f"{path}: no command has an option {', '.join(odd)} (ignored)",
                      "check the spelling against `aiedit serve --help`")
    return Result("config", "ok", str(path))


def _subparsers(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """One parser holding every option of ``aiedit``'s subcommands (for the unknown-key check)."""
    merged = argparse.ArgumentParser(add_help=False)
    for action in ap._actions:
        for sub in getattr(action, "choices", None).values() if isinstance(action, argparse._SubParsersAction) else ():
            merged._actions.extend(sub._actions)
    return merged


def check_torch(device: str | None) -> list[Result]:
    try:
        import torch
    except Exception as exc:  # missing or broken install
        return [Result("torch", "FAIL", f"cannot import torch: {exc}", "install torch (docs/install.md)")]
    out = [Result("torch", "ok", f"{torch.__version__}")]
    mps = check_mps(device)
    if mps is not None:
        out.append(mps)
    if not torch.cuda.is_available():
        if mps is not None and mps.level == "ok" and not (device and device.startswith("cuda")):
            return out  # an Apple GPU does the work: no CUDA is expected here
        level = "FAIL" if device and device.startswith("cuda") else "warn"
        out.append(Result("cuda", level, "no CUDA device: edits run on the CPU (minutes per edit with a real model)",
                          "install the CUDA build of torch for your driver (docs/install.md), or set device = \"cpu\""
                          if level == "FAIL" else "fine for the toy model; for real models use an NVIDIA GPU"))
        return out
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        total = props.total_memory / 2**30
        try:
            free = torch.cuda.mem_get_info(i)[0] / 2**30
        except RuntimeError:
            free = total
        fits = [m for m, need in MODE_GIB.items() if free >= need]
        short = [f"{m} needs ≈{need:.0f} GiB" for m, need in MODE_GIB.items() if free < need]
        level = "ok" if len(fits) == len(MODE_GIB) else "warn" if fits else "FAIL"
        out.append(Result(f"gpu {i}", level, f"{props.name}, {free:.1f} of {total:.1f} GiB free; "
                          + (f"enough for {', '.join(fits)}" if fits else "") + ("; " if fits and short else "")
                          + "; ".join(short),
                          "" if level == "ok" else "close other GPU programs, or use LoRA / SDEdit mode and a "
                          "smaller model (audioldm)"))
        out.append(sa3_fit(i, free))
        out.append(ace_fit(i, free))
    return out


def scripts_default_spool(resource: Path) -> Path:
    """The spool REAPER's scripts use when their setting is empty (reaper_scripts/aiedit/fs.lua ``windows_home``,
    settings.lua ``spool_dir``): ``~/.aiedit/spool`` as the daemon's default, except on Windows when REAPER cannot
    read the profile folder exactly (its Lua gets USERPROFILE in the ANSI code page) and its resource folder is not
    the usual ``<profile>\\AppData\\Roaming\\<name>`` to take it from: then ``<resource>/aiedit/spool``."""
    default = Path(os.path.expanduser(LUA_DEFAULT_SPOOL))
    if sys.platform != "win32":
        return default
    from pathlib import PureWindowsPath

    profile = os.environ.get("USERPROFILE", "")
    res = PureWindowsPath(resource)
    under = (len(res.parts) >= 4 and [p.lower() for p in res.parts[-3:-1]] == ["appdata", "roaming"]
             and str(PureWindowsPath(*res.parts[:-3])).lower() == str(PureWindowsPath(profile)).lower())
    if profile and (profile.isascii() or under):
        return Path(str(PureWindowsPath(profile, ".aiedit", "spool")))
    if not profile:
        return default
    return Path(str(res / "aiedit" / "spool"))


def check_mps(device: str | None) -> Result | None:
    """The Apple GPU (engine/devices.py): reported where torch has the MPS backend or --device mps asks for it."""
    from engine.devices import FALLBACK_ENV, mps_available, mps_built, mps_fallback_active

    wanted = (device or "").strip().lower() == "mps"
    if not mps_available():
        if wanted:
            why = "this torch was built without it" if not mps_built() else "it needs an Apple Silicon Mac, macOS 12.3+"
            return Result("mps", "FAIL", f"--device mps: no Apple GPU (Metal/MPS) here — {why}",
                          "set device = \"cpu\" (or auto), or install the macOS arm64 build of torch")
        return None
    fallback = (f"operations MPS lacks run on the CPU ({FALLBACK_ENV}=1)" if mps_fallback_active() else
                f"{FALLBACK_ENV} is off, so an operation MPS lacks stops an edit")
    return Result("mps", "ok" if mps_fallback_active() else "warn",
                  f"Apple GPU (Metal) available{'' if wanted else ', chosen by device auto'}: weights fp32 there "
                  f"(fp16 on MPS makes noise); {fallback}; nothing was measured on a Mac by aiedit's authors",
                  "" if mps_fallback_active() else f"unset {FALLBACK_ENV} or set it to 1 (aiedit sets 1 itself)")


def next_step(device: str | None) -> list[str]:
    """The best model per kind this machine holds and the commands that get and measure it (engine/models/fit.py);
    empty when torch or the device cannot be asked."""
    from engine.errors import EngineError
    from engine.models.fit import machine_memory, next_steps

    try:
        return next_steps(machine_memory(device))
    except (EngineError, ImportError, RuntimeError):
        return []


def sa3_fit(gpu: int, free_gib: float) -> Result:
    """Which Stable Audio 3 sizes the free memory of one GPU holds (engine/models/catalog.py: SA3_GPU_GIB, the
    issue's sampling figures plus room for stage-2 fine-tuning; estimates, not measurements)."""
    from engine.models.catalog import SA3_GPU_GIB

    sizes = {"sa3-small": SA3_GPU_GIB["sa3-small"], "sa3-medium": SA3_GPU_GIB["sa3-medium"]}
    fits = [f"{m} (≈{need:.0f} GiB)" for m, need in sizes.items() if free_gib >= need]
    short = [f"{m} needs ≈{need:.0f} GiB" for m, need in sizes.items() if free_gib < need]
    level = "ok" if not short else "warn" if fits else "FAIL"
    detail = f"Stable Audio 3 with {free_gib:.1f} GiB free: " + "; ".join(
        ([f"fits {', '.join(fits)}"] if fits else []) + short)
    return Result(f"gpu {gpu} sa3", level, detail,
                  "" if level == "ok" else "use sa3-small, close other GPU programs, or flowedit / sdedit mode")


def ace_fit(gpu: int, free_gib: float) -> Result:
    """Whether one GPU's free memory holds an ACE-Step 1.5 DiT (engine/models/catalog.py: ACE_GPU_GIB, bf16 weights
    plus LoRA training; an estimate). The three variants are the same size."""
    from engine.models.catalog import ACE_GPU_GIB

    need = ACE_GPU_GIB["ace-step"]
    ok = free_gib >= need
    return Result(f"gpu {gpu} ace-step", "ok" if ok else "warn",
                  f"ACE-Step 1.5 with {free_gib:.1f} GiB free: " + ("fits" if ok else f"needs ≈{need:.0f} GiB"),
                  "" if ok else "close other GPU programs, or use cover / repaint / flowedit (no fine-tuning)")


def check_model(spec: str) -> list[Result]:
    from engine.errors import EngineError
    from engine.models.registry import resolve, resolve_auto
    from engine.models_cli import target_folders, verify_any

    name = spec.strip()
    out = []
    if name == "auto":
        name, warning = resolve_auto()
        if warning:
            out.append(Result("model", "warn", "auto → toy: no real model (Stable Audio 3, ACE-Step, TANGO, "
                              "AudioLDM 2, AudioLDM) found",
                              "`aiedit models list` shows what to pull; the toy model knows only the toy world"))
        else:
            out.append(Result("model", "ok", f"auto → {name}"))
    from engine.models.catalog import BUILTIN

    if name in BUILTIN:
        return [*out, Result("model", "warn", f"{name} has random weights: edits come back as noise",
                             "use --model auto (the default) or a real model")]
    try:
        resolve(name)
    except EngineError as exc:
        return [*out, Result("model", "FAIL", str(exc), "`aiedit models list` shows the names and pull commands")]
    pairs, error = target_folders(name)
    if error:
        return [*out, Result("model", "FAIL", error, f"`aiedit models pull {name}`")]
    for label, folder in pairs:
        report = verify_any(label, folder)
        bad = report.failures()
        if bad:
            out.append(Result(f"verify {label}", "FAIL", f"{bad[0].what}: {bad[0].detail}"
                              + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""),
                              f"`aiedit models verify {name}` lists every problem; pull or copy the model again"))
        else:
            out.append(Result(f"verify {label}", "ok", f"{folder} ({len(report.checks)} checks)"))
    return out


def check_spool_writable(sp: Spool) -> Result:
    try:
        sp.create()
        fd, tmp = tempfile.mkstemp(prefix=".doctor-", dir=sp.inbox)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        return Result("spool", "FAIL", f"{sp.root} is not writable: {exc.strerror or exc}",
                      "choose a folder you can write: `aiedit serve --spool DIR`, spool = \"DIR\" in the config file "
                      "or AIEDIT_SPOOL — and the same folder in REAPER's AI edit settings")
    return Result("spool", "ok", f"{sp.root} is writable")


def _answers(host: str, port: int) -> bool:
    from bridge.wire.client import OscClient, ping

    if not port:
        return False
    try:
        with OscClient("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port) as c:
            return ping(c, timeout=1.0) is not None
    except OSError:
        return False


def check_spool_lock(sp: Spool) -> tuple[Result, dict | None]:
    """Free, or held by a daemon that answers (fine), or held by something that does not (the failure)."""
    live = sp.live_daemon()
    holder = getattr(spool_mod, "lock_holder", None)  # flock on <spool>/daemon.lock, where the bridge has it
    held = bool(holder(sp.root)) if holder is not None else live is not None
    if not held:
        return Result("spool lock", "ok", "free: no daemon is serving this spool"), None
    if live and _answers(str(live.get("host", "127.0.0.1")), int(live.get("port") or 0)):
        return Result("spool lock", "ok", f"held by the aiedit daemon pid {live.get('pid')}, answering on port "
                      f"{live.get('port')}"), live
    if live:
        pid = live.get("pid")
        return Result("spool lock", "FAIL", f"daemon pid {pid} (port {live.get('port')}) holds {sp.root} but does "
                      "not answer",
                      f"stop it (`kill {pid}`; `kill -9 {pid}` if it hangs), or use another --spool"), live
    return Result("spool lock", "FAIL", f"another process holds {sp.root / 'daemon.lock'}",
                  f"stop the other `aiedit serve` on this spool (`fuser {sp.root / 'daemon.lock'}` names it), or use "
                  "another --spool"), None


def check_port(host: str, port: int, live: dict | None) -> Result:
    if port == 0:
        return Result("port", "ok", "0: the daemon takes any free port (daemon.json says which)")
    if live and int(live.get("port") or -1) == port:
        return Result("port", "ok", f"{port} is the running daemon's")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            used = exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1))
            return Result("port", "FAIL", f"cannot listen on {host}:{port}: "
                          + ("in use by another program" if used else str(exc.strerror or exc)),
                          "stop that program, or pick another port: `aiedit serve --port N` or port = N in the config")
    return Result("port", "ok", f"{host}:{port} is free")


def check_host(host: str, token: str | None) -> Result | None:
    from bridge.jobs.protocol import is_loopback

    if is_loopback(host) or token:
        return None
    return Result("host", "FAIL", f"{host} is not loopback and there is no token: the daemon will refuse to start",
                  "set token = \"SECRET\" in the config (and the same token in REAPER's settings)")


def shipped_scripts() -> Path:
    """Where this install keeps the REAPER scripts: ``<prefix>/share/aiedit`` from the wheel, else the repo's."""
    installed = Path(sys.prefix) / "share" / "aiedit" / "reaper_scripts"
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "reaper_scripts"


def default_reaper_resource() -> Path | None:
    home = Path.home()
    for p in (Path(os.environ.get("APPDATA", home)) / "REAPER", home / "Library" / "Application Support" / "REAPER",
              home / ".config" / "REAPER"):
        if (p / "reaper.ini").is_file() or (p / "reaper-extstate.ini").is_file():
            return p
    return None


def reaper_settings(resource: Path) -> dict[str, str] | None:
    """The scripts' saved settings (ExtState section ``aiedit``), or None when the ini file is missing."""
    ini = resource / "reaper-extstate.ini"
    if not ini.is_file():
        return None
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str  # keys are case-sensitive in ExtState
    try:
        cp.read(ini, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return {}
    return dict(cp[REAPER_SECTION]) if cp.has_section(REAPER_SECTION) else {}


def engine_command() -> str:
    """The full command that starts this install's daemon: REAPER's ExecProcess does not search PATH like a shell,
    and a macOS app started from the Dock has no shell PATH at all, so the scripts need an absolute program."""
    exe = Path(sys.executable).parent / ("aiedit.exe" if os.name == "nt" else "aiedit")
    found = str(exe) if exe.is_file() else shutil.which("aiedit")
    parts = [str(Path(found).resolve()), "serve"] if found else [sys.executable, "-m", "bridge", "serve"]
    # the scripts take the program as the first word or the first "quoted run" (reaper_scripts/aiedit/engine.lua)
    return " ".join(f'"{p}"' if " " in p else p for p in parts)


def _program(cmd: str) -> str:
    cmd = cmd.strip()
    if cmd.startswith('"'):
        return cmd[1:].split('"', 1)[0]
    return cmd.split(" ", 1)[0] if cmd else ""


def check_engine_cmd(settings: dict[str, str]) -> Result:
    theirs = settings.get("engine_cmd") or "aiedit serve"  # the scripts' default (settings.lua)
    program = _program(theirs)
    fix = (f"set AI edit settings → Engine command to: {engine_command()}   (or, with REAPER closed: "
           "aiedit doctor --write-reaper-settings)")
    if " -m bridge.cli " in theirs:  # written by an older doctor: that module is now bridge.commands.cli
        return Result("reaper engine", "warn", f"REAPER's scripts start the engine with `{theirs}`: the module "
                      "bridge.cli no longer exists (python -m bridge serve starts it)", fix)
    if Path(program).is_absolute() and Path(program).is_file():
        return Result("reaper engine", "ok", f"REAPER starts the engine with {theirs}")
    why = "is not a full path" if not Path(program).is_absolute() else "does not exist"
    return Result("reaper engine", "warn", f"REAPER's scripts start the engine with `{theirs}`: {program} {why}, "
                  "so 'Yes: start it now' may find nothing (on macOS it never finds a bare name)", fix)


def write_engine_cmd(resource: Path, cmd: str) -> Path:
    """Sets engine_cmd in the [aiedit] section of reaper-extstate.ini, keeping every other line as it is."""
    ini = resource / "reaper-extstate.ini"
    lines = ini.read_text(encoding="utf-8").splitlines() if ini.is_file() else []
    start = next((i for i, ln in enumerate(lines) if ln.strip() == f"[{REAPER_SECTION}]"), None)
    if start is None:
        lines += ["", f"[{REAPER_SECTION}]", f"engine_cmd={cmd}"]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        at = next((i for i in range(start + 1, end) if lines[i].split("=", 1)[0].strip() == "engine_cmd"), None)
        if at is None:
            lines.insert(start + 1, f"engine_cmd={cmd}")
        else:
            lines[at] = f"engine_cmd={cmd}"
    tmp = ini.with_name(ini.name + ".aiedit-tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, ini)
    return ini


def check_reaper(resource_arg: str | None, sp: Spool, token: str | None, write: bool = False) -> list[Result]:
    resource = Path(resource_arg).expanduser() if resource_arg else default_reaper_resource()
    if resource is None:
        return [Result("reaper", "skip", "REAPER's resource path not found",
                       "pass --reaper-resource PATH (REAPER: Options → Show REAPER resource path)")]
    out = []
    scripts = resource / "Scripts"
    # an action next to its library folder (reaper_scripts/ as ReaPack or a copy installs it)
    found = sorted(p for p in scripts.rglob(ACTION) if (p.parent / "aiedit" / "init.lua").is_file()) \
        if scripts.is_dir() else []
    out.append(Result("reaper scripts", "ok", str(found[0].parent)) if found else
               Result("reaper scripts", "FAIL", f"no '{ACTION}' with its aiedit/ library under {scripts}",
                      f"install the scripts with ReaPack, or copy {shipped_scripts()} into {scripts / 'aiedit'} "
                      "(docs/reaper.md)"))
    if write:
        ini = write_engine_cmd(resource, engine_command())
        out.append(Result("reaper write", "ok", f"engine_cmd={engine_command()} in {ini}"))
    settings = reaper_settings(resource)
    if settings is None:
        out.append(Result("reaper spool", "FAIL", f"no reaper-extstate.ini in {resource}",
                          "is this REAPER's resource path? (Options → Show REAPER resource path)"))
        return out
    out.append(check_engine_cmd(settings))
    theirs = settings.get("spool") or str(scripts_default_spool(resource))
    theirs_path = Path(os.path.expanduser(theirs)).resolve()
    if theirs_path != sp.root:
        out.append(Result("reaper spool", "FAIL", f"REAPER's scripts use {theirs_path}, the engine {sp.root}",
                          f"set the scripts' Spool folder to {sp.root} (AI edit settings), or run the engine with "
                          f"--spool {theirs_path} (spool = \"{theirs_path}\" in the config)"))
    else:
        out.append(Result("reaper spool", "ok", f"REAPER's scripts use the same spool ({theirs_path})"))
    if (settings.get("token") or None) != (token or None):
        out.append(Result("reaper token", "FAIL", "REAPER's token setting differs from the engine's token",
                          "enter the engine's token in the scripts' settings"))
    return out


# -- the screen -------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[Result]:
    sp = Spool(args.spool or default_spool())
    results = [check_config(), *check_torch(args.device), *check_model(args.model), check_spool_writable(sp)]
    if results[-1].level == "ok":
        lock, live = check_spool_lock(sp)
        results.append(lock)
    else:
        live = None
    results.append(check_port(args.host, args.port, live))
    token, token_check = check_token(args)
    if token_check:
        results.append(token_check)
    host = check_host(args.host, token)
    if host:
        results.append(host)
    results += check_reaper(args.reaper_resource, sp, token, write=args.write_reaper_settings)
    return results


def check_token(args: argparse.Namespace) -> tuple[str | None, Result | None]:
    """The token the daemon would use (--token-file, --token, $AIEDIT_TOKEN) and a check of how it is given."""
    from bridge.wire.secret import TOKEN_ENV, TokenError, resolve_token

    try:
        token, _ = resolve_token(args.token, getattr(args, "token_file", None))
    except TokenError as exc:
        return None, Result("token", "FAIL", str(exc), "chmod 600 the token file, or set $" + TOKEN_ENV)
    if args.token and not getattr(args, "token_file", None):
        return token, Result("token", "ok", "a token is set in the config file or on the command line",
                             "on a shared machine prefer token_file = \"FILE\" (mode 0600) or $" + TOKEN_ENV)
    return token, None


def print_results(results: list[Result], out=None) -> None:
    out = out or sys.stdout
    for r in results:
        print(f"{r.level:<5}{r.name:<17}{r.detail}", file=out)
        if r.fix and r.level in ("FAIL", "warn", "skip"):
            print(f"{'':<22}fix: {r.fix}", file=out)
    failed = [r.name for r in results if r.level == "FAIL"]
    print(f"\n{'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)}", file=out)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ConfigError as exc:
        print(f"aiedit doctor: error: {exc}", file=sys.stderr)
        return 2
    results = run(args)
    print_results(results)
    steps = next_step(args.device)
    if steps:
        print("\nnext step to a first real edit:")
        for line in steps:
            print(f"  {line}")
    return 1 if any(r.level == "FAIL" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
