<?php
// A loopback TCP server that accepts every connection and never answers: a hung Datadog agent.
// Usage: php -n stalled_server.php PORT_FILE LIFETIME_SECONDS
// Writes the port it listens on to PORT_FILE, then serves until LIFETIME_SECONDS have passed.
$server = stream_socket_server("tcp://127.0.0.1:0", $errno, $errstr);
if ($server === false) {
    fwrite(STDERR, "stalled_server: cannot listen: $errstr\n");
    exit(1);
}
$name = stream_socket_get_name($server, false);
file_put_contents($argv[1] . ".tmp", substr($name, strrpos($name, ":") + 1));
rename($argv[1] . ".tmp", $argv[1]);
$end = microtime(true) + (float)$argv[2];
$held = [];
while (microtime(true) < $end) {
    $r = [$server];
    $w = $e = null;
    if (@stream_select($r, $w, $e, 0, 200000) > 0) {
        $c = @stream_socket_accept($server, 0);
        if ($c !== false) {
            $held[] = $c; // kept open, never read, never answered
        }
    }
}
