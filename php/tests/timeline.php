<?php
// Garbage collection (induced and automatic) and file compilations, for ci/test-php.sh's
// timeline check. Prints "stats ..." with the extension's event counters and the engine's own
// GC run count.

// Cycles: each Node points to itself, so only the cycle collector frees them.
class Node { public $self; public $pad; }
function make_garbage(int $n): void {
    for ($i = 0; $i < $n; $i++) {
        $o = new Node();
        $o->self = $o;
        $o->pad = str_repeat('x', 100);
    }
}

// Enough roots to fill the collector's buffer (10000) many times: automatic runs.
make_garbage(200000);
$auto = gc_status()['runs'];
// Three induced runs.
for ($i = 0; $i < 3; $i++) {
    make_garbage(100);
    gc_collect_cycles();
}
// Two files compiled at run time (opcache is not loaded here: -n).
$dir = sys_get_temp_dir() . '/forkprof-timeline-' . getmypid();
@mkdir($dir);
foreach (['one', 'two'] as $name) {
    file_put_contents("$dir/$name.php", "<?php return '$name';\n");
    include "$dir/$name.php";
    unlink("$dir/$name.php");
}
rmdir($dir);
$x = 0;
for ($i = 0; $i < 2000000; $i++) { $x += $i % 7; }
$s = forkprof_stats();
echo "stats gc_runs ", gc_status()['runs'], " automatic ", $auto, " timeline_gc_runs ", $s['timeline_gc_runs'],
    " timeline_compilations ", $s['timeline_compilations'], " record_errors ", $s['record_errors'],
    " hooks ", $s['timeline_hooks_installed'], "\n";
