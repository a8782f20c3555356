<?php
// A Swoole HTTP server under forkprof, for ci/test-php.sh. Swoole forks its manager, workers
// and task workers with a native fork() from C, which no pcntl_fork wrapper sees.
//
// Usage: php server.php MODE COROUTINE DIR
//   MODE       process (SWOOLE_PROCESS) or base (SWOOLE_BASE)
//   COROUTINE  0 or 1 (enable_coroutine; with 1 each request also yields in Co::sleep)
//   DIR        where to write: port (the port it listens on, once bound), tasks.log (one
//              "task PID samples N ticks N ..." line per task run, from forkprof_stats()),
//              swoole.log (Swoole's own log)
//
// What runs where, so that each process's profile can be checked for its own functions:
//   master        master_before_start(), before $server->start()
//   worker PID    served_by_PID() (defined at the worker's start), calling handle_request()
//   task worker   task_by_PID(), calling handle_task()
// Every 4th request hands a task to a task worker with $server->task().

[$mode, $coroutine, $dir] = [$argv[1], $argv[2] === '1', $argv[3]];

function spin(float $seconds): int {
    $end = microtime(true) + $seconds;
    $x = 0;
    do {
        for ($i = 0; $i < 500; $i++) {
            $x = ($x + $i * 13) % 1000003;
        }
    } while (microtime(true) < $end);
    return $x;
}

function master_before_start(): int { return spin(0.3); }

// A request, all of it inside served_by_PID (a function defined at the worker's start, named
// after its pid): CPU work, with coroutines a yield in the middle while other requests of the
// same worker run, a task handed out every 4th request, the answer with this process's
// forkprof_stats(). The request callback calls served_by_PID before any other call, so a
// sample that came due while the worker waited for the request (taken at the first interrupt
// check) lands in it too: every sample of a request holds served_by_PID.
function handle_request(Swoole\Server $server, Swoole\Http\Response $resp, bool $coroutine): void {
    static $served = 0;
    $served++;
    $x = spin(0.002);
    if ($coroutine) {
        Swoole\Coroutine::sleep(0.002);
        $x += spin(0.002);
    }
    $task = $served % 4 === 0;
    if ($task) {
        $server->task('work');
    }
    $s = forkprof_stats();
    $resp->end(sprintf("pid %d samples %d task %d record_errors %d disabled %d tick_thread_starts %d ticks %d tick_wakeups %d\n",
        getmypid(), $s['samples'], $task, $s['record_errors'], $s['disabled'] ?? -1, $s['tick_thread_starts'],
        $s['ticks'], $s['tick_wakeups']));
}

function handle_task(string $dir): void {
    spin(0.004);
    $s = forkprof_stats();
    file_put_contents("$dir/tasks.log", sprintf("task %d samples %d ticks %d tick_thread_starts %d tick_wakeups %d\n",
        getmypid(), $s['samples'], $s['ticks'], $s['tick_thread_starts'], $s['tick_wakeups']), FILE_APPEND);
}

master_before_start();

$server = new Swoole\Http\Server('127.0.0.1', 0, $mode === 'base' ? SWOOLE_BASE : SWOOLE_PROCESS);
$server->set([
    'worker_num' => 4,
    'task_worker_num' => 2,
    // Low enough that every worker is replaced several times during the run.
    'max_request' => 40,
    'task_max_request' => 20,
    'enable_coroutine' => $coroutine,
    'task_enable_coroutine' => false,
    'log_file' => "$dir/swoole.log",
    'log_level' => SWOOLE_LOG_INFO,
    // A worker that does not stop within this after SIGTERM is killed: the bound on a stop.
    'max_wait_time' => 5,
]);

$server->on('workerStart', function (Swoole\Server $server, int $id) {
    $pid = getmypid();
    if ($server->taskworker) {
        eval("function task_by_$pid(string \$dir): void { handle_task(\$dir); }");
        $GLOBALS['handler'] = "task_by_$pid";
    } else {
        eval("function served_by_$pid(Swoole\\Server \$server, Swoole\\Http\\Response \$resp, bool \$co): void { handle_request(\$server, \$resp, \$co); }");
        $GLOBALS['handler'] = "served_by_$pid";
    }
});

$server->on('request', function (Swoole\Http\Request $req, Swoole\Http\Response $resp) use ($server, $coroutine) {
    $handler = $GLOBALS['handler'];
    $handler($server, $resp, $coroutine);
});

$server->on('task', function (Swoole\Server $server, int $task_id, int $src_worker, $data) use ($dir) {
    $handler = $GLOBALS['handler'];
    $handler($dir);
    return null;
});

file_put_contents("$dir/port.tmp", $server->port);
rename("$dir/port.tmp", "$dir/port");
$server->start();
$s = forkprof_stats();
file_put_contents("$dir/master.out", sprintf("master %d samples %d\n", getmypid(), $s['samples']));
