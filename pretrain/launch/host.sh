#!/usr/bin/env bash
# Runs one host's training process on a TPU VM, detached from the ssh session that
# started it (pretrain.launch starts it with `nohup setsid ... &`), and reports how it ended.
#
#   host.sh STATUS_URI -- COMMAND [ARG...]
#
# The command's output goes to LOG_DIR/worker-N.log on the VM's disk, copied to
# STATUS_URI/worker-N.log every LOG_SYNC_S seconds and at the end; its exit status is
# written to STATUS_URI/worker-N.exit ("N STATUS"), which the launcher polls. Nothing
# pipes the command's output (no `| tee`), so its exit status is the one reported and
# the one this script exits with. SIGTERM (pretrain.launch --action=stop) is passed on.
set -uo pipefail

status_uri=${1:?usage: host.sh STATUS_URI -- COMMAND [ARG...]}
shift
[[ ${1:-} == "--" ]] && shift
(( $# > 0 )) || { echo "host.sh: no command" >&2; exit 2; }

# The worker number: from the TPU VM's metadata, else from its host name (t1v-n-...-w-N),
# else the host name itself (the launcher reads worker ids as strings).
worker=${WORKER_ID:-$(curl -sf -m 10 -H Metadata-Flavor:Google \
  http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number)}
if [[ -z $worker ]]; then
  worker=$(hostname)
  [[ $worker =~ -w-([0-9]+)$ ]] && worker=${BASH_REMATCH[1]}
fi
log_dir=${LOG_DIR:-$HOME/gemma-pretrain-logs}
mkdir -p "$log_dir"
log=$log_dir/worker-$worker.log
echo $$ >"$log_dir/train.pid"  # setsid made this the group leader: kill -- -PID stops all

sync_log() { gcloud storage cp --quiet "$log" "$status_uri/worker-$worker.log" >/dev/null 2>&1; }

echo "$(date -u +%FT%TZ) worker $worker: $*" >"$log"
"$@" >>"$log" 2>&1 &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
( while sleep "${LOG_SYNC_S:-60}"; do sync_log; done ) &
syncer=$!

wait "$child"
code=$?
while kill -0 "$child" 2>/dev/null; do  # interrupted by a signal: wait for the real exit
  wait "$child"
  code=$?
done
kill "$syncer" 2>/dev/null
echo "$(date -u +%FT%TZ) worker $worker: exit status $code" >>"$log"
sync_log || echo "host.sh: could not copy $log to $status_uri" >&2
echo "$worker $code" | gcloud storage cp --quiet - "$status_uri/worker-$worker.exit" >/dev/null \
  || echo "host.sh: could not write $status_uri/worker-$worker.exit" >&2
rm -f "$log_dir/train.pid"
exit "$code"
