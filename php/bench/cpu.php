<?php
// A CPU-bound PHP workload for php/bench.sh: user-function recursion, string and array
// built-ins, closures. Prints, in ms: its wall time, the process's CPU time (user + system,
// every thread, getrusage) during the workload, and since the process started.
function fib(int $n): int { return $n < 2 ? $n : fib($n - 1) + fib($n - 2); }
function strings(int $n): int {
    $s = '';
    for ($i = 0; $i < $n; $i++) {
        $s .= md5((string)$i);
        if (strlen($s) > 4096) { $s = substr($s, 2048); }
    }
    return strlen($s);
}
function arrays(int $n): int {
    $a = [];
    for ($i = 0; $i < $n; $i++) { $a[] = ($i * 31) % 1009; }
    sort($a);
    return array_sum(array_map(fn ($x) => $x + 1, $a));
}
class Shape { public function __construct(public float $w, public float $h) {} public function area(): float { return $this->w * $this->h; } }
function objects(int $n): float {
    $t = 0.0;
    for ($i = 0; $i < $n; $i++) { $t += (new Shape($i, 2.5))->area(); }
    return $t;
}
function cpu_ms(): float {
    $ru = getrusage();
    return ($ru["ru_utime.tv_sec"] + $ru["ru_stime.tv_sec"]) * 1e3
        + ($ru["ru_utime.tv_usec"] + $ru["ru_stime.tv_usec"]) / 1e3;
}
$c0 = cpu_ms();
$t0 = hrtime(true);
$scale = (float)($argv[1] ?? 1); // php/bench.sh runs 1; a smaller scale suits callgrind
fib((int)round(27 + log($scale, 1.618)));
strings((int)(600000 * $scale));
arrays((int)(800000 * $scale));
objects((int)(1200000 * $scale));
$wall = (hrtime(true) - $t0) / 1e6;
$c1 = cpu_ms();
printf("%.1f %.1f %.1f\n", $wall, $c1 - $c0, $c1);
