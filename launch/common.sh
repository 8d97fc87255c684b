# shellcheck shell=bash
# Shared helpers for the launch/ scripts; sourced, not run.
#
# Every script accepts -h/--help (prints its header) and -n/--dry-run (or
# DRY_RUN=1): print each command it would run, quoted so it can be pasted
# into a shell, and run nothing.

# The repository this script belongs to.
# shellcheck disable=SC2034  # used by the scripts that source this file
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The running script, absolute (scripts may cd away before printing --help).
SCRIPT_PATH="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

# Arguments the caller gave after the script's own options (set by parse_common_args).
EXTRA_ARGS=()

usage() {
  # The script's leading comment block, without the shebang, #SBATCH lines and the "# " prefix.
  sed -n '2,${/^#SBATCH/q;/^#/!q;s/^# \{0,1\}//;p;}' "$SCRIPT_PATH"
}

parse_common_args() {
  EXTRA_ARGS=()
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      -n | --dry-run) DRY_RUN=1 ;;
      --) shift; EXTRA_ARGS+=("$@"); break ;;
      *) EXTRA_ARGS+=("$1") ;;
    esac
    shift
  done
  DRY_RUN="${DRY_RUN:-0}"
}

die() {
  echo "error: $*" >&2
  echo "run '$0 --help' for the variables it needs" >&2
  exit 2
}

require() {
  # require VAR...: fail with one message naming every unset variable.
  local missing=() name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || missing+=("$name")
  done
  ((${#missing[@]} == 0)) || die "set ${missing[*]}"
}

quote() {
  # Shell-quote each argument, leaving plain words as they are.
  local out=() arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=("$arg")
    else
      out+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

run() {
  # run CMD ARGS...: print it; run it unless this is a dry run.
  echo "+ $(quote "$@")"
  if [[ "$DRY_RUN" != 1 ]]; then
    "$@"
  fi
}

location_flags() {
  # Sets LOCATION to --zone=$ZONE, plus --project=$PROJECT when PROJECT is set
  # (otherwise gcloud uses its configured project).
  LOCATION=("--zone=$ZONE")
  if [[ -n "${PROJECT:-}" ]]; then
    LOCATION+=("--project=$PROJECT")
  fi
}

tpu_ssh() {
  # tpu_ssh WORKERS REMOTE_COMMAND: run it on those workers ("all": every
  # worker of the slice at once; "0": the first one).
  location_flags
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOCATION[@]}" --worker="$1" --command="$2"
}
