// goopen: many goroutines open redirected files while others keep every P busy.
//
//	goopen SRCDIR WORKERS OPENS BUSY
//
// Worker i reads SRCDIR/w<i % 16> OPENS/WORKERS times; under the test's
// policy SRCDIR/** is redirected to a tree where that file holds "w<i % 16>\n".
// BUSY goroutines spin (and allocate) meanwhile, so the Go scheduler
// preempts goroutines with SIGURG while they are inside trapped opens: the
// classic way a supervisor double-serves or fails a call. Prints one line:
// "opens=N failures=F wrong=W secs=S" and exits 0.
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	dir := os.Args[1]
	workers, _ := strconv.Atoi(os.Args[2])
	opens, _ := strconv.Atoi(os.Args[3])
	busy, _ := strconv.Atoi(os.Args[4])

	var stop atomic.Bool
	var spin sync.WaitGroup
	for b := 0; b < busy; b++ {
		spin.Add(1)
		go func(b int) {
			defer spin.Done()
			x := uint64(b)
			var keep [][]byte
			for !stop.Load() {
				for i := 0; i < 1000; i++ {
					x = x*6364136223846793005 + 1442695040888963407
				}
				keep = append(keep, make([]byte, 64))
				if len(keep) > 1024 {
					keep = nil
				}
			}
			_ = x
		}(b)
	}

	var failures, wrong, done atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		n := opens / workers
		if w < opens%workers {
			n++
		}
		wg.Add(1)
		go func(w, n int) {
			defer wg.Done()
			name := fmt.Sprintf("w%d", w%16)
			path := dir + "/" + name
			want := name + "\n"
			for i := 0; i < n; i++ {
				data, err := os.ReadFile(path)
				done.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else if string(data) != want {
					wrong.Add(1)
					firstErr.CompareAndSwap(nil, "got "+strconv.Quote(string(data)))
				}
			}
		}(w, n)
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	stop.Store(true)
	spin.Wait()
	fmt.Printf("opens=%d failures=%d wrong=%d secs=%.2f\n", done.Load(), failures.Load(),
		wrong.Load(), secs)
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "first problem: %v\n", e)
	}
}
