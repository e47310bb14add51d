#!/usr/bin/env bash
# Print the Depends: line of the .deb: the Debian packages owning the system libraries that
# the ELF files under DIR link to (libraries the bundle carries itself are not counted).
#   packaging/linux/shlib_depends.sh DIR
set -euo pipefail
dir="$1"
bundled="$(find "$dir" -name '*.so*' -printf '%f\n' | sort -u)"
find "$dir" -type f \( -name '*.so*' -o -perm -u+x \) -print0 \
    | xargs -0 file -N -F '|' | awk -F'|' '/ ELF /{print $1}' \
    | xargs -r -d '\n' ldd 2>/dev/null | awk '/=> \//{print $3}' | sort -u \
    | while read -r lib; do
        grep -qxF "$(basename "$lib")" <<<"$bundled" && continue
        dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true
      done | cut -d: -f1 | sort -u | { grep -v '^libc6$' || true; } \
    | { printf 'libc6 (>= 2.28)'; while read -r p; do printf ', %s' "$p"; done; echo; }
