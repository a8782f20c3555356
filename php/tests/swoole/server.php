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
//   worker PID    served_by_PID() (defined at the worker's start), under handle_request()
//   task worker   task_by_PID(), under handle_task()
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

// The request's own frames: the worker's function, then, with coroutines, a yield in the
// middle of the request while other requests of the same worker run.
function handle_request(bool $coroutine): int {
    $pid = getmypid();
    $x = ("served_by_$pid")();
    if ($coroutine) {
        Swoole\Coroutine::sleep(0.002);
        $x += ("served_by_$pid")();
    }
    return $x;
}

function handle_task(): int {
    $pid = getmypid();
    return ("task_by_$pid")();
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
        eval("function task_by_$pid(): int { return spin(0.004); }");
    } else {
        eval("function served_by_$pid(): int { return spin(0.002); }");
    }
});

$server->on('request', function (Swoole\Http\Request $req, Swoole\Http\Response $resp) use ($server, $coroutine) {
    static $served = 0;
    $served++;
    handle_request($coroutine);
    $task = $served % 4 === 0;
    if ($task) {
        $server->task('work');
    }
    $s = forkprof_stats();
    $resp->end(sprintf("pid %d samples %d task %d record_errors %d disabled %d tick_thread_starts %d ticks %d tick_wakeups %d\n",
        getmypid(), $s['samples'], $task, $s['record_errors'], $s['disabled'] ?? -1, $s['tick_thread_starts'],
        $s['ticks'], $s['tick_wakeups']));
});

$server->on('task', function (Swoole\Server $server, int $task_id, int $src_worker, $data) use ($dir) {
    handle_task();
    $s = forkprof_stats();
    file_put_contents("$dir/tasks.log", sprintf("task %d samples %d ticks %d tick_thread_starts %d tick_wakeups %d\n",
        getmypid(), $s['samples'], $s['ticks'], $s['tick_thread_starts'], $s['tick_wakeups']), FILE_APPEND);
    return null;
});

file_put_contents("$dir/port.tmp", $server->port);
rename("$dir/port.tmp", "$dir/port");
$server->start();
$s = forkprof_stats();
file_put_contents("$dir/master.out", sprintf("master %d samples %d\n", getmypid(), $s['samples']));
