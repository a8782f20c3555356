<?php
// One php-fpm request: about 4 ms of CPU in a function named after the worker's pid, so each
// worker's profile can be checked to hold its own requests and no other worker's.
function handle_request(): int {
    $x = 0;
    $end = microtime(true) + 0.004;
    do {
        for ($i = 0; $i < 500; $i++) {
            $x = ($x + $i * 13) % 1000003;
        }
    } while (microtime(true) < $end);
    return $x;
}
$pid = getmypid();
eval("function served_by_$pid() { return handle_request(); }");
("served_by_$pid")();
echo "pid $pid\n";
