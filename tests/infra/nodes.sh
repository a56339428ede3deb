#!/usr/bin/env bash
# Two (or more) "nodes" on this machine: network namespaces with their own addresses and host
# names on a bridge, and an rsh agent through which OpenMPI's mpirun starts its daemons inside
# them, so that a job runs as it would on separate hosts, its traffic crossing a real (virtual)
# link that tests can take down or slow down. Root only (namespaces, bridges, iptables).
#
#   tests/infra/nodes.sh up   [--name NAME] [--nodes N] [--subnet A.B.C] [--slots K] [--tcp-retries2 R]
#   tests/infra/nodes.sh down [--name NAME]                  removes all of it; safe to repeat
#   tests/infra/nodes.sh run  [--name NAME] [--nodes N] -- CMD...   up, CMD, then always down
#   tests/infra/nodes.sh link [--name NAME] HOST up|down     the cable of HOST, in or out
#   tests/infra/nodes.sh delay [--name NAME] HOST MS         MS more latency on HOST's link, each way
#   tests/infra/nodes.sh undelay [--name NAME] HOST
#   tests/infra/nodes.sh exec [--name NAME] HOST CMD...      CMD on HOST (head, node1, ...)
#   tests/infra/nodes.sh agent NAME HOST CMD...              mpirun's rsh agent (see below)
#
# `up` creates, for NAME (default "sagan", at most 12 of [a-z0-9]):
#   - namespaces NAME-node1 .. NAME-nodeN; in each, `lo` and `eth0` with A.B.C.(10+k)/24;
#   - bridge NAME-br in this (root) namespace with A.B.C.1/24 (mpirun's own daemon, here, must
#     reach the nodes' daemons), and a veth pair NAME-vk <-> eth0 of node k plugged into it;
#   - when iptables exists: an ACCEPT rule for bridged traffic in FORWARD (dockerd sets FORWARD's
#     policy to DROP and br_netfilter sends bridged frames through it: without the rule TCP
#     between the nodes hangs silently), tagged with a comment so that `down` finds it;
#   - the state directory /run/sagan-nodes/NAME (SAGAN_NODES_STATE overrides /run/sagan-nodes):
#       env          shell assignments: SAGAN_NODES_{NAME,DIR,HOSTS,SUBNET,BRIDGE,HOSTFILE}, and
#                    per node k SAGAN_NODES_ADDR_k, SAGAN_NODES_VETH_k (root side), SAGAN_NODES_NS_k
#       hostfile     an OpenMPI host file: "node1 slots=1" per node (--slots to change)
#       mpirun-args  one mpirun argument per line: the rsh agent, and both of OpenMPI's transports
#                    (its daemons' oob and the ranks' tcp btl) pinned to the bridge's subnet
# A subnet A.B.C is picked from 10.77.0-255 unless given: the first with no route here.
#
# Use:  tests/infra/nodes.sh up; . /run/sagan-nodes/sagan/env
#       mapfile -t a < "$SAGAN_NODES_DIR/mpirun-args"
#       mpirun "${a[@]}" --hostfile "$SAGAN_NODES_HOSTFILE" -np 2 hostname   # node1, node2
#       tests/infra/nodes.sh down
# or    tests/infra/nodes.sh run -- sh -c 'mpirun $(cat "$SAGAN_NODES_DIR/mpirun-args") ...'
#
# The agent: mpirun runs `AGENT HOST CMD...` to start its daemon on HOST, as it would run ssh.
# Here it enters HOST's namespace and a fresh UTS namespace named HOST, and runs CMD through sh
# as sshd would, so the daemon and the ranks it starts see HOST's address and host name.
#
# The head: a namespace NAME-head (A.B.C.2, host name "head") to run mpirun in as on a login
# node: `tests/infra/nodes.sh exec head mpirun ...`. mpirun can also run here in the root
# namespace; the difference shows when a node drops off the network. OpenMPI 4's mpirun has no
# heartbeat: after an abort it waits for every daemon, and for one that cannot be reached that
# lasts until TCP gives up retransmitting to it (net.ipv4.tcp_retries2, 15 by default: about 15
# minutes). That sysctl is per network namespace, so the head and the nodes get --tcp-retries2
# (default 5: about 13 s; both sides then also drop the dead connection, and the lost node's
# daemon exits), and the root namespace, which the whole machine uses, keeps its own.
#
# `delay` uses netem where the kernel has it (tc qdisc netem on both ends of HOST's veth);
# kernels built without it (CONFIG_NET_SCH_NETEM unset, as on this project's CI machines) get the
# same effect from NFQUEUE: iptables sends every bridged packet into or out of HOST's port to
# tests/infra/delay.py, which holds each one MS milliseconds and accepts it. It prints which.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state_root="${SAGAN_NODES_STATE:-/run/sagan-nodes}"
python="${SAGAN_PYTHON:-python3}"

