#!/usr/bin/env bash
# The reload of ci/test-php.sh's Swoole case, run by client.go half-way through the load, when
# no request is in flight: waits until the server is quiet, then sends SIGUSR1 to the master.
#
# Quiet: every task handed out so far has run (tasks.log), and the manager (the master itself
# in SWOOLE_BASE) has its 4 workers and 2 task workers and is blocked in wait(). Swoole's
# manager has no event loop and runs its SIGUSR1 callback inside the signal handler, which
# allocates: a SIGUSR1 that lands while the manager is inside fork() (re-spawning a worker
# recycled at its max_request), where the C library holds its allocator's locks, deadlocks the
# manager for good (seen once in about 50 runs: the manager in malloc, in the signal handler,
# on top of _Fork; the window is any fork the manager makes). Blocked in wait() with every
# worker present, it forks nothing until a worker exits, and none does without a request or a
# task to run.
#
# Usage: reload.sh MASTER_PID MODE DIR   (TASKS_DISPATCHED in the environment)
set -euo pipefail
master=$1 mode=$2 dir=$3
deadline=$((SECONDS + 20))
until [ "$(grep -c . "$dir/tasks.log" 2>/dev/null || echo 0)" -ge "${TASKS_DISPATCHED:?}" ]; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "reload: $TASKS_DISPATCHED tasks handed out, $(grep -c . "$dir/tasks.log") run after 20 s" >&2; exit 1; }
  sleep 0.01
done
if [ "$mode" = base ]; then
  manager=$master
else
  manager=$(pgrep -P "$master")
  [ "$(wc -w <<<"$manager")" = 1 ] || { echo "reload: expected one manager under $master: $manager" >&2; exit 1; }
fi
quiet() {
  local kids state
  kids=$(pgrep -P "$manager" | wc -l)
  state=$(cat "/proc/$manager/wchan" 2>/dev/null || true)
  [ "$kids" = 6 ] && [ "$state" = do_wait ]
}
until quiet; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "reload: manager $manager not quiet after 20 s: $(pgrep -P "$manager" | wc -l) children, in $(cat "/proc/$manager/wchan")" >&2; exit 1; }
  sleep 0.01
done
kill -USR1 "$master"
