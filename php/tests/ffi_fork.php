<?php
// fork() called through FFI, which no pcntl_fork wrapper sees: forkprof follows it through
// its atfork handlers, and every process profiles itself, into its own files, with only its
// own samples. Two levels: the parent forks two children, each of which forks a grandchild
// half-way through its work. Some run one long piece of work, some many short ones separated
// by idle time (the shape of short requests). Prints one "role pid ..." line per process, as
// fork.php does; ci/test-php.sh checks each process's profile with go tool pprof.
//
// Usage: php -d extension=ffi -d ffi.enable=1 ffi_fork.php

$libc = FFI::cdef('int fork(void);');

// Spins for $seconds; with $until_sampled, on until a sample has been taken inside this call.
// Returns whether one was. What the test checks is which process's profile holds which
// function, so each process's own work must hold a sample whatever the machine's load (at
// load average 20 a short-lived child's tick thread can go unscheduled for its whole life).
// A tick thread that never ticks still fails, after 20 s, with a message.
function spin(float $seconds, bool $until_sampled = true): bool {
    $start = microtime(true);
    $before = forkprof_stats()['samples'];
    $x = 0;
    while (true) {
        for ($i = 0; $i < 2000; $i++) {
            $x = ($x + $i * 7) % 1000003;
        }
        $now = microtime(true);
        if ($now - $start >= $seconds) {
            $sampled = forkprof_stats()['samples'] > $before;
            if ($sampled || !$until_sampled) {
                return $sampled;
            }
        }
        if ($now - $start >= 20) {
            fwrite(STDERR, getmypid() . ": no sample taken in 20 s of spinning\n");
            exit(6);
        }
    }
}

// 60 pieces of 5 ms, 3 ms of idle time apart, and more until one piece holds a sample (a
// sample taken in the idle time is usleep's, not the piece's).
function short_pieces(string $fn): void {
    $start = microtime(true);
    $sampled = false;
    for ($i = 0; $i < 60 || !$sampled; $i++) {
        $sampled = $fn(0.005) || $sampled;
        usleep(3000);
        if (microtime(true) - $start >= 20) {
            fwrite(STDERR, getmypid() . ": no sample taken in 20 s of short pieces of $fn\n");
            exit(6);
        }
    }
}

function ffi_parent_before_fork() { return spin(0.2); }
function ffi_parent_work() { return spin(0.4); }
function ffi_child_long($s) { return spin($s); }
function ffi_child_short($s) { return spin($s, false); }
function ffi_grandchild_short($s) { return spin($s, false); }
function ffi_grandchild_long($s) { return spin($s); }

function report(string $role): void {
    $s = forkprof_stats();
    printf("%s %d samples=%d ticks=%d tick_thread_starts=%d running=%d tick_wakeups=%d pcntl_forks=%d\n",
        $role, getmypid(), $s['samples'], $s['ticks'], $s['tick_thread_starts'], $s['running'],
        $s['tick_wakeups'], $s['pcntl_forks']);
}

function wait_all(array $pids, float $seconds): bool {
    $deadline = microtime(true) + $seconds;
    $ok = true;
    while ($pids && microtime(true) < $deadline) {
        foreach ($pids as $k => $pid) {
            $r = pcntl_waitpid($pid, $status, WNOHANG);
            if ($r === $pid) {
                if (!pcntl_wifexited($status) || pcntl_wexitstatus($status) !== 0) {
                    fwrite(STDERR, "process $pid exited abnormally (status $status)\n");
                    $ok = false;
                }
                unset($pids[$k]);
            }
        }
        usleep(5000);
    }
    foreach ($pids as $pid) {
        fwrite(STDERR, "process $pid did not exit within {$seconds}s\n");
        $ok = false;
    }
    return $ok;
}

function ffi_fork(): int {
    global $libc;
    $pid = $libc->fork();
    if ($pid < 0) {
        fwrite(STDERR, "fork() through FFI failed\n");
        exit(3);
    }
    return $pid;
}

ffi_parent_before_fork();
$children = [];
foreach (['long', 'short'] as $kind) {
    $pid = ffi_fork();
    if ($pid === 0) {
        // Half of the child's work, the grandchild's fork, the other half.
        $work = $kind === 'long' ? fn () => ffi_child_long(0.2) : fn () => short_pieces('ffi_child_short');
        $work();
        $g = ffi_fork();
        if ($g === 0) {
            if ($kind === 'long') {
                short_pieces('ffi_grandchild_short');
                report('grandchild_short');
            } else {
                ffi_grandchild_long(0.4);
                report('grandchild_long');
            }
            exit(0);
        }
        $work();
        $ok = wait_all([$g], 30);
        report("child_$kind");
        exit($ok ? 0 : 4);
    }
    $children[] = $pid;
}
ffi_parent_work();
$ok = wait_all($children, 40);
report('parent');
exit($ok ? 0 : 5);
