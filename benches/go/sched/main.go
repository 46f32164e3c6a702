// Go reference programs for the scheduler workloads of BENCHMARKS.md. Written for this
// project from the workload descriptions. Each prints "name ns/op value" lines (or RSS
// figures for parked), the median of several repetitions.
//
//	go run . spawn-join | ping-pong | yield | select-many | parked [N]
//
// GOMAXPROCS is taken from the environment (the runner sets it).
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const reps = 7

func median(f func() float64) float64 {
	var xs []float64
	for i := 0; i < reps; i++ {
		xs = append(xs, f())
	}
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

// spawnJoin: spawn 1,000,000 empty goroutines in batches of 1000 and wait for each batch.
func spawnJoin() float64 {
	const total, batch = 1000000, 1000
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < total/batch; i++ {
		wg.Add(batch)
		for j := 0; j < batch; j++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
	}
	return float64(time.Since(start).Nanoseconds()) / total
}

// pingPong: round trips over two unbuffered channels.
func pingPong() float64 {
	const n = 200000
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
	}()
	start := time.Now()
	v := 0
	for i := 0; i < n; i++ {
		ping <- v
		v = <-pong
	}
	el := time.Since(start)
	close(ping)
	return float64(el.Nanoseconds()) / n
}

// yieldSwitch: two goroutines on one P yield to each other: ns per switch.
func yieldSwitch() float64 {
	const n = 1000000
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	var wg sync.WaitGroup
	wg.Add(2)
	start := time.Now()
	for k := 0; k < 2; k++ {
		go func() {
			for i := 0; i < n; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	return float64(time.Since(start).Nanoseconds()) / (2 * n)
}

// selectMany (issue #14): selectWorkers goroutines each loop in a select over the same
// selectArms unbuffered channels plus a 100 ms timeout; one producer sends selectMsgs values
// round-robin and then says it is done, and each worker leaves at its next timeout after
// that. ns per message, from the first spawn to the last worker's exit, so the figure holds
// one 100 ms wave of timeouts in which every worker leaves all its channels' queues at
// once; every queue holds up to selectWorkers waiters.
const selectWorkers, selectArms, selectMsgs = 2000, 31, 9300

func selectMany() float64 {
	var c [selectArms]chan int
	for i := range c {
		c[i] = make(chan int)
	}
	var got int64
	var done int32
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(selectWorkers)
	for w := 0; w < selectWorkers; w++ {
		go func() {
			defer wg.Done()
			take := func(_ int, ok bool) {
				if !ok {
					panic("select-many: a channel closed")
				}
				atomic.AddInt64(&got, 1)
			}
			for {
				select {
				case v, ok := <-c[0]:
					take(v, ok)
				case v, ok := <-c[1]:
					take(v, ok)
				case v, ok := <-c[2]:
					take(v, ok)
				case v, ok := <-c[3]:
					take(v, ok)
				case v, ok := <-c[4]:
					take(v, ok)
				case v, ok := <-c[5]:
					take(v, ok)
				case v, ok := <-c[6]:
					take(v, ok)
				case v, ok := <-c[7]:
					take(v, ok)
				case v, ok := <-c[8]:
					take(v, ok)
				case v, ok := <-c[9]:
					take(v, ok)
				case v, ok := <-c[10]:
					take(v, ok)
				case v, ok := <-c[11]:
					take(v, ok)
				case v, ok := <-c[12]:
					take(v, ok)
				case v, ok := <-c[13]:
					take(v, ok)
				case v, ok := <-c[14]:
					take(v, ok)
				case v, ok := <-c[15]:
					take(v, ok)
				case v, ok := <-c[16]:
					take(v, ok)
				case v, ok := <-c[17]:
					take(v, ok)
				case v, ok := <-c[18]:
					take(v, ok)
				case v, ok := <-c[19]:
					take(v, ok)
				case v, ok := <-c[20]:
					take(v, ok)
				case v, ok := <-c[21]:
					take(v, ok)
				case v, ok := <-c[22]:
					take(v, ok)
				case v, ok := <-c[23]:
					take(v, ok)
				case v, ok := <-c[24]:
					take(v, ok)
				case v, ok := <-c[25]:
					take(v, ok)
				case v, ok := <-c[26]:
					take(v, ok)
				case v, ok := <-c[27]:
					take(v, ok)
				case v, ok := <-c[28]:
					take(v, ok)
				case v, ok := <-c[29]:
					take(v, ok)
				case v, ok := <-c[30]:
					take(v, ok)
				case <-time.After(100 * time.Millisecond):
					if atomic.LoadInt32(&done) == 1 {
						return
					}
				}
			}
		}()
	}
	for i := 0; i < selectMsgs; i++ {
		c[i%selectArms] <- i
	}
	atomic.StoreInt32(&done, 1)
	wg.Wait()
	el := time.Since(start)
	if got != selectMsgs {
		panic(fmt.Sprintf("select-many: %d of %d messages received", got, selectMsgs))
	}
	return float64(el.Nanoseconds()) / selectMsgs
}

func rssKiB() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return 0
}

func vmas() int {
	b, _ := os.ReadFile("/proc/self/maps")
	return strings.Count(string(b), "\n")
}

// parked: n goroutines blocked receiving on one channel.
func parked(n int) {
	runtime.GC()
	before, vBefore := rssKiB(), vmas()
	ch := make(chan struct{})
	var started sync.WaitGroup
	started.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			started.Done()
			<-ch
		}()
	}
	started.Wait()
	for runtime.NumGoroutine() < n {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	after, vAfter := rssKiB(), vmas()
	fmt.Printf("parked %d rss_per_g_bytes %d vmas %d->%d\n", n, (after-before)*1024/n, vBefore, vAfter)
	close(ch)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sched spawn-join|ping-pong|yield|select-many|parked [N]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "spawn-join":
		fmt.Printf("spawn-join ns/op %.1f\n", median(spawnJoin))
	case "ping-pong":
		fmt.Printf("ping-pong-%dp ns/op %.1f\n", runtime.GOMAXPROCS(0), median(pingPong))
	case "yield":
		fmt.Printf("yield ns/op %.1f\n", median(yieldSwitch))
	case "select-many":
		fmt.Printf("select-many ns/op %.1f\n", median(selectMany))
	case "parked":
		n := 1000000
		if len(os.Args) > 2 {
			n, _ = strconv.Atoi(os.Args[2])
		}
		parked(n)
	default:
		fmt.Fprintln(os.Stderr, "unknown workload", os.Args[1])
		os.Exit(2)
	}
}
