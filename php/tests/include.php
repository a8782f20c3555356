<?php
// Nameless top-level code: this file is {main}; the file it includes runs as {include}.
require __DIR__ . '/included.php';
