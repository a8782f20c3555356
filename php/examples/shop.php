<?php
// The README's example: a little "shop" that renders pages, hashes, waits on a slow backend,
// and forks a worker with pcntl_fork. Run it with the extension loaded:
//   php -d extension=target/release/libforkprof_php.so -d forkprof.output_dir=profiles php/examples/shop.php
namespace Shop;

final class Catalog {
    /** @return list<array{sku: string, price: float}> */
    public function products(int $n): array {
        $out = [];
        for ($i = 0; $i < $n; $i++) {
            $out[] = ['sku' => sprintf('SKU-%06d', $i), 'price' => ($i * 37 % 1000) / 10];
        }
        return $out;
    }
}

final class Renderer {
    public function page(array $products): string {
        $rows = array_map(fn ($p) => "<tr><td>{$p['sku']}</td><td>{$p['price']}</td></tr>", $products);
        return '<table>' . implode('', $rows) . '</table>';
    }
}

function checksum(string $html): string {
    $h = '';
    for ($i = 0; $i < 20; $i++) {
        $h = hash('sha256', $h . $html);
    }
    return $h;
}

function slow_backend(): void {
    usleep(200000); // a database, an HTTP API...
}

function handle_request(Catalog $c, Renderer $r): string {
    $html = $r->page($c->products(20000));
    slow_backend();
    return checksum($html);
}

$catalog = new Catalog();
$renderer = new Renderer();
$pid = pcntl_fork();
for ($i = 0; $i < 5; $i++) {
    handle_request($catalog, $renderer);
}
if ($pid === 0) {
    exit(0); // the worker writes its own profile, tagged with its own pid
}
pcntl_waitpid($pid, $status);
printf("master %d and worker %d done: %s\n", getmypid(), $pid, json_encode(\forkprof_stats()['samples']));
