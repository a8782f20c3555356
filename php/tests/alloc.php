<?php
// Allocates known sizes from known functions, for ci/test-php.sh's allocation check. Each
// str_repeat() makes one string of LEN bytes: one emalloc of the engine's string header (24
// bytes on 64-bit) + LEN + 1, rounded up to 8, and freed at the next iteration. Prints each
// function's true total in bytes: "truth FUNCTION BYTES".
//
// Usage: php alloc.php MEGABYTES   (each function allocates about that much)

function zstr_size(int $len): int { return (24 + $len + 1 + 7) & ~7; }

// Many small allocations: each far below the sampling distance.
function small_strings(int $bytes): int {
    $n = intdiv($bytes, zstr_size(1000));
    for ($i = 0; $i < $n; $i++) {
        $s = str_repeat('a', 1000);
    }
    return $n * zstr_size(1000);
}

// Fewer, larger ones: 3x as many bytes each call as small_strings, a tenth of the calls.
function medium_strings(int $bytes): int {
    $n = intdiv($bytes, zstr_size(30000));
    for ($i = 0; $i < $n; $i++) {
        $s = str_repeat('b', 30000);
    }
    return $n * zstr_size(30000);
}

// Allocations larger than the distance the test sets: sampled (almost) every time.
function large_strings(int $bytes): int {
    $n = intdiv($bytes, zstr_size(1 << 20));
    for ($i = 0; $i < $n; $i++) {
        $s = str_repeat('c', 1 << 20);
    }
    return $n * zstr_size(1 << 20);
}

$bytes = (int)($argv[1] ?? 100) << 20;
foreach (['small_strings', 'medium_strings', 'large_strings'] as $f) {
    echo "truth $f ", $f($bytes), "\n";
}
$s = forkprof_stats();
echo "stats alloc_hooks_installed ", $s["alloc_hooks_installed"], " alloc_samples ", $s["alloc_samples"], " samples_dropped ", $s["samples_dropped"],
    " record_errors ", $s['record_errors'], "\n";
