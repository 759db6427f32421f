#!/usr/bin/env bash
# The project's one reader of deploy/packages.txt and its one "is this Debian package
# installed" check, used by deploy/setup-host.sh and tests/lab/labbuild.py (bash, not Python:
# it has to work before set-up has installed python3).
#
#   packages.sh list GROUP...        the groups' entries (package, package/suite or @step), once each
#   packages.sh table                every entry as "group entry [what it uses ...]"
#   packages.sh installed PKG...     exit 0 if every PKG is installed, else print those that are not
#   packages.sh missing GROUP...     the groups' packages that are not installed
#   packages.sh install GROUP... [-- PKG...]
#                                    install what is missing (as root), then check it is installed
#
# dpkg-query honours DPKG_ADMINDIR, so the check can be pointed at a scratch status file.
set -euo pipefail

LIST=${VFIOWATCH_PACKAGES_LIST:-"$(dirname "$(readlink -f "$0")")/packages.txt"}

die() { echo "packages: $*" >&2; exit 2; }

# Prints "group entry rest..." for each entry line of the list (comments and blanks dropped).
table() {
  local line group entry rest
  [ -r "$LIST" ] || die "cannot read $LIST"
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    read -r group entry rest <<<"$line" || true
    [ -n "${group:-}" ] || continue
    [ -n "${entry:-}" ] || die "$LIST: '$group' has no package (a line is: group package [uses...])"
    echo "$group $entry${rest:+ $rest}"
  done <"$LIST"
}

# Prints the entries of the named groups, each once, in the list's order.
list() {
  [ $# -gt 0 ] || die "which groups? ($(table | cut -d' ' -f1 | sort -u | tr '\n' ' '))"
  local want group entry rest seen=" " found
  for want in "$@"; do
    found=no
    while read -r group entry rest; do
      [ "$group" = "$want" ] || continue
      found=yes
      case "$seen" in *" $entry "*) continue ;; esac
      seen+="$entry "
      echo "$entry"
    done < <(table)
    [ "$found" = yes ] || die "no group '$want' in $LIST (groups: $(table | cut -d' ' -f1 | sort -u | tr '\n' ' '))"
  done
}

# dpkg's Status is "<wanted> <error> <state>". Installed means state "installed" without an
# error flag, and wanted "install" or "hold" (held packages are installed too). Not installed:
# "unknown ok not-installed" (dpkg knows the name: it ends with "installed", the old bug),
# "deinstall ok config-files", "install ok half-installed", "install reinstreq ...", and a
# name dpkg has never heard of (dpkg-query fails).
is_installed() {
  local status
  status=$(dpkg-query -W -f='${Status}\n' -- "$1" 2>/dev/null) || return 1
  grep -qxE '(install|hold) ok installed' <<<"$status"
}

installed() {
  local p rc=0
  for p in "$@"; do
    is_installed "${p%%/*}" || { echo "$p"; rc=1; }
  done
  return $rc
}

missing() {
  local entries e
  entries=$(list "$@")
  for e in $entries; do
    case "$e" in @*) continue ;; esac
    is_installed "${e%%/*}" || echo "$e"
  done
}

install() {
  local groups=() extra=() e
  while [ $# -gt 0 ]; do
    if [ "$1" = -- ]; then shift; extra=("$@"); break; fi
    groups+=("$1"); shift
  done
  local need=() out=""
  [ ${#groups[@]} -eq 0 ] || out=$(missing "${groups[@]}")
  [ -z "$out" ] || mapfile -t need <<<"$out"
  for e in "${extra[@]}"; do is_installed "${e%%/*}" || need+=("$e"); done
  [ ${#need[@]} -gt 0 ] || return 0
  [ "$(id -u)" = 0 ] || die "run as root to install ${need[*]}"
  echo "packages: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  local plain=() suites=() suite
  for e in "${need[@]}"; do
    case "$e" in
      */*) case " ${suites[*]} " in *" ${e#*/} "*) ;; *) suites+=("${e#*/}") ;; esac ;;
      *) plain+=("$e") ;;
    esac
  done
  [ ${#plain[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${plain[@]}" >/dev/null
  for suite in "${suites[@]}"; do
    local these=()
    for e in "${need[@]}"; do
      if [ "${e#*/}" = "$suite" ] && [ "$e" != "$suite" ]; then these+=("${e%/*}"); fi
    done
    apt-get install -y -qq --no-install-recommends -t "$suite" "${these[@]}" >/dev/null
  done
  local still
  still=$(installed "${need[@]}") || die "still not installed after apt-get install: $still"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  list) list "$@" ;;
  table) table ;;
  installed) [ $# -gt 0 ] || die "which packages?"; installed "$@" ;;
  missing) missing "$@" ;;
  install) install "$@" ;;
  *) die "usage: packages.sh list|table|installed|missing|install ... (see the top of $0)" ;;
esac
