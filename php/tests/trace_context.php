<?php
// Trace context from userland: samples taken while a span is set carry its labels; the
// endpoint registered after them (by local root span id) is in the profile too; samples after
// the context is cleared carry none. Each phase runs until the sampler has taken samples in it
// (at most 20 s), not for a fixed time. Usage: php trace_context.php
function samples_now(): int { return forkprof_stats()['samples']; }
function work_until_sampled(callable $unit, int $want): void {
    $start = samples_now();
    $deadline = microtime(true) + 20;
    while (samples_now() - $start < $want) {
        if (microtime(true) > $deadline) {
            fwrite(STDERR, "no samples taken in 20 s\n");
            exit(1);
        }
        $unit();
    }
}
function traced_work() { $x = 0; for ($i = 0; $i < 20000; $i++) { $x += $i % 7; } return $x; }
function untraced_work() { $x = 0; for ($i = 0; $i < 20000; $i++) { $x += $i % 5; } return $x; }

// A span id above PHP_INT_MAX comes as a decimal string, as ddtrace gives it.
if (!forkprof_set_trace_context('0af7651916cd43dd8448eb211c80319c', '12345678901234567890', 42)) {
    exit(2);
}
work_until_sampled('traced_work', 5);
forkprof_set_trace_context('', 0, 0);
work_until_sampled('untraced_work', 5);
// The request's endpoint, known at its end.
if (!forkprof_set_endpoint(42, 'GET /checkout')) {
    exit(3);
}
// Unreadable ids are refused with a warning, and change nothing.
if (@forkprof_set_trace_context('not hex', 1, 1) !== false || @forkprof_set_endpoint('x', 'e') !== false) {
    exit(4);
}
echo "ok\n";
