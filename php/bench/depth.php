<?php
// A stack of exactly $argv[1] frames ({main} + recursion + the leaf loop), spinning at the leaf
// for $argv[2] seconds; prints the extension's sample count and the median cost of a sample
// (stack walk + record + the clock reads), measured inside the extension.
function down(int $n, float $end) {
    if ($n > 0) { return down($n - 1, $end); }
    $x = 0;
    do { for ($i = 0; $i < 5000; $i++) { $x = ($x + $i) & 0xffff; } } while (microtime(true) < $end);
    return $x;
}
$depth = (int)$argv[1];
down($depth - 2, microtime(true) + (float)$argv[2]);
$s = forkprof_stats();
printf("%d %d %d %d\n", $depth, $s['samples'], $s['sample_cost_ns_median'], $s['sample_cost_ns_mean']);
