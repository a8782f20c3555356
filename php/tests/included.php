<?php
// Included by include.php: spins at top level, outside any function, and on until a sample has
// been taken here (a loaded machine can leave the tick thread unscheduled for the first 8
// million turns); a tick thread that never ticks fails after 20 s.
$x = 0;
$start = microtime(true);
for ($i = 0; $i < 8000000 || $i % 100000 !== 0 || forkprof_stats()['samples'] < 1; $i++) {
    $x = ($x + $i) & 0xffff;
    if ($i % 100000 === 0 && microtime(true) - $start >= 20) {
        fwrite(STDERR, "included.php: no sample taken in 20 s\n");
        exit(6);
    }
}
