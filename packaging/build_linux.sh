#!/usr/bin/env bash
# Build the UDA Studio workstation installer for Debian/Ubuntu (x86-64): the PyInstaller
# onedir app (CPU torch) wrapped as a .deb that installs it in /opt/uda-studio, with a
# `uda-studio` launcher in /usr/bin, a desktop entry, an icon, a manual page, and the licences
# and notices of everything inside.
#
#   packaging/build_linux.sh [--python VENV_PYTHON] [--out DIR] [--reuse-app]
#
# --python: the Python of a build venv holding the app installed from its wheel (not
#   editable), CPU torch, napari, PySide6, pyqtgraph, pyinstaller, pyinstaller-hooks-contrib
#   (packaging/README.md says how to make one); default: $UDA_BUILD_PYTHON, else `python3`.
# --out: where the build goes (default packaging/build); the .deb is written there, with
#   lintian.txt (lintian's report) and the onedir app under app/.
# --reuse-app: skip PyInstaller when OUT/app/uda-studio exists (repackaging only).
# Needs dpkg-deb, fakeroot, desktop-file-validate (desktop-file-utils), lintian.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
PYTHON="${UDA_BUILD_PYTHON:-python3}"
OUT="$HERE/build"
REUSE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --python) PYTHON="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --reuse-app) REUSE=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "build_linux.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for tool in dpkg-deb fakeroot desktop-file-validate lintian; do
    command -v "$tool" >/dev/null || { echo "build_linux.sh: $tool not found (apt-get install dpkg fakeroot desktop-file-utils lintian)" >&2; exit 2; }
done
"$PYTHON" -c "import PyInstaller, uda_studio, torch" 2>/dev/null || {
    echo "build_linux.sh: $PYTHON lacks PyInstaller, uda_studio or torch (see packaging/README.md)" >&2; exit 2; }
if "$PYTHON" -c "import uda_studio, sys; sys.exit('site-packages' in uda_studio.__file__)"; then
    echo "build_linux.sh: $PYTHON imports uda_studio from a source tree, not from an installed wheel" >&2; exit 2
fi

VERSION="$("$PYTHON" -c 'import uda_core; print(uda_core.__version__)')"
ARCH="$(dpkg --print-architecture)"
PKG=uda-studio
MAINTAINER="${UDA_MAINTAINER:-UDA Studio maintainers <maintainers@uda-studio.invalid>}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
case "$PYTHON" in */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac
APP="$OUT/app/uda-studio"

# 1. the onedir app
if [ "$REUSE" = 1 ] && [ -x "$APP/uda-studio" ]; then
    echo "== reusing $APP"
else
    echo "== PyInstaller (several minutes)"
    rm -rf "$OUT/app"
    # from a folder without the checkout's uda_core/ on the path: what is bundled is the
    # installed wheel (with uda_core._resources), not the source tree
    (cd "$OUT" && "$PYTHON" -m PyInstaller --noconfirm --log-level WARN --distpath "$OUT/app" \
        --workpath "$OUT/work" "$HERE/uda-studio.spec")
fi

# 2. licences and notices of every distribution in the build venv, and our own
echo "== licences"
rm -rf "$APP/licenses"
"$PYTHON" "$HERE/collect_licences.py" "$APP/licenses"
# Qt and PySide6 (LGPL-3.0) ship no licence text in their wheels' metadata: add the texts
for dist in pyside6-essentials shiboken6; do
    [ -d "$APP/licenses/$dist" ] && [ -n "$(ls -A "$APP/licenses/$dist")" ] && continue
    mkdir -p "$APP/licenses/$dist"
    cp /usr/share/common-licenses/LGPL-3 "$APP/licenses/$dist/LGPL-3.0.txt"
    cp /usr/share/common-licenses/GPL-3 "$APP/licenses/$dist/GPL-3.0.txt"
