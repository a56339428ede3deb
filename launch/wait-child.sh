# shellcheck shell=bash
# Sourced by launch/mpirun.sh and launch/slurm/train.sbatch: waiting for a child while traps
# relay signals to it.

# wait_child PID: waits until background child PID has exited and sets rc to its exit status;
# the caller's traps run meanwhile and count the signals they handle in `caught`.
#
# Not a loop around `wait PID`: a trapped signal ends `wait` early with 128+n, a signal landing
# just after one `wait` returns ends the next at once although its trap has already run, and a
# child that exits while `wait` is being interrupted can lose its status (bash 5.2 then reports
# 255). A relay loop built that way reported exit 138 while the ranks were still checkpointing.
# So this polls with `read -t` (a sleep without a fork, cut short by signals) until the child is
# gone, then reads the status bash kept for it until two reads agree with no signal between.
wait_child() {
  local idle seen a b
  # A pipe that never carries data, held open for writing too, so `read` on it only times out.
  exec {idle}<> <(:)
  while kill -0 "$1" 2>/dev/null; do
    read -r -t 0.5 -u "$idle" _ || true
  done
  exec {idle}<&-
  while :; do
    seen="${caught:-0}"
    wait "$1" && a=0 || a=$?
    wait "$1" && b=0 || b=$?
    [ "$a" = "$b" ] && [ "$seen" = "${caught:-0}" ] && break
  done
  # shellcheck disable=SC2034 # read by the caller
  rc="$a"
}
