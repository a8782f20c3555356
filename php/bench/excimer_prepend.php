<?php
// php/bench.sh's Excimer run: a wall-clock profile (EXCIMER_REAL) of the whole script at
// EXCIMER_PERIOD seconds, its log written at shutdown in the collapsed-stack format to
// EXCIMER_OUT, the way an application starts Excimer from an auto_prepend_file.
$forkprof_bench_excimer = new ExcimerProfiler();
$forkprof_bench_excimer->setEventType(EXCIMER_REAL);
$forkprof_bench_excimer->setPeriod((float)(getenv('EXCIMER_PERIOD') ?: 0.01));
$forkprof_bench_excimer->start();
register_shutdown_function(function () use ($forkprof_bench_excimer) {
    $forkprof_bench_excimer->stop();
    file_put_contents(getenv('EXCIMER_OUT') ?: '/dev/null', $forkprof_bench_excimer->getLog()->formatCollapsed());
});
