<?php
// One php-fpm request that reports the forkprof settings this worker sees and does ~4 ms of
// work, for ci/test-php.sh's per-pool check: "pid N service S period P running R".
require __DIR__ . '/app.php';
echo 'service ', ini_get('forkprof.service'), ' period ', ini_get('forkprof.period_ms'),
    ' running ', forkprof_stats()['running'], "\n";
