<?php
// The server of php/bench_swoole.sh: Swoole\Http\Server, SWOOLE_PROCESS, 4 workers,
// coroutines off, a CPU-bound handler (a fixed amount of work: recursion, strings, arrays,
// objects; about 0.25 ms of CPU on the machine of BENCHMARKS.md). Once $server->start() returns (SIGTERM), writes to OUT the CPU time,
// in microseconds, of the whole server: the master's own (every thread) plus its children's
// (the manager, and through it every worker and task worker, all waited for).
//
// Usage: php swoole_server.php PORT_FILE OUT
[$port_file, $out] = [$argv[1], $argv[2]];

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
function handle(): string {
    return (string)(fib(19) + strings(1200) + arrays(6000) + objects(6000));
}

function cpu_us(int $who): int {
    $ru = getrusage($who);
    return ($ru["ru_utime.tv_sec"] + $ru["ru_stime.tv_sec"]) * 1000000
        + $ru["ru_utime.tv_usec"] + $ru["ru_stime.tv_usec"];
}

$server = new Swoole\Http\Server('127.0.0.1', 0, SWOOLE_PROCESS);
$server->set([
    'worker_num' => 4,
    'enable_coroutine' => false,
    'log_file' => '/dev/null',
]);
$server->on('request', function ($req, $resp) {
    $resp->end(sprintf("pid %d samples 0 task 0 result %s\n", getmypid(), handle()));
});
// Written once the server runs (its signal handling set up): a SIGTERM that came before
// start() would end the script there, without the CPU figures.
$server->on('start', function ($server) use ($port_file) {
    file_put_contents("$port_file.tmp", $server->port);
    rename("$port_file.tmp", $port_file);
});
$server->start();
file_put_contents($out, sprintf("%d\n", cpu_us(0) + cpu_us(-1)));
