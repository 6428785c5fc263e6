#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine for the workflow's real SLURM test.
#
# WHY: the SLURM profile (profiles/slurm) can only be trusted if a real slurmctld/slurmd
# accepts, runs and reports the jobs Snakemake submits. This script installs slurm-wlm and
# munge with apt-get when they are missing, writes a slurm.conf for this host (accounting off,
# no cgroups, so it runs in a container as root), starts munged, slurmctld and slurmd, and
# waits until `sinfo` shows the node idle.
#
# It records what it started in $NG_SLURM_STATE (default /tmp/neuralgraph-slurm) so that
# tests/slurm/stop_cluster.sh stops exactly that and nothing else. If a cluster is already
# answering `sinfo` with an idle node, it starts nothing and records nothing.
#
# Usage: tests/slurm/start_cluster.sh   (as root; prints the partition name on success)
set -euo pipefail

STATE_DIR="${NG_SLURM_STATE:-/tmp/neuralgraph-slurm}"
SLURM_CONF_PATH="/etc/slurm/slurm.conf"
CONF_MARKER="# written by neuralgraph tests/slurm/start_cluster.sh"
PARTITION="debug"
WAIT_SECONDS="${NG_SLURM_WAIT:-90}"

log() { echo "[start_cluster] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"

install_packages_if_missing() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    log "installing slurm-wlm and munge with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >&2
}

node_is_idle() {
    sinfo -h -N -o "%T" 2>/dev/null | grep -qE '^(idle|mixed)'
}

ensure_munge_key() {
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating munge key"
        mkdir -p /etc/munge
        mungekey -c -f -k /etc/munge/munge.key
    fi
    chown -R munge:munge /etc/munge
    chmod 700 /etc/munge
    chmod 600 /etc/munge/munge.key
}

munge_works() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

start_munged() {
    if munge_works; then
        log "munged already running; leaving it alone"
        return
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 1 50); do
        munge_works && break
        sleep 0.1
    done
    munge_works || die "munged did not start (see /var/log/munge/munged.log)"
    cat /run/munge/munged.pid > "$STATE_DIR/munged.pid"
    log "munged started (pid $(cat "$STATE_DIR/munged.pid"))"
}

write_slurm_conf() {
    if [ -e "$SLURM_CONF_PATH" ] && ! grep -qF "$CONF_MARKER" "$SLURM_CONF_PATH"; then
        die "$SLURM_CONF_PATH exists and was not written by this script; refusing to overwrite it"
    fi
    local host cpus mem_mb
    host="$(hostname -s)"
    cpus="$(nproc)"
    # leave 1 GiB to the system; SLURM refuses jobs asking for more than RealMemory
    mem_mb=$(( $(free -m | awk '/^Mem:/ {print $2}') - 1024 ))
    mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/slurmd" /etc/slurm
    [ -e "$SLURM_CONF_PATH" ] || touch "$STATE_DIR/conf_created"
    cat > "$SLURM_CONF_PATH.tmp" <<EOF
$CONF_MARKER
ClusterName=neuralgraph
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$STATE_DIR/slurmctld.pidfile
SlurmdPidFile=$STATE_DIR/slurmd.pidfile
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$SLURM_CONF_PATH.tmp" "$SLURM_CONF_PATH"
    log "wrote $SLURM_CONF_PATH (node $host, $cpus CPUs, ${mem_mb} MB)"
}

start_daemon() {  # name, pidfile written by the daemon
    local name="$1" pidfile="$2"
    "/usr/sbin/$name" >>"$STATE_DIR/$name.stdout" 2>&1
    for _ in $(seq 1 50); do
        [ -s "$pidfile" ] && break
        sleep 0.1
    done
    [ -s "$pidfile" ] || die "$name did not start (see $STATE_DIR/$name.log)"
    cat "$pidfile" > "$STATE_DIR/$name.pid"
    log "$name started (pid $(cat "$STATE_DIR/$name.pid"))"
}

wait_for_idle_node() {
    local deadline=$(( $(date +%s) + WAIT_SECONDS ))
    local resumed=0
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if node_is_idle; then
            return 0
        fi
        # A node remembered as down from an earlier run needs an explicit resume.
        if [ "$resumed" -eq 0 ] && sinfo -h -N -o "%T" 2>/dev/null | grep -qE '^(down|drained|draining)'; then
            scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
            resumed=1
        fi
        sleep 1
    done
    sinfo -N -l >&2 || true
    die "node not idle after ${WAIT_SECONDS}s (logs in $STATE_DIR)"
}

main() {
    install_packages_if_missing
    if node_is_idle; then
        log "a SLURM cluster is already running with an idle node; starting nothing"
        echo "$PARTITION"
        return
    fi
    mkdir -p "$STATE_DIR"
    ensure_munge_key
    start_munged
    write_slurm_conf
    start_daemon slurmctld "$STATE_DIR/slurmctld.pidfile"
    start_daemon slurmd "$STATE_DIR/slurmd.pidfile"
    wait_for_idle_node
    log "cluster ready: $(sinfo -h -o '%P %a %D %T')"
    echo "$PARTITION"
}

main "$@"
