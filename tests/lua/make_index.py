"""Writes reaper_scripts/index.xml in the reapack-index format: every source pinned to one commit, the version the
scripts' @version header says, in the category "Items Editing" (how ReaPack's browser groups it; reapack-index would
name it after the folder, so this script is the way to build the index). Every change of a provided file needs a new
@version (tests/test_reaper_scripts.py compares the files at the pinned commit with the working tree). Release: bump
@version in the four scripts (and aiedit/core.lua VERSION), commit, then from the repository root:

    python tests/lua/make_index.py "$(git rev-parse HEAD)" [--url https://github.com/OWNER/REPO]

The repository URL (where ReaPack downloads the files from) is --url, else $AIEDIT_REPO_URL, else the git remote
"origin" (GitHub and GitLab, https or ssh); with none of them the script stops and says so: an index never carries
a guessed address.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path("reaper_scripts")
CATEGORY = "Items Editing"
MAINS = ["AI edit selected items.lua", "AI batch re-take.lua", "AI edit jobs.lua", "AI edit settings.lua"]
DESCRIPTION = r"""{\rtf1\ansi\deff0{\fonttbl{\f0 Helvetica;}}\f0\fs20
{\b AI edit for REAPER}\par
Text-prompted AI editing of media items with the local aiedit engine (aiedit serve).\par
Actions: AI edit selected items, AI batch re-take, AI edit jobs, AI edit settings.\par
Results come back as new takes (or on a new track or lanes); the original take is never modified.\par
}"""
CHANGELOG = ("A jobs window on ReaImGui: play a take alone, A/B it against the original while it plays, keep one "
             "(one undo point); scores and spectrograms per take; retry, clear, cancel all after a question; dock and "
             "size remembered; Space plays. A dialog in plain words (presets, modes by what they cost, the engine's "
             "models, tempo and time signature from the project). Refused or vanished jobs end with their reason; "
             "named AI lanes per strength; results keep the item's fades and volume; opt-in to open the window at "
             "start. The plain windows stay when ReaImGui is missing. On Windows the default spool is the engine's "
             "own, also for user names outside ASCII (else a folder under REAPER's resource path, passed to the "
             "engine REAPER starts); the engine command is quoted for Windows and macOS/Linux, and an engine path "
             "with spaces pasted bare is quoted. The dialogs start from the chosen model's own strengths for the "
             "chosen kind of edit (Stable Audio 3's preview 0.75/0.85/0.95, where 0.25/0.5/0.75 came back nearly "
             "unchanged), with presets around them, and remember your numbers per model and kind of edit.")


def script_version() -> str:
    """The @version of the main script (all four carry the same)."""
    text = (ROOT / MAINS[0]).read_text(encoding="utf-8")
    return re.search(r"@version\s+(\S+)", text).group(1)


def commit_time(commit: str) -> str:
    """The commit's date in UTC, as reapack-index writes a version's time (a fixed date when git cannot tell)."""
    proc = subprocess.run(["git", "show", "-s", "--format=%ct", commit], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        return "2026-11-23T00:00:00Z"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(proc.stdout.strip())))


class NoRepositoryURL(RuntimeError):
    """No --url, no $AIEDIT_REPO_URL and no usable git remote: the index cannot say where its files are."""


def repo_urls(url: str) -> tuple[str, str]:
    """(website, raw-file base) of a repository URL: https or ssh, GitHub or GitLab, with or without .git."""
    u = url.strip().rstrip("/")
    m = re.match(r"^(?:git@|ssh://git@)([^:/]+)[:/](.+?)(?:\.git)?$", u)
    if m:
        u = f"https://{m.group(1)}/{m.group(2)}"
    u = re.sub(r"\.git$", "", u)
    m = re.match(r"^https://raw\.githubusercontent\.com/([^/]+/[^/]+)$", u)
    if m:
        return f"https://github.com/{m.group(1)}", u
    m = re.match(r"^https://github\.com/([^/]+/[^/]+)$", u)
    if m:
        return u, f"https://raw.githubusercontent.com/{m.group(1)}"
    m = re.match(r"^https://([^/]+)/(.+)$", u)
    if m:  # GitLab and hosts like it serve raw files under /-/raw/<ref>/
        return u, f"{u}/-/raw"
    raise NoRepositoryURL(f"not a repository URL ReaPack can download from: {url!r} (use https://HOST/OWNER/REPO)")


def find_repo_url(url: str | None = None) -> str:
    """The repository URL: --url, else $AIEDIT_REPO_URL, else the "origin" remote."""
    if url:
        return url
    if os.environ.get("AIEDIT_REPO_URL"):
        return os.environ["AIEDIT_REPO_URL"]
    proc = subprocess.run(["git", "remote", "get-url", "origin"], capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip()
    raise NoRepositoryURL("no repository URL: pass --url https://github.com/OWNER/REPO (where the index will be "
                          "published), set $AIEDIT_REPO_URL, or add a git remote named origin")


def index_xml(commit: str, version: str | None = None, url: str | None = None) -> str:
    version = version or script_version()
    released = commit_time(commit)
    website, raw = repo_urls(find_repo_url(url))
    base = f"{raw}/{commit}/reaper_scripts/"

    def url(rel: str) -> str:
        return base + urllib.parse.quote(rel)

    modules = sorted(p.name for p in (ROOT / "aiedit").glob("*.lua"))
    sources = [f'        <source main="main">{url(MAINS[0])}</source>']
    sources += [f'        <source main="main" file="{m}">{url(m)}</source>' for m in MAINS[1:]]
    sources += [f'        <source file="aiedit/{m}">{url("aiedit/" + m)}</source>' for m in modules]
    body = "\n".join(sources)
    return f'''<?xml version="1.0" encoding="utf-8"?>
<!-- ReaPack index (reapack-index format). Import {raw}/main/reaper_scripts/index.xml
     in Extensions > ReaPack > Import repositories. Sources are pinned to the commit that holds this version (as
     reapack-index writes them). Regenerate: python tests/lua/make_index.py COMMIT (see its docstring) -->
<index version="1" name="aiedit" commit="{commit}">
  <category name="{CATEGORY}">
    <reapack name="{MAINS[0]}" type="script" desc="AI edit selected items">
      <metadata>
        <description><![CDATA[{DESCRIPTION}]]></description>
        <link rel="website">{website}</link>
      </metadata>
      <version name="{version}" author="aiedit" time="{released}">
        <changelog><![CDATA[{CHANGELOG}]]></changelog>
{body}
      </version>
    </reapack>
  </category>
</index>
'''


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="Write reaper_scripts/index.xml for ReaPack.")
    ap.add_argument("commit", help="the commit the sources are pinned to (git rev-parse HEAD)")
    ap.add_argument("--url", help="the repository (https://github.com/OWNER/REPO); default $AIEDIT_REPO_URL, else "
                                  "the origin remote")
    args = ap.parse_args(argv)
    try:
        text = index_xml(args.commit, url=args.url)
    except NoRepositoryURL as exc:
        print(f"make_index: {exc}", file=sys.stderr)
        return 2
    (ROOT / "index.xml").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
