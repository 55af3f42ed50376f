# Shared by the .ci scripts (sourced after `set -euo pipefail`).

# run CMD...: prints the command, then runs it.
run() {
  printf '+ %s\n' "$*"
  "$@"
}

# ci_venv NAME: where the CI keeps its venv NAME between runs.
ci_venv() {
  printf '%s\n' "${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/keygate-ci/$1"
}

# pip_venv VENV BIN WHAT PACKAGE...: makes VENV hold exactly PACKAGE... (pinned), remade only
# when VENV/bin/BIN is missing or the list differs from the one it was made with (kept in
# VENV/.keygate-ci-packages). WHAT names the tools in the log.
pip_venv() {
  local venv=$1 bin=$2 what=$3
  shift 3
  local stamp="$venv/.keygate-ci-packages" wanted="$*"
  if [[ ! -x "$venv/bin/$bin" || "$(cat "$stamp" 2> /dev/null || true)" != "$wanted" ]]; then
    echo "== installing $what into $venv"
    run python3 -m venv --clear "$venv"
    run "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    printf '%s\n' "$wanted" > "$stamp"
  fi
}
