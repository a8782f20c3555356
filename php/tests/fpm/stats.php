<?php
// The worker's forkprof counters, one "name value" a line (for ci/test-php.sh's short-request
// check).
foreach (['pid', 'ticks', 'samples', 'request_time_ns', 'record_errors'] as $k) {
    echo $k, ' ', forkprof_stats()[$k] ?? -1, "\n";
}
