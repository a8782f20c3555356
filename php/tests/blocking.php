<?php
// Internal functions that block are sampled while they block: usleep, and file_get_contents
// on a server that never answers (its own 0.3 s timeout ends it). Usage: php blocking.php PORT
function sleepy() { usleep(300000); }
function fetch_stalled(int $port) {
    $ctx = stream_context_create(['http' => ['timeout' => 0.3]]);
    return @file_get_contents("http://127.0.0.1:$port/", false, $ctx);
}
function burn() { $x = 0; for ($i = 0; $i < 3000000; $i++) { $x += $i % 3; } return $x; }
burn();
sleepy();
fetch_stalled((int)$argv[1]);
$s = forkprof_stats();
printf("samples=%d in_internal=%d\n", $s['samples'], $s['samples_in_internal_functions']);
