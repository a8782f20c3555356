// The load for ci/test-php.sh's Swoole case: N GET requests, C at a time, each on a new
// connection (a worker recycled at its max_request closes the ones it holds), and SIGUSR1 to
// the server's master (a reload of every worker) once half of them are answered.
//
// Prints one line per worker pid that answered: "pid PID REQUESTS MAX_SAMPLES" (the most
// samples that worker's forkprof_stats() reported in an answer), then "requests N reload_at
// K". Exits 1 if a request fails: a server that is reloading or recycling workers must still
// answer every request.
//
// Usage: go run client.go URL N C MASTER_PID
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: client URL N C MASTER_PID")
		os.Exit(2)
	}
	url := os.Args[1]
	n, _ := strconv.Atoi(os.Args[2])
	c, _ := strconv.Atoi(os.Args[3])
	master, _ := strconv.Atoi(os.Args[4])
	client := &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	type stat struct{ requests, maxSamples int }
	var (
		mu       sync.Mutex
		perPid   = map[int]*stat{}
		next     atomic.Int64
		done     atomic.Int64
		failed   atomic.Int64
		reloadAt atomic.Int64
		wg       sync.WaitGroup
	)
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				resp, err := client.Get(url)
				if err != nil {
					fmt.Fprintln(os.Stderr, "request failed:", err)
					failed.Add(1)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				var pid, samples int
				if err != nil || resp.StatusCode != 200 {
					fmt.Fprintf(os.Stderr, "bad answer: status %d, %v\n", resp.StatusCode, err)
					failed.Add(1)
					continue
				}
				if _, err := fmt.Sscanf(string(body), "pid %d samples %d", &pid, &samples); err != nil {
					fmt.Fprintf(os.Stderr, "bad answer %q: %v\n", body, err)
					failed.Add(1)
					continue
				}
				mu.Lock()
				s := perPid[pid]
				if s == nil {
					s = &stat{}
					perPid[pid] = s
				}
				s.requests++
				if samples > s.maxSamples {
					s.maxSamples = samples
				}
				mu.Unlock()
				if d := done.Add(1); d == int64(n/2) {
					reloadAt.Store(d)
					if err := syscall.Kill(master, syscall.SIGUSR1); err != nil {
						fmt.Fprintln(os.Stderr, "SIGUSR1 to the master:", err)
						failed.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	pids := make([]int, 0, len(perPid))
	for p := range perPid {
		pids = append(pids, p)
	}
	sort.Ints(pids)
	for _, p := range pids {
		fmt.Printf("pid %d %d %d\n", p, perPid[p].requests, perPid[p].maxSamples)
	}
	fmt.Printf("requests %d reload_at %d\n", done.Load(), reloadAt.Load())
	if failed.Load() != 0 {
		fmt.Fprintf(os.Stderr, "%d of %d requests failed\n", failed.Load(), n)
		os.Exit(1)
	}
}
