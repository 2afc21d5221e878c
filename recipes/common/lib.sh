# Shell helpers shared by the spkver recipes: option parsing, logging, per-step ".done" markers and a small
# job pool. A recipe's run.sh declares its options as variables, lists them in `options`, then sources this
# file and calls `parse_options "$@"`.
#
#   log MSG...                     timestamped message on stderr
#   die MSG...                     log and exit 1
#   parse_options "$@"             "--some-name value" (or --some-name=value) sets variable some_name, which
#                                  must be listed in $options; --help prints $usage
#   stage_on N                     true when N lies in [stage, stop_stage]
#   submit NAME LOG CMD...         run CMD in the background (at most $nj at once) with its output in LOG,
#                                  unless $exp/.done/NAME exists; the marker is written when CMD succeeds
#   wait_jobs                      wait for every submitted job; exit 1 (naming the failed steps) if any failed
#   check_int NAME                 exit unless option NAME holds a positive integer

log() { echo "[$(date '+%H:%M:%S')] $*" >&2; }

die() {
  log "error: $*"
  exit 1
}

parse_options() {
  local name value var known
  while (($#)); do
    case "$1" in
      -h | --help) echo "$usage"; exit 0 ;;
      --*=*) name=${1%%=*}; value=${1#*=}; shift ;;
      --*) (($# >= 2)) || die "option $1 needs a value (see --help)"
           name=$1; value=$2; shift 2 ;;
      *) die "unexpected argument '$1': options are '--name value' (see --help)" ;;
    esac
    var=${name#--}
    var=${var//-/_}
    known=0
    for opt in "${options[@]}"; do [[ $opt == "$var" ]] && known=1; done
    ((known)) || die "unknown option $name (see --help)"
    printf -v "$var" '%s' "$value"
  done
}

stage_on() { ((stage <= $1 && $1 <= stop_stage)); }

is_done() { [[ -e $exp/.done/$1 ]]; }

_pool_pids=()
_pool_names=()
_pool_logs=()
_pool_failed=()

_reap_oldest() {
  local pid=${_pool_pids[0]} name=${_pool_names[0]} logf=${_pool_logs[0]}
  _pool_pids=("${_pool_pids[@]:1}")
  _pool_names=("${_pool_names[@]:1}")
  _pool_logs=("${_pool_logs[@]:1}")
  if wait "$pid"; then
    log "done: $name"
  else
    log "FAILED: $name; the end of $logf:"
    tail -n 25 "$logf" >&2 || true
    _pool_failed+=("$name")
  fi
}

submit() {
  local name=$1 logf=$2
  shift 2
  if is_done "$name"; then
    log "skip: $name (done; remove $exp/.done/$name to redo it)"
    return 0
  fi
  while ((${#_pool_pids[@]} >= nj)); do _reap_oldest; done
  ((${#_pool_failed[@]} == 0)) || return 0  # stop submitting after a failure; wait_jobs reports it
  mkdir -p "$(dirname "$logf")" "$exp/.done"
  log "run: $name (log: $logf)"
  ( "$@" && touch "$exp/.done/$name" ) >"$logf" 2>&1 &
  _pool_pids+=("$!")
  _pool_names+=("$name")
  _pool_logs+=("$logf")
}

wait_jobs() {
  while ((${#_pool_pids[@]})); do _reap_oldest; done
  if ((${#_pool_failed[@]})); then
    die "failed: ${_pool_failed[*]}"
  fi
}

check_int() {
  [[ ${!1} =~ ^[1-9][0-9]*$ ]] || die "--${1//_/-} must be a positive integer, got '${!1}'"
}