done
mkdir -p "$APP/licenses/uda-studio"
cp "$REPO/LICENSE" "$APP/licenses/uda-studio/LICENSE"
cp "$REPO/resources/template/NOTICE.txt" "$APP/licenses/uda-studio/TEMPLATE-NOTICE.txt"
cp "$REPO/resources/models/README.md" "$APP/licenses/uda-studio/MODELS.md"
cp "$REPO/resources/demo/README.md" "$APP/licenses/uda-studio/DEMO-DATA.md"

# 3. the package tree
echo "== staging"
STAGE="$OUT/deb"
rm -rf "$STAGE"
install -d "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications" \
    "$STAGE/usr/share/icons/hicolor/scalable/apps" "$STAGE/usr/share/icons/hicolor/256x256/apps" \
    "$STAGE/usr/share/doc/$PKG" "$STAGE/usr/share/man/man1"
cp -a "$APP" "$STAGE/opt/uda-studio"
install -m 755 "$HERE/linux/uda-studio" "$STAGE/usr/bin/uda-studio"
install -m 644 "$HERE/linux/uda-studio.desktop" "$STAGE/usr/share/applications/uda-studio.desktop"
install -m 644 "$REPO/app/icons/uda-studio.svg" "$STAGE/usr/share/icons/hicolor/scalable/apps/uda-studio.svg"
install -m 644 "$REPO/app/icons/uda-studio.png" "$STAGE/usr/share/icons/hicolor/256x256/apps/uda-studio.png"
sed "s/@VERSION@/$VERSION/g" "$HERE/linux/uda-studio.1" | gzip -9n > "$STAGE/usr/share/man/man1/uda-studio.1.gz"
sed "s/@VERSION@/$VERSION/g; s/@MAINTAINER@/$MAINTAINER/; s/@DATE@/$(date -R -u -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}")/" \
    "$HERE/linux/changelog" | gzip -9n > "$STAGE/usr/share/doc/$PKG/changelog.gz"
install -m 644 "$HERE/linux/copyright" "$STAGE/usr/share/doc/$PKG/copyright"
desktop-file-validate "$STAGE/usr/share/applications/uda-studio.desktop"
# permissions as Debian wants them: no group/other write, data files not executable
chmod -R u+rwX,go+rX,go-w "$STAGE"
find "$STAGE/opt" -type f \( -name '*.py' -o -name '*.pyc' -o -name '*.json' -o -name '*.txt' \
    -o -name '*.md' -o -name '*.png' -o -name '*.svg' -o -name '*.yaml' -o -name '*.pt' \
    -o -name '*.nii.gz' -o -name '*.so' -o -name '*.so.*' \) -exec chmod 644 {} +

# 4. the control file: shared-library dependencies of every ELF file, found by dpkg-shlibdeps
echo "== control"
DEPENDS="$("$HERE/linux/shlib_depends.sh" "$STAGE/opt/uda-studio")"
INSTALLED_KB="$(du -sk --apparent-size "$STAGE" --exclude=DEBIAN | cut -f1)"
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$INSTALLED_KB/" \
    -e "s/@DEPENDS@/$DEPENDS/" -e "s/@MAINTAINER@/$MAINTAINER/" "$HERE/linux/control" > "$STAGE/DEBIAN/control"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
    | xargs -0 md5sum > DEBIAN/md5sums)
chmod 644 "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/md5sums"

# 5. the .deb and lintian's report
DEB="$OUT/${PKG}_${VERSION}_${ARCH}.deb"
echo "== dpkg-deb (xz; a few minutes)"
fakeroot dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB"
echo "== lintian"
lintian --tag-display-limit 0 "$DEB" > "$OUT/lintian.txt" 2>&1 || true
# one line per tag: how many times, severity, tag (packaging/README.md explains the errors)
grep -E '^[EWI]:' "$OUT/lintian.txt" | awk '{print $1, $3}' | sort | uniq -c | sort -rn \
    > "$OUT/lintian-summary.txt" || true
echo "lintian (count, severity, tag; full report $OUT/lintian.txt):"
cat "$OUT/lintian-summary.txt"
ls -l "$DEB"
echo "$DEB"
