#!/usr/bin/env bash
# Sends N FastCGI requests for app.php to the pool, one after another, and prints each
# response's "pid N" line. Usage: client.sh SOCKET SCRIPT N [IDLE_SECONDS]
# IDLE_SECONDS (default 0) spaces the requests: the worker idles that long between two, as a
# php-fpm worker of a lightly loaded site does (the shape of the workload, not a wait for
# anything).
set -euo pipefail
sock=$1 script=$2 n=$3 idle=${4:-0}
for ((i = 0; i < n; i++)); do
  [ "$i" = 0 ] || [ "$idle" = 0 ] || sleep "$idle"
  SCRIPT_FILENAME=$script SCRIPT_NAME=/app.php REQUEST_METHOD=GET QUERY_STRING="i=$i" \
    cgi-fcgi -bind -connect "$sock" | grep -a '^pid ' || { echo "request $i failed" >&2; exit 1; }
done
