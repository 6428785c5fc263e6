#!/usr/bin/env bash
# Stop the one-node SLURM cluster that tests/slurm/start_cluster.sh started, and only that.
#
# WHY: other processes on this machine may run their own munged or SLURM daemons; killing by
# name would break them. start_cluster.sh records the pid of every daemon it started in
# $NG_SLURM_STATE; this script signals exactly those pids (after checking each still runs the
# expected program), and removes /etc/slurm/slurm.conf only if start_cluster.sh created it.
set -euo pipefail

STATE_DIR="${NG_SLURM_STATE:-/tmp/neuralgraph-slurm}"
SLURM_CONF_PATH="/etc/slurm/slurm.conf"

log() { echo "[stop_cluster] $*" >&2; }

stop_recorded() {  # name: stop the daemon whose pid start_cluster.sh recorded
    local name="$1" pidfile="$STATE_DIR/$1.pid" pid
    [ -s "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            [ -e "/proc/$pid" ] || break
            sleep 0.1
        done
        if [ -e "/proc/$pid" ]; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $name (pid $pid)"
    else
        log "$name (pid $pid) no longer running"
    fi
    rm -f "$pidfile"
}

if [ ! -d "$STATE_DIR" ]; then
    log "nothing recorded in $STATE_DIR; nothing to stop"
    exit 0
fi

# Cancel jobs left over from a test so slurmd does not leave orphans behind.
if [ -s "$STATE_DIR/slurmctld.pid" ]; then
    scancel --full --quiet --user=root 2>/dev/null || true
fi
stop_recorded slurmd
stop_recorded slurmctld
stop_recorded munged
if [ -e "$STATE_DIR/conf_created" ]; then
    rm -f "$SLURM_CONF_PATH" "$STATE_DIR/conf_created"
    log "removed $SLURM_CONF_PATH"
fi
