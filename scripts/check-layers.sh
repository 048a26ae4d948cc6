#!/usr/bin/env bash
# The layering rule (docs/architecture.md), in two parts:
# 1. no module below agent/src/agent/ imports `crate::agent`; only the top (cli.rs, main.rs)
#    may. The files that still do are listed in scripts/layering-exceptions.txt, for issue 16
#    to empty: a new upward import fails this check, and so does a listed file that no longer
#    has one (the list only shrinks).
# 2. no cycle between the other top-level modules of agent/src (scripts/module-cycles.py, with
#    its own shrink-only list, scripts/module-cycle-exceptions.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

allowed=scripts/layering-exceptions.txt
found=$(grep -rlE 'crate::agent(::|\b)' agent/src --include='*.rs' |
  grep -vE '^agent/src/(agent/|cli\.rs$|main\.rs$)' | sort || true)
listed=$(grep -vE '^\s*(#|$)' "$allowed" | sort || true)
status=0
for f in $(comm -23 <(echo "$found") <(echo "$listed")); do
  echo "check-layers: $f imports crate::agent, an upward dependency:" >&2
  grep -nE 'crate::agent(::|\b)' "$f" | sed 's/^/  /' >&2
  echo "  give it what it needs as a narrow trait or channel it owns (docs/architecture.md)" >&2
  status=1
done
for f in $(comm -13 <(echo "$found") <(echo "$listed")); do
  echo "check-layers: $f no longer imports crate::agent: take it off $allowed" >&2
  status=1
done
[ $status = 0 ] && echo "check-layers: no new upward import ($(echo "$listed" | grep -c .) files still listed)"
python3 scripts/module-cycles.py || status=1
exit $status
