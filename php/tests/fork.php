<?php
// pcntl_fork under forkprof: the parent and every child keep profiling, each into its own
// files with only its own samples. Child 0 forks a grandchild after its work; child 1 forks
// right at its start, before it has taken a sample. Prints one "role pid" line per process;
// ci/test-php.sh checks each process's profile with go tool pprof.

// Spins for $seconds, and on until a sample has been taken inside this call. What the test
// checks is which process's profile holds which function, so each process's own work must
// hold a sample whatever the machine's load: at load average 20 on 2 cores a child's tick
// thread was once not scheduled again in the child's whole 300 ms. A tick thread that never
// ticks still fails, after 20 s, with a message.
function spin(float $seconds): int {
    $start = microtime(true);
    $before = forkprof_stats()['samples'];
    $x = 0;
    while (true) {
        for ($i = 0; $i < 2000; $i++) {
            $x = ($x + $i * 7) % 1000003;
        }
        $now = microtime(true);
        if ($now - $start >= $seconds && forkprof_stats()['samples'] > $before) {
            return $x;
        }
        if ($now - $start >= 20) {
            fwrite(STDERR, getmypid() . ": no sample taken in 20 s of spinning\n");
            exit(6);
        }
    }
}

function parent_before_fork() { return spin(0.2); }
function parent_work() { return spin(0.4); }
function child_work_0() { return spin(0.3); }
function child_work_1() { return spin(0.3); }
function child_work_2() { return spin(0.3); }
function child_work_3() { return spin(0.3); }
function grandchild_work() { return spin(0.3); }
function early_grandchild_work() { return spin(0.3); }

function report(string $role): void {
    $s = forkprof_stats();
    printf("%s %d samples=%d ticks=%d tick_thread_starts=%d running=%d tick_wakeups=%d\n", $role,
        getmypid(), $s['samples'], $s['ticks'], $s['tick_thread_starts'], $s['running'],
        $s['tick_wakeups'] ?? 0);
}

// Waits for every pid in $pids, at most $seconds; a child still running then is a failure.
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

$fork_us = [];
function fork_or_die(): int {
    global $fork_us;
    $t = hrtime(true);
    $pid = pcntl_fork();
    if ($pid !== 0) {
        $fork_us[] = (hrtime(true) - $t) / 1e3;
    }
    if ($pid < 0) {
        fwrite(STDERR, "pcntl_fork failed\n");
        exit(3);
    }
    return $pid;
}

parent_before_fork();
$children = [];
for ($c = 0; $c < 4; $c++) {
    $pid = fork_or_die();
    if ($pid === 0) {
        $kids = [];
        if ($c === 1) {
            $g = fork_or_die();
            if ($g === 0) {
                early_grandchild_work();
                report("early_grandchild");
                exit(0);
            }
            $kids[] = $g;
        }
        ("child_work_$c")();
        if ($c === 0) {
            $g = fork_or_die();
            if ($g === 0) {
                grandchild_work();
                report("grandchild");
                exit(0);
            }
            $kids[] = $g;
        }
        $ok = wait_all($kids, 30);
        report("child_$c");
        exit($ok ? 0 : 4);
    }
    $children[] = $pid;
}
parent_work();
$ok = wait_all($children, 40);
report("parent");
sort($fork_us);
printf("fork_latency_us median=%.0f max=%.0f\n", $fork_us[intdiv(count($fork_us), 2)], end($fork_us));
exit($ok ? 0 : 5);
