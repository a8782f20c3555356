<?php
// For php/bench_exit.sh: ~100 ms of PHP work (so the process has samples, a last profile to
// hand over at exit), then the wall-clock time, in µs, at which the script ends. The shell
// reads its own clock once the process has exited: the difference is the shutdown.
function exit_bench_work(float $seconds): int {
    $end = microtime(true) + $seconds;
    $x = 0;
    do {
        for ($i = 0; $i < 2000; $i++) {
            $x = ($x + $i * 7) % 1000003;
        }
    } while (microtime(true) < $end);
    return $x;
}
exit_bench_work(0.1);
printf("%.0f\n", microtime(true) * 1e6);
