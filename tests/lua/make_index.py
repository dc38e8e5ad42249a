"""Writes reaper_scripts/index.xml the way `reapack-index` would: category = the scripts' folder, every source
pinned to one commit, the version the scripts' @version header says. Every change of a provided file needs a new
@version (tests/test_reaper_scripts.py compares the files at the pinned commit with the working tree). Release:
bump @version in the four scripts (and aiedit/core.lua VERSION), commit, then from the repository root:

    python tests/lua/make_index.py "$(git rev-parse HEAD)"   # then commit index.xml
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path("reaper_scripts")
MAINS = ["AI edit selected items.lua", "AI batch re-take.lua", "AI edit jobs.lua", "AI edit settings.lua"]
DESCRIPTION = r"""{\rtf1\ansi\deff0{\fonttbl{\f0 Helvetica;}}\f0\fs20
{\b AI edit for REAPER}\par
Text-prompted AI editing of media items with the local aiedit engine (aiedit serve).\par
Actions: AI edit selected items, AI batch re-take, AI edit jobs, AI edit settings.\par
Results come back as new takes (or on a new track or lanes); the original take is never modified.\par
}"""
CHANGELOG = ("Jobs survive tabs (closed tabs, File > Open in the same tab, upper-cased ext-state keys); results on "
             "muted per-eta tracks or silent lanes, chosen by REAPER version (6, 7.08, 7.18+); razor areas per lane, "
             "one job per area; remembered prompts with apostrophes; the wrong dialog field named in its caption; "
             "the engine's modes (flowedit); the worker per job; trims before a render; unsaved projects wait.")


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


def index_xml(commit: str, version: str | None = None) -> str:
    version = version or script_version()
    released = commit_time(commit)
    base = f"https://raw.githubusercontent.com/aiedit/aiedit/{commit}/reaper_scripts/"

    def url(rel: str) -> str:
        return base + urllib.parse.quote(rel)

    modules = sorted(p.name for p in (ROOT / "aiedit").glob("*.lua"))
    sources = [f'        <source main="main">{url(MAINS[0])}</source>']
    sources += [f'        <source main="main" file="{m}">{url(m)}</source>' for m in MAINS[1:]]
    sources += [f'        <source file="aiedit/{m}">{url("aiedit/" + m)}</source>' for m in modules]
    body = "\n".join(sources)
    return f'''<?xml version="1.0" encoding="utf-8"?>
<!-- ReaPack index (reapack-index format). Import https://raw.githubusercontent.com/aiedit/aiedit/main/reaper_scripts/index.xml
     in Extensions > ReaPack > Import repositories. Sources are pinned to the commit that holds this version (as
     reapack-index writes them), and the category is the scripts' folder (what reapack-index derives), so a
     regenerated index keeps both. Regenerate: python tests/lua/make_index.py COMMIT -->
<index version="1" name="aiedit" commit="{commit}">
  <category name="{ROOT.name}">
    <reapack name="{MAINS[0]}" type="script" desc="AI edit selected items">
      <metadata>
        <description><![CDATA[{DESCRIPTION}]]></description>
        <link rel="website">https://github.com/aiedit/aiedit</link>
      </metadata>
      <version name="{version}" author="aiedit" time="{released}">
        <changelog><![CDATA[{CHANGELOG}]]></changelog>
{body}
      </version>
    </reapack>
  </category>
</index>
'''


if __name__ == "__main__":
    (ROOT / "index.xml").write_text(index_xml(sys.argv[1]), encoding="utf-8")
