#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, on loopback only, for running `curate-slurm` for real (tests marked slow,
# bench/curate_cluster.py). Debian/Ubuntu, as root:
#
#   apt-get update && apt-get install -y slurm-wlm munge     # once
#   scripts/slurm-local.sh start     # writes /etc/slurm/slurm.conf for this host, starts munged, slurmctld, slurmd
#   sinfo                            # partition "cpu", one node, idle
#   scripts/slurm-local.sh stop
#
# The node gets all of this machine's CPUs and 80% of its memory; jobs run as the submitting user in the submitting
# directory, so the run directory and the virtual environment are simply local paths.
set -euo pipefail

STATE=${SLURM_LOCAL_STATE:-/var/lib/slurm-local}
CONF=/etc/slurm/slurm.conf

start() {
    for bin in munged slurmctld slurmd sbatch; do
        command -v "$bin" >/dev/null || { echo "slurm-local: $bin not found (apt-get install -y slurm-wlm munge)" >&2; exit 2; }
    done
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    mkdir -p "$STATE/ctld" "$STATE/slurmd" /etc/slurm /run/munge /var/log/munge /var/lib/munge
    cat > "$CONF" <<EOF
# written by ledgerlm scripts/slurm-local.sh: one node, loopback only
ClusterName=ledgerlm-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldParameters=enable_configless
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MaxArraySize=100001
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    pgrep -x munged >/dev/null || su -s /bin/sh munge -c "munged" 2>/dev/null || munged --force
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 30); do  # wait for the node to register
        if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            sinfo
            return 0
        fi
        scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
        sleep 1
    done
    echo "slurm-local: the node did not come up; see $STATE/slurmctld.log and $STATE/slurmd.log" >&2
    exit 1
}

stop() {
    for d in slurmd slurmctld; do
        [ -f "$STATE/$d.pid" ] && kill "$(cat "$STATE/$d.pid")" 2>/dev/null || true
    done
    echo "slurm-local: stopped slurmd and slurmctld (munged left running)"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) sinfo && squeue ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
