<?php
// A stack deeper than forkprof.max_depth: the profile keeps the leaf-most frames and one
// "[N frames omitted]" frame. Closures and methods are named Class::method / {closure:LINE}.
class Deep {
    public function down(int $n) { return $n === 0 ? self::leaf() : $this->down($n - 1); }
    public static function leaf() {
        $f = function () { $x = 0; for ($i = 0; $i < 6000000; $i++) { $x += $i & 5; } return $x; };
        return $f();
    }
}
(new Deep)->down(300);
