"""Copy the licence files of every distribution installed in this Python into DIR/<name>/ and
list them all, with version and declared licence, in DIR/THIRD-PARTY.txt.

    python packaging/collect_licences.py DIR

Run with the build venv's Python (build_linux.sh does): what the venv holds is what PyInstaller
bundles from, so every bundled package is covered (build tools are left out).
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import sys
from pathlib import Path

#: Build tools: installed in the build venv, never bundled.
BUILD_ONLY = {"pyinstaller", "pyinstaller-hooks-contrib", "altgraph", "pip"}
LICENCE_NAME = re.compile(r"^(licen[cs]e|copying|notice|authors|copyright)", re.IGNORECASE)


def declared_licence(dist: importlib.metadata.Distribution) -> str:
    meta = dist.metadata
    text = (meta.get("License-Expression") or meta.get("License") or "").strip()
    if text and len(text) <= 80 and "\n" not in text:
        return text
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::")]
    return ", ".join(classifiers) or ("see the licence files" if text else "not declared")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    lines, seen = [], set()
    for dist in sorted(importlib.metadata.distributions(),
                       key=lambda d: (d.metadata["Name"] or "").lower()):
        name = dist.metadata["Name"]
        key = re.sub(r"[-_.]+", "-", (name or "").lower())
        if not name or key in BUILD_ONLY or key in seen:
            continue
        seen.add(key)
        copied = []
        for file in dist.files or []:
            parts = Path(str(file)).parts
            in_dist_info = parts and parts[0].endswith((".dist-info", ".egg-info"))
            if in_dist_info and (LICENCE_NAME.match(file.name) or "licenses" in parts[1:-1]):
                target = out / key / Path(*parts[1:])
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file.locate(), target)
                copied.append(str(Path(*parts[1:])))
        files = ", ".join(copied) if copied else "no licence file in its metadata"
        lines.append(f"{name} {dist.version}: {declared_licence(dist)} ({files})")
    (out / "THIRD-PARTY.txt").write_text(
        "Third-party packages bundled in UDA Studio (name version: declared licence "
        "(licence files, in the folder of that name here))\n\n" + "\n".join(lines) + "\n",
        encoding="utf-8")
    print(f"collect_licences: {len(lines)} distributions -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
