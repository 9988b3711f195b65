#!/usr/bin/env bash
# collect.sh -- write one partition-map test vector from a running real Aerospike CE cluster.
#
# Usage: collect.sh NAME COMMAND_NOTE PORT...
#   Waits (bounded: 120 s) until every node at PORT... answers `cluster-stable` with the same
#   cluster key for a cluster of that many nodes with migrations done, then writes
#   NAME.txt beside this script: a header (CE build, cluster key, the note saying how the
#   cluster was started, the configured replication-factor from AS_RF as for aerospike.sh)
#   and, per node, its node id and its raw `replicas` answer. Run it with the AS_RF the
#   cluster was started with.
#
# AS_SCRIPT: the aerospike.sh to ask (default /work/shared/anchors/aerospike.sh).
#
# Only for making vectors: Apogee's tests read the .txt files and never need Aerospike.
set -eu
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
AS="${AS_SCRIPT:-/work/shared/anchors/aerospike.sh}"
name=$1; note=$2; shift 2
n=$#
for _ in $(seq 1 240); do
  keys=""; ok=1
  for p in "$@"; do
    k=$("$AS" info "$p" "cluster-stable:size=$n;ignore-migrations=false" || true)
    case "$k" in ""|ERROR*) ok=0 ;; esac
    keys="$keys $k"
    rem=$("$AS" info "$p" statistics | tr ';' '\n' | sed -n 's/^migrate_partitions_remaining=//p')
    [ "$rem" = "0" ] || ok=0
  done
  uniq=$(echo $keys | tr ' ' '\n' | sort -u | wc -l)
  [ $ok = 1 ] && [ "$uniq" = 1 ] && break
  ok=0; sleep 0.5
done
[ $ok = 1 ] || { echo "collect.sh: cluster on $* not stable within 120 s:$keys" >&2; exit 1; }
first=$1
out="$HERE/$name.txt"
{
  echo "# Partition map of a real Aerospike CE cluster, build $("$AS" info "$first" build), cluster key $(echo $keys | cut -d' ' -f1)."
  echo "# Started with: $note"
  echo "# configured replication-factor: ${AS_RF:-2}"
  echo "# Taken with: cluster/tests/vectors/collect.sh $name '<note>' $* (after cluster-stable with migrations done on every node)."
  echo "# One line per node: its node id (hex), a space, then its raw \`replicas\` answer: per namespace"
  echo "# ns:regime,replica-count,base64 bitmap per replica index (index 0 = master; bit 0x80 of byte 0 = partition 0)."
  for p in "$@"; do
    echo "$("$AS" info "$p" node) $("$AS" info "$p" replicas)"
  done
} > "$out"
echo "collect.sh: wrote $out"
