// The load for ci/test-php.sh's Swoole case: N GET requests, C at a time, each on a new
// connection (a worker recycled at its max_request closes the ones it holds). Half-way, once
// every request of the first half is answered, it runs HOOK (ci/test-php.sh's reload) and
// waits for it, then sends the second half.
//
// Prints one line per worker pid that answered: "pid PID REQUESTS MAX_SAMPLES last: ..." (the
// most samples that worker's forkprof_stats() reported in an answer, and its last answer's
// counters), then "requests N tasks T elapsed_ms MS". Exits 1 if a request or the hook fails.
//
// Usage: client URL N C [HOOK]. HOOK runs with sh -c, with TASKS_DISPATCHED set to the number
// of tasks the answers so far say were handed to task workers.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type stat struct {
	requests, maxSamples int
	last                 string
}

type load struct {
	client *http.Client
	url    string
	mu     sync.Mutex
	perPid map[int]*stat
	done   atomic.Int64
	tasks  atomic.Int64
	failed atomic.Int64
}

func (l *load) one() {
	resp, err := l.client.Get(l.url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "request failed:", err)
		l.failed.Add(1)
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		fmt.Fprintf(os.Stderr, "bad answer: status %d, %v\n", resp.StatusCode, err)
		l.failed.Add(1)
		return
	}
	var pid, samples, task int
	if _, err := fmt.Sscanf(string(body), "pid %d samples %d task %d", &pid, &samples, &task); err != nil {
		fmt.Fprintf(os.Stderr, "bad answer %q: %v\n", body, err)
		l.failed.Add(1)
		return
	}
	l.tasks.Add(int64(task))
	l.mu.Lock()
	s := l.perPid[pid]
	if s == nil {
		s = &stat{}
		l.perPid[pid] = s
	}
	s.requests++
	if samples > s.maxSamples {
		s.maxSamples = samples
	}
	// What the worker said last, for a failure's message.
	if i := strings.Index(string(body), "samples"); i >= 0 {
		s.last = strings.TrimSpace(string(body[i:]))
	}
	l.mu.Unlock()
	l.done.Add(1)
}

// run sends n requests, c at a time, and returns once all are answered or failed.
func (l *load) run(n, c int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				l.one()
			}
		}()
	}
	wg.Wait()
}

func main() {
	if len(os.Args) != 4 && len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: client URL N C [HOOK]")
		os.Exit(2)
	}
	n, err1 := strconv.Atoi(os.Args[2])
	c, err2 := strconv.Atoi(os.Args[3])
	if err1 != nil || err2 != nil || n < 1 || c < 1 {
		fmt.Fprintln(os.Stderr, "usage: client URL N C [HOOK]: N and C are positive numbers")
		os.Exit(2)
	}
	l := &load{
		client: &http.Client{
			Timeout:   20 * time.Second,
			Transport: &http.Transport{DisableKeepAlives: true},
		},
		url:    os.Args[1],
		perPid: map[int]*stat{},
	}
	start := time.Now()
	first := n
	if len(os.Args) == 5 {
		first = n / 2
	}
	l.run(first, c)
	if len(os.Args) == 5 {
		hook := exec.Command("sh", "-c", os.Args[4])
		hook.Env = append(os.Environ(), fmt.Sprintf("TASKS_DISPATCHED=%d", l.tasks.Load()))
		hook.Stdout = os.Stderr
		hook.Stderr = os.Stderr
		if err := hook.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "the half-way hook failed:", err)
			l.failed.Add(1)
		}
		l.run(n-first, c)
	}
	elapsed := time.Since(start)
	pids := make([]int, 0, len(l.perPid))
	for p := range l.perPid {
		pids = append(pids, p)
	}
	sort.Ints(pids)
	for _, p := range pids {
		s := l.perPid[p]
		fmt.Printf("pid %d %d %d last: %s\n", p, s.requests, s.maxSamples, s.last)
	}
	fmt.Printf("requests %d tasks %d elapsed_ms %d\n", l.done.Load(), l.tasks.Load(), elapsed.Milliseconds())
	if l.failed.Load() != 0 {
		fmt.Fprintf(os.Stderr, "%d of %d requests failed\n", l.failed.Load(), n)
		os.Exit(1)
	}
}
