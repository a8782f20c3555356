#!/usr/bin/env bash
# Sends N FastCGI requests for app.php to the pool, one after another, and prints each
# response's "pid N" line. Usage: client.sh SOCKET SCRIPT N
set -euo pipefail
sock=$1 script=$2 n=$3
for ((i = 0; i < n; i++)); do
  SCRIPT_FILENAME=$script SCRIPT_NAME=/app.php REQUEST_METHOD=GET QUERY_STRING="i=$i" \
    cgi-fcgi -bind -connect "$sock" | grep -a '^pid ' || { echo "request $i failed" >&2; exit 1; }
done