say() { echo "nodes.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, bridges, iptables)"
  command -v ip >/dev/null || die "ip not found (Debian: apt-get install iproute2)"
  command -v unshare >/dev/null || die "unshare not found (Debian: util-linux)"
}

check_name() {
  [[ "$1" =~ ^[a-z0-9]{1,12}$ ]] || die "name '$1': 1 to 12 of [a-z0-9] (interface names are at most 15 characters)"
}

# The comment on every iptables rule of NAME, so that `down` removes exactly those.
tag() { echo "sagan-nodes:$1"; }

# NFQUEUE number for NAME's delays: a stable number per name, away from small ones others use.
queue_of() { echo $((1000 + $(cksum <<<"$1" | cut -d' ' -f1) % 60000)); }

# Rule numbers (highest first) of FORWARD rules tagged for NAME.
tagged_rules() {
  local t i=0 line
  t="$(tag "$1")"
  iptables -w -S FORWARD | while IFS= read -r line; do
    # -S prints the policy (-P) first, then the rules in order: rule k is the k-th -A line.
    [[ "$line" == -A* ]] || continue
    i=$((i + 1))
    if [[ "$line" =~ --comment\ \"?${t}(\"|\ |$) ]]; then echo "$i"; fi
  done | sort -rn
}

remove_rules() {
  command -v iptables >/dev/null || return 0
  local n
  for n in $(tagged_rules "$1"); do
    iptables -w -D FORWARD "$n"
  done
}

# Picks a /24 in 10.77.0.0/16 that nothing here routes (only the default route matches it).
pick_subnet() {
  local c
  for c in $(seq 0 255); do
    if ! ip -4 route show to match "10.77.$c.1" | grep -vq '^default'; then
      echo "10.77.$c"
      return 0
    fi
  done
  die "no free /24 in 10.77.0.0/16; pass --subnet A.B.C"
}

# Plugs a new namespace NAME-HOST into the bridge as ADDR: a veth pair, NAME-V here (V: the node
# number, or h for the head) and eth0 there, plus lo; its TCP gives up after RETRIES2 retries.
add_host() {
  local name="$1" host="$2" v="$3" addr="$4" retries2="$5"
  local ns="$name-$host" veth="$name-v$v"
  ip netns add "$ns"
  ip link add "$veth" type veth peer name "$name-e$v" netns "$ns"
  ip -n "$ns" link set "$name-e$v" name eth0
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  ip netns exec "$ns" sysctl -q -w "net.ipv4.tcp_retries2=$retries2"
  ip link set "$veth" master "$name-br"
  ip link set "$veth" up
}

cmd_up() {
  local name="$1" nodes="$2" subnet="$3" slots="$4" retries2="$5"
  need_root
  check_name "$name"
  [[ "$nodes" =~ ^[1-9]$ ]] || die "--nodes: 1 to 9"
  [[ "$slots" =~ ^[1-9][0-9]*$ ]] || die "--slots: a positive integer"
  [[ "$retries2" =~ ^[1-9][0-9]?$ ]] || die "--tcp-retries2: 1 to 99"
  local dir="$state_root/$name" br="$name-br"
  mkdir -p "$state_root"
  # One `up` at a time picks subnets and names (two tests starting together must not collide).
  exec 9>"$state_root/.lock"
  flock 9
  if [ -e "$dir" ] || ip link show "$br" >/dev/null 2>&1 || compgen -G "/run/netns/$name-*" >/dev/null; then
    die "nodes '$name' exist already (tests/infra/nodes.sh down --name $name)"
  fi
  if [ -n "$subnet" ]; then
    [[ "$subnet" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "--subnet: three numbers, e.g. 10.77.5"
  else
    subnet="$(pick_subnet)"
  fi
  mkdir -p "$dir"
  # Whatever fails or interrupts from here on, on_exit leaves nothing half made.
  made=1 up_in_progress=1

  ip link add "$br" type bridge
  ip addr add "$subnet.1/24" dev "$br"
  ip link set "$br" up
  if command -v iptables >/dev/null; then
    iptables -w -I FORWARD -i "$br" -o "$br" -m comment --comment "$(tag "$name")" -j ACCEPT
  fi
  add_host "$name" head h "$subnet.2" "$retries2"
  local k hosts="" env
  env="SAGAN_NODES_NAME=$name"$'\n'"SAGAN_NODES_DIR=$dir"$'\n'"SAGAN_NODES_SUBNET=$subnet.0/24"
  env+=$'\n'"SAGAN_NODES_BRIDGE=$br"$'\n'"SAGAN_NODES_HOSTFILE=$dir/hostfile"
  env+=$'\n'"SAGAN_NODES_HEAD_ADDR=$subnet.2"$'\n'"SAGAN_NODES_HEAD_NS=$name-head"
  : >"$dir/hostfile"
  for k in $(seq 1 "$nodes"); do
    add_host "$name" "node$k" "$k" "$subnet.$((10 + k))" "$retries2"
    echo "node$k slots=$slots" >>"$dir/hostfile"
    hosts+="${hosts:+ }node$k"
    env+=$'\n'"SAGAN_NODES_ADDR_$k=$subnet.$((10 + k))"$'\n'"SAGAN_NODES_VETH_$k=$name-v$k"$'\n'"SAGAN_NODES_NS_$k=$name-node$k"
  done
  env+=$'\n'"SAGAN_NODES_HOSTS='$hosts'"
  echo "$env" >"$dir/env"
  # Transports pinned to the bridge: the host's own interfaces lead nowhere near the nodes.
  printf '%s\n' --mca plm_rsh_agent "$here/nodes.sh agent $name" \
    --mca oob_tcp_if_include "$subnet.0/24" \
    --mca btl_tcp_if_include "$subnet.0/24" \
    --mca btl self,tcp >"$dir/mpirun-args"

  # Every host must reach every other by TCP: a connect to a closed port that is refused proves
  # that packets pass both ways; one that times out means something (FORWARD) drops them.
  local a b all=("head:$subnet.2")
  for k in $(seq 1 "$nodes"); do all+=("node$k:$subnet.$((10 + k))"); done
  for a in "${all[@]}"; do
    for b in "${all[@]}"; do
      [ "$a" != "$b" ] || continue
      local out
      out="$(ip netns exec "$name-${a%%:*}" timeout 5 bash -c "echo > /dev/tcp/${b#*:}/9" 2>&1 || true)"
      if [[ "$out" != *"refused"* ]]; then
        say "${a%%:*} cannot reach ${b%%:*} over TCP (${out:-timed out}); is FORWARD dropping bridged traffic?"
        false
      fi
    done
  done
  up_in_progress=0
  flock -u 9
  say "up: $nodes node(s) '$name' on $subnet.0/24 (head $hosts); state in $dir"
  echo "$dir/env"
}

cmd_down() {
  local name="$1"
  need_root
  check_name "$name"
  local dir="$state_root/$name"
  cmd_undelay_all "$name"
  local ns pids left
  # Processes first: a namespace with processes in it outlives `ip netns del`.
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$name-(head|node[0-9]+)$" || true); do
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086 # a list of pids
      kill -KILL $pids 2>/dev/null || true
      for _ in $(seq 50); do
        left="$(ip netns pids "$ns" 2>/dev/null || true)"
        [ -n "$left" ] || break
        sleep 0.1
      done
      [ -z "$left" ] || say "processes still in $ns: $left"
    fi
    ip netns del "$ns"
  done
  local link
  for link in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^$name-(br|v[0-9h])$" || true); do
    ip link del "$link" 2>/dev/null || true
  done
  remove_rules "$name"
  rm -rf "$dir"
  say "down: '$name' removed"
}

# The node number of HOST ("node2" -> 2) in NAME, which must exist.
node_index() {
  local name="$1" host="$2"
  [[ "$host" =~ ^node([1-9])$ ]] || die "unknown host '$host' (node1, node2, ...)"
  [ -e "/run/netns/$name-$host" ] || die "no host '$host' in '$name' (tests/infra/nodes.sh up --name $name)"
  echo "${BASH_REMATCH[1]}"
}

cmd_link() {
  local name="$1" host="$2" state="$3"
  need_root
  [[ "$state" == up || "$state" == down ]] || die "link: up or down, not '$state'"
  local k
  k="$(node_index "$name" "$host")"
  ip link set "$name-v$k" "$state"
  say "link of $host: $state"
}

cmd_delay() {
  local name="$1" host="$2" ms="$3"
  need_root
  [[ "$ms" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "delay: milliseconds, not '$ms'"
  local k veth dir="$state_root/$name"
  k="$(node_index "$name" "$host")"
  veth="$name-v$k"
  if tc qdisc replace dev "$veth" root netem delay "${ms}ms" 2>/dev/null; then
    ip netns exec "$name-$host" tc qdisc replace dev eth0 root netem delay "${ms}ms"
    echo netem >"$dir/delay-$host"
    say "delay of $host's link: ${ms} ms each way (netem)"
    return 0
  fi
  command -v iptables >/dev/null || die "this kernel has no netem and iptables is missing for the NFQUEUE fallback"
  [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0)" = 1 ] ||
    die "this kernel has no netem, and bridged traffic does not pass iptables (net.bridge.bridge-nf-call-iptables != 1) for the NFQUEUE fallback"
  local q ready="$dir/delay-$host.ready"
  q="$(queue_of "$name-$host")"
  rm -f "$ready"
  # Bound to its queue before any packet is sent there: NFQUEUE drops when no one listens.
  setsid "$python" "$here/delay.py" --queue "$q" --ms "$ms" --ready "$ready" </dev/null >"$dir/delay-$host.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    [ -s "$ready" ] && break
    kill -0 "$pid" 2>/dev/null || die "delay.py failed: $(cat "$dir/delay-$host.log")"
    sleep 0.05
  done
  [ -s "$ready" ] || die "delay.py did not bind queue $q"
  echo "nfqueue $pid" >"$dir/delay-$host"
  iptables -w -I FORWARD -m physdev --physdev-in "$veth" -m comment --comment "$(tag "$name")" -j NFQUEUE --queue-num "$q"
  iptables -w -I FORWARD -m physdev --physdev-is-bridged --physdev-out "$veth" -m comment --comment "$(tag "$name")" -j NFQUEUE --queue-num "$q"
  say "delay of $host's link: ${ms} ms each way (NFQUEUE + delay.py: this kernel has no netem)"
}

cmd_undelay() {
  local name="$1" host="$2" dir="$state_root/$1"
  local f="$dir/delay-$host" kind pid
  [ -e "$f" ] || return 0
  read -r kind pid <"$f"
  if [ "$kind" = netem ]; then
    tc qdisc del dev "$name-v${host#node}" root 2>/dev/null || true
    ip netns exec "$name-$host" tc qdisc del dev eth0 root 2>/dev/null || true
  else
    # The NFQUEUE rules go first (packets sent to a queue no one reads are dropped); they are
    # NAME's only tagged rules besides the bridge's ACCEPT, which stays until `down`.
    local n q
    q="$(queue_of "$name-$host")"
    if command -v iptables >/dev/null; then
      for n in $(tagged_rules "$name"); do
        if iptables -w -S FORWARD "$n" | grep -q -- "--queue-num $q\b"; then iptables -w -D FORWARD "$n"; fi
      done
    fi
    if [ -n "$pid" ] && grep -q delay.py "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f" "$f.ready" "$f.log"
  say "delay of $host's link removed"
}

cmd_undelay_all() {
  local name="$1" f
  for f in "$state_root/$name"/delay-node[0-9]; do
    [ -e "$f" ] || continue
    cmd_undelay "$name" "$(basename "$f" | sed 's/^delay-//')"
  done
}

cmd_exec() {
  local name="$1" host="$2"
  shift 2
  [ -e "/run/netns/$name-$host" ] || die "no host '$host' in '$name' (tests/infra/nodes.sh up --name $name)"
  # shellcheck disable=SC2016 # $0 and $@ belong to the inner shell
  exec ip netns exec "$name-$host" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$host" "$@"
}

cmd_agent() {
  local name="$1" host="$2"
  shift 2
  [ -e "/run/netns/$name-$host" ] || die "agent: no host '$host' in '$name'"
  # As sshd would: CMD's words joined and run by a shell (mpirun's daemon command line holds
  # assignments and `;`), under HOST's host name. The agent itself stays on the launching side, as
  # an ssh client does, so that killing every process of HOST leaves it to report which host's
  # session died: mpirun's own message for a daemon whose agent failed names no host.
  local rc=0
  # shellcheck disable=SC2016 # $0 and $1 belong to the inner shell
  ip netns exec "$name-$host" unshare --uts sh -c 'hostname "$0" && exec sh -c "$1"' "$host" "$*" || rc=$?
  if ((rc > 128)); then
    echo "nodes.sh agent: the session on host $host was ended by signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null || echo '?'))" >&2
  elif ((rc != 0)); then
    echo "nodes.sh agent: the session on host $host exited with status $rc" >&2
  fi
  exit "$rc"
}

cmd_run() {
  local name="$1" nodes="$2" subnet="$3" slots="$4" retries2="$5"
  shift 5
  (($#)) || die "run: no command"
  run_mode=1
  cmd_up "$name" "$nodes" "$subnet" "$slots" "$retries2" >/dev/null
  set -a
  # shellcheck disable=SC1090,SC1091 # written by cmd_up
  . "$state_root/$name/env"
  set +a
  "$@" &
  run_child=$!
  local rc=0
  wait "$run_child" || rc=$?
  run_child=""
  return "$rc"
}

# The one EXIT trap (INT, TERM and HUP exit through it): an `up` cut short, by an error or a
# signal, removes what it made; `run` removes its nodes whatever happens, stopping its command
# first. An `up` refused because NAME exists has made nothing and removes nothing.
# shellcheck disable=SC2317 # called from the trap
on_exit() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$run_child" ] && kill -0 "$run_child" 2>/dev/null; then kill -TERM "$run_child" 2>/dev/null || true; fi
  if ((up_in_progress)); then
    say "up failed; removing what was made"
    cmd_down "$name" >/dev/null 2>&1 || true
    ((rc)) || rc=1
  elif ((run_mode && made)); then
    cmd_down "$name" || rc=1
  fi
  exit "$rc"
}
made=0 up_in_progress=0 run_mode=0 run_child=""
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

(($#)) || {
  usage
  exit 2
}
sub="$1"
shift
if [ "$sub" = agent ]; then
  (($# >= 3)) || die "agent: NAME HOST CMD..."
  cmd_agent "$@"
fi
name="${SAGAN_NODES_NAME:-sagan}" nodes=2 subnet="" slots=1 retries2=5
while (($#)); do
  case "$1" in
    --name) name="${2:?}"; shift 2 ;;
    --name=*) name="${1#*=}"; shift ;;
    --nodes) nodes="${2:?}"; shift 2 ;;
    --nodes=*) nodes="${1#*=}"; shift ;;
    --subnet) subnet="${2:?}"; shift 2 ;;
    --subnet=*) subnet="${1#*=}"; shift ;;
    --slots) slots="${2:?}"; shift 2 ;;
    --slots=*) slots="${1#*=}"; shift ;;
    --tcp-retries2) retries2="${2:?}"; shift 2 ;;
    --tcp-retries2=*) retries2="${1#*=}"; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
case "$sub" in
  up) (($# == 0)) || die "up: unexpected '$1'"; cmd_up "$name" "$nodes" "$subnet" "$slots" "$retries2" ;;
  down) (($# == 0)) || die "down: unexpected '$1'"; need_root; cmd_down "$name" ;;
  run) cmd_run "$name" "$nodes" "$subnet" "$slots" "$retries2" "$@" ;;
  exec) (($# >= 2)) || die "exec: HOST CMD..."; need_root; cmd_exec "$name" "$@" ;;
  link) (($# == 2)) || die "link: HOST up|down"; cmd_link "$name" "$1" "$2" ;;
  delay) (($# == 2)) || die "delay: HOST MS"; need_root; cmd_delay "$name" "$1" "$2" ;;
  undelay) (($# == 1)) || die "undelay: HOST"; need_root; node_index "$name" "$1" >/dev/null; cmd_undelay "$name" "$1" ;;
  -h | --help | help) usage ;;
  *) die "unknown command '$sub' (see --help)" ;;
esac
