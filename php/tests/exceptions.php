<?php
// Throws known numbers of exceptions of known classes from known functions, for
// ci/test-php.sh's exception check. Prints "truth FUNCTION CLASS COUNT" per thrower.
//
// Usage: php exceptions.php SCALE   (throw counts are multiplied by SCALE)

class CartFull extends RuntimeException {}

function add_to_cart(int $n): int {
    for ($i = 0; $i < $n; $i++) {
        try {
            throw new CartFull("full");
        } catch (CartFull $e) {
        }
    }
    return $n;
}

// Internal functions throw too: intdiv by zero is a DivisionByZeroError from the engine.
function divide(int $n): int {
    for ($i = 0; $i < $n; $i++) {
        try {
            intdiv(1, 0);
        } catch (DivisionByZeroError $e) {
        }
    }
    return $n;
}

$scale = (int)($argv[1] ?? 1);
echo "truth add_to_cart CartFull ", add_to_cart(300 * $scale), "\n";
echo "truth divide DivisionByZeroError ", divide(200 * $scale), "\n";
// Some CPU so the process also takes timer samples.
$x = 0;
for ($i = 0; $i < 2000000; $i++) { $x += $i % 7; }
$s = forkprof_stats();
echo "stats exception_samples ", $s['exception_samples'], " record_errors ", $s['record_errors'],
    " hook ", $s['exception_hook_installed'], "\n";
