<?php
// Included by include.php: spins at top level, outside any function.
$x = 0;
for ($i = 0; $i < 8000000; $i++) {
    $x = ($x + $i) & 0xffff;
}
