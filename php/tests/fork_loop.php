<?php
// Forks $argv[1] children one after another while the parent keeps sampling; each child
// works a few milliseconds and exits. A child stuck in the profiler's restart or stop shows
// up as a child that does not exit within the deadline. Prints "forks N ok M hung H".
function work(float $seconds): int {
    $end = microtime(true) + $seconds;
    $x = 0;
    do { for ($i = 0; $i < 1000; $i++) { $x = ($x + $i) & 0xffff; } } while (microtime(true) < $end);
    return $x;
}
$n = (int)$argv[1];
$ok = 0;
$hung = 0;
for ($k = 0; $k < $n; $k++) {
    work(0.002);
    $pid = pcntl_fork();
    if ($pid === 0) {
        work(0.005);
        exit(0);
    }
    $deadline = microtime(true) + 10;
    while (true) {
        $r = pcntl_waitpid($pid, $status, WNOHANG);
        if ($r === $pid) {
            if (pcntl_wifexited($status) && pcntl_wexitstatus($status) === 0) { $ok++; }
            break;
        }
        if (microtime(true) > $deadline) {
            fwrite(STDERR, "child $pid did not exit within 10 s\n");
            posix_kill($pid, SIGKILL);
            pcntl_waitpid($pid, $status);
            $hung++;
            break;
        }
        usleep(1000);
    }
}
printf("forks %d ok %d hung %d\n", $n, $ok, $hung);
exit($hung === 0 && $ok === $n ? 0 : 1);
